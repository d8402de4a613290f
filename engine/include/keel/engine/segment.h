// One segment of a partition log: `<base>.log` holding stored batches back to back (the format
// is in batch_format.h), `<base>.index` and `<base>.timeindex` (offset_index.h). `<base>` is the
// segment's base offset as 20 decimal digits.
//
// The active segment (the last one) takes appends: its .log is preallocated with fallocate in
// steps ahead of the writer, mapped read-only over its whole reserve, and written through the
// log's io_ring. A closed segment is immutable and its files are cut to their content; its maps
// are made on first use and may be dropped again to bound the process's maps (segment_cache).
//
// Positions inside a segment: size() is the appended end (bytes handed to the writer, some not
// written yet); written_size() the end of the bytes whose write completed. Readers never pass
// written_size().
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>

#include "keel/engine/batch_format.h"
#include "keel/engine/file_map.h"
#include "keel/engine/log_config.h"
#include "keel/engine/offset_index.h"
#include "keel/engine/result.h"

namespace keel::engine {

std::string segment_file_stem(offset base);  // "00000000000000000042"
// A segment's three files, each named by the stem and one of these.
inline constexpr std::array<const char*, 3> segment_file_extensions = {".log", ".index",
                                                                       ".timeindex"};

class segment {
 public:
  // Creates the files of a new, empty active segment (replacing leftovers of a failed creation).
  // `reserve_bytes`: room for content, at least config.segment_bytes (more for a huge batch).
  static result<std::shared_ptr<segment>> create(const std::string& dir, offset base,
                                                 const log_config& config, uint64_t reserve_bytes);
  // The files a new segment needs, made ahead under other names (segment_spare.h): the data
  // file (empty, open for writing) and both indexes (sized to index_capacities, mapped).
  struct prepared_files {
    int log_fd = -1;    // owned by the segment from adopt() on, even when it fails
    int index_fd = -1;  // sized to index_capacities().first; closed by adopt()
    int time_fd = -1;   // sized to index_capacities().second; closed by adopt()
  };
  // A new, empty active segment over prepared files; `reserve_bytes` as for create().
  static result<std::shared_ptr<segment>> adopt(const std::string& dir, offset base,
                                                const log_config& config, uint64_t reserve_bytes,
                                                prepared_files files);
  // The offset and time index sizes (bytes) a new segment preallocates for `reserve_bytes`.
  static std::pair<size_t, size_t> index_capacities(const log_config& config,
                                                    uint64_t reserve_bytes);
  // Opens an existing segment as the active one; `end` is its content's size when known (a
  // clean shutdown or a truncation), otherwise recover() must run before use.
  static result<std::shared_ptr<segment>> open_active(const std::string& dir, offset base,
                                                      const log_config& config,
                                                      std::optional<uint64_t> end);
  // Describes a closed segment whose files are mapped on first use.
  static std::shared_ptr<segment> open_closed(const std::string& dir, offset base,
                                              uint64_t size_bytes);
  ~segment();
  segment(const segment&) = delete;
  segment& operator=(const segment&) = delete;

  offset base() const { return base_; }
  // Takes appends, or was rolled and its seal (segment_seal.h) has not completed: either way its
  // files may still change size, so it is neither cached nor unmapped.
  bool active() const { return fd_ >= 0 || seal_pending_; }
  int fd() const { return fd_; }
  uint64_t size() const { return size_; }
  uint64_t written_size() const { return written_size_; }
  uint64_t reserve() const { return reserve_; }
  uint64_t allocated() const { return allocated_; }
  void set_allocated(uint64_t bytes) { allocated_ = bytes; }
  // Widens the map of an empty active segment to `bytes` for a batch larger than its reserve
  // (rolling instead would create a second segment with the same base offset).
  status grow_reserve(uint64_t bytes);
  std::string path(const char* extension) const;  // dir/<base><extension>

  // Active-segment bookkeeping for an append of `header` at position size().
  void note_append(const batch_header& header, uint32_t index_interval_bytes);
  void note_written(uint64_t end) {
    KEEL_ASSERT(end >= written_size_ && end <= size_, "written end moves forward within size");
    written_size_ = end;
  }
  int64_t first_append_ms() const { return first_append_ms_; }
  void set_first_append_ms(int64_t ms) { first_append_ms_ = ms; }
  timestamp_ms max_timestamp() const { return max_timestamp_; }
  uint64_t last_batch_position() const { return last_batch_position_; }
  void set_last_batch_position(uint64_t p) { last_batch_position_ = p; }
  // Flushes the index maps to disk (before a clean-shutdown marker vouches for them).
  status sync_indexes();
  // Adds the time index entry for the newest timestamp, if it is not there yet.
  void finish_time_index();

  // Maps a closed segment's files if they are not mapped; a no-op for the active one.
  status ensure_mapped();
  // For the closed segment before the active one after an unclean stop: if the crash came
  // between a roll and the old segment's seal, its file still ends in preallocated zeros. Walks
  // from the last index entry, and cuts the file after the last valid batch when only zeros
  // follow it (other damage is left for reads to refuse).
  status repair_unsealed_tail();
  bool mapped() const { return map_ != nullptr; }
  void unmap();  // closed segments only; readers' views keep their pages
  const std::shared_ptr<file_map>& map() const { return map_; }

  // Position of the batch that contains `target`, scanning from the index; nullopt when the
  // written part of the segment holds no such batch. Errors mean the bytes are not batches.
  result<std::optional<uint64_t>> find(offset target) const;
  struct run {
    uint64_t end = 0;  // position after the run's last batch; the run's start when it is empty
    offset last;       // the run's last offset, when it is not empty
  };
  // The longest run of whole batches from `start` (a batch boundary in the written part) that
  // ends at or before position `limit` and holds no offset past `bound`. Jumps to the offset
  // index's entry before the nearer of the two limits and walks the headers from there, so its
  // cost does not grow with the run. An error means the bytes at `start` are not a batch;
  // damage further on ends the run before it (a read from there reports it).
  result<run> run_end(uint64_t start, uint64_t limit, offset bound) const;
  // Decodes the header at `position` (inside the written part).
  result<batch_header> header_at(uint64_t position) const;

  struct scan_result {
    uint64_t end = 0;    // position after the last valid batch
    offset next_offset;  // offset after the last valid batch (base when empty)
    term_id last_term;
    uint64_t last_batch_position = 0;
    bool clean_end = true;  // stopped at zeros or the file's end, not at damage
    std::string damage;     // what stopped the scan, when not clean
  };
  // Recovery: validates every batch from position 0 (offsets continuing from the segment base,
  // terms not decreasing below `min_term`, checksums), rebuilds both indexes, and sets the
  // segment's size to the end of the last valid batch.
  result<scan_result> recover(term_id min_term, uint32_t index_interval_bytes);

  // Drops everything from `position` on (a batch boundary) in memory and in the indexes; the
  // caller zeroes the bytes on disk.
  void cut(uint64_t position, offset from);
  // Adds the final time index entry and cuts the .log and index files to their content
  // (recovery, at start-up).
  status seal();
  // The same through the ring (segment_seal.h): adds the final time index entry and hands over
  // the .log's descriptor with the size each file is to be cut to; the segment is closed from
  // here on, its map and indexes serving reads as before.
  struct seal_cuts {
    int log_fd = -1;
    uint64_t log_bytes = 0, index_bytes = 0, time_index_bytes = 0;
  };
  seal_cuts begin_seal();
  void end_seal() { seal_pending_ = false; }
  status remove_files();
  std::optional<time_index::entry> last_time_entry() const;
  // The greatest entry of the time index before `target` (for lookups by time).
  std::optional<time_index::entry> time_floor(timestamp_ms target) const;

 private:
  segment(std::string dir, offset base);
  status map_indexes(bool writable, const log_config* config);
  void rebuild_indexes(uint32_t index_interval_bytes, uint64_t end);
  // Whether sampled offset index entries point at batches starting at their offsets.
  bool index_points_at_batches(uint64_t end) const;

  std::string dir_;
  offset base_;
  int fd_ = -1;                    // the .log, open only while active
  bool seal_pending_ = false;      // begin_seal ran, end_seal not yet
  std::shared_ptr<file_map> map_;  // the .log, read-only
  offset_index index_;
  time_index time_index_;
  uint64_t size_ = 0;
  uint64_t written_size_ = 0;
  uint64_t reserve_ = 0;    // bytes the map covers; the segment never grows past it
  uint64_t allocated_ = 0;  // the .log file's size (fallocated ahead of size_)
  uint64_t bytes_since_index_ = 0;
  uint64_t last_batch_position_ = 0;
  int64_t first_append_ms_ = -1;
  timestamp_ms max_timestamp_ = timestamp_ms::none();
  offset max_timestamp_offset_;
};

}  // namespace keel::engine
