// log: one partition's durable, segmented log of stored batches.
//
// A log is one directory:
//   <base>.log / .index / .timeindex   one segment per base offset (segment.h)
//   log_start                          the persisted log start offset (24 bytes: u64 magic
//                                      0x5452415453474F4C "LOGSTART", i64 offset, u64 XXH3-64 of
//                                      the first 16 bytes), written on truncate_prefix
//   clean_shutdown                     present only between a clean close() and the next open
//                                      (48 bytes: u64 magic 0x4E574F4454554853 "SHUTDOWN", i64
//                                      next offset, i64 active segment base, u64 active segment
//                                      size, u64 last batch position, u64 XXH3-64 of the first
//                                      40 bytes); lets open() skip the recovery scan
//   sealed                             every segment whose batches all lie below the recorded
//                                      offset was synced and sealed (24 bytes: u64 magic
//                                      0x4F5444454C414553 "SEALEDTO", i64 offset, u64 XXH3-64 of
//                                      the first 16 bytes); rewritten in place through the ring
//                                      after each seal without a sync (it only ever names
//                                      segments already synced, so any version on disk is
//                                      true), lowered durably before a truncation or reset
//                                      removes a segment it names. After an unclean stop, open()
//                                      scans every closed segment it does not name, and cuts
//                                      the log at the first one that does not end where its
//                                      successor begins. A log without it (written before it
//                                      existed) repairs only its last closed segment's tail.
//
// Offsets. Every stored batch spans [base, last]; batches follow on without gaps. Three points
// advance in order, asserted at every update (offset::none() style values are log_start - 1):
//   appended  the last offset handed to append(); readable by no one yet
//   written   the last offset whose bytes reached the file (the page cache); readable
//   durable   the last offset covered by a completed fdatasync; survives power loss
// durable <= written <= appended.
//
// Writes. append() copies the batch into the staged buffer of the active segment and returns its
// offsets at once; it issues nothing (unless the buffer reached issue_staged_bytes) but lists
// the log with its io_ring, which lets the log issue when the thread next submits, polls or
// waits: the appends of one event-loop turn leave as one write. Staged bytes go to the kernel as
// one write chain through the thread's io_ring: [fallocate ahead] -> write -> [fdatasync],
// linked. While a chain is in flight, new appends gather in the next chain (group commit); a
// chain that syncs is issued once every earlier chain's write completed (its fdatasync then
// covers them), beside earlier chains' syncs still in flight, and at most
// write_chains_in_flight_max chains are in flight. Completions run in
// order and fire each append's callback with its offsets and whether they are durable. No
// system call on this path blocks for the disk. A roll under a flush policy other than
// every_append queues the rolled segment's sync and seal (a seal-only chain) until a durable
// claim or the next roll needs it, and writes to the new segment do not wait for it; durable
// never passes a rolled segment whose sync has not completed.
//
// Reads. read() returns whole batches straight from the segment maps, as one contiguous range
// per segment, from the batch that contains the requested offset, never past the written end
// nor past the caller's bound. The range ends are found through the sparse offset index, so a
// read costs a few binary searches and short walks, not a header decode per batch (unless it
// verifies checksums); per-batch views come lazily from batches().
// The read_result keeps the segments' maps alive across a roll, a truncation or a deletion;
// its views are valid while it lives.
//
// Threading: a log and its io_ring belong to one thread. Nothing here is synchronized.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <iterator>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "keel/engine/batch_format.h"
#include "keel/engine/io_ring.h"
#include "keel/engine/log_config.h"
#include "keel/engine/result.h"
#include "keel/engine/segment.h"

namespace keel::engine {

class segment_cache;
class cache_window;
class segment_spare;
class segment_seal;
class segment_removal;

// An allocator whose resize leaves new bytes uninitialized: staging writes every byte it adds,
// and zeroing them first costs as much as a small append's copy.
template <class T>
struct uninitialized_allocator : std::allocator<T> {
  template <class U>
  struct rebind {
    using other = uninitialized_allocator<U>;
  };
  uninitialized_allocator() = default;
  template <class U>
  uninitialized_allocator(const uninitialized_allocator<U>&) noexcept {}  // NOLINT
  template <class U>
  void construct(U* p) noexcept {
    ::new (static_cast<void*>(p)) U;
  }
  template <class U, class... Args>
  void construct(U* p, Args&&... args) {
    ::new (static_cast<void*>(p)) U(std::forward<Args>(args)...);
  }
};
using staging_buffer = std::vector<std::byte, uninitialized_allocator<std::byte>>;

// What to append: one batch spanning `offset_count` offsets.
struct batch_spec {
  uint8_t type = 0;
  term_id term;
  timestamp_ms max_timestamp = timestamp_ms::none();
  uint32_t offset_count = 1;
  std::span<const std::byte> payload;
  // Set by a Raft follower: the offset the batch must start at (it must equal next_offset()).
  std::optional<offset> base;
};

struct append_ack {
  offset base;
  offset last;
  bool durable = false;
};
// Called once per append: with its offsets once written (durable says whether an fdatasync
// covers them), or with the error that failed the log.
using append_callback = std::function<void(const result<append_ack>&)>;

// A stored batch inside a segment map: header fields plus its bytes. Valid while the
// read_result that returned it lives (the result holds the maps, once per segment, not each
// view): a view copied out of its result must not outlive the result. Copy the bytes out for
// longer.
struct batch_view {
  batch_header header;
  std::span<const std::byte> stored;  // header + payload, as on disk

  std::span<const std::byte> payload() const { return stored.subspan(batch_header_size); }
};

// Whole stored batches back to back, straight from one segment's map: what a read returns per
// segment it touched, and what a fetch can send or copy in one piece.
struct batch_range {
  std::span<const std::byte> bytes;  // the batches' stored bytes, headers included
  offset base;                       // the first batch's base offset
  offset last;                       // the last batch's last offset
};

// The batches of some ranges, one view at a time: each header is decoded when the iteration
// reaches it, so a caller that wants only the bytes pays nothing per batch. A header that does
// not decode or does not fit its range (damage in a read that skipped the checksums, or bytes a
// later truncation zeroed: iterate before changing the log) ends the iteration there.
class batch_list {
 public:
  class iterator {
   public:
    using value_type = batch_view;
    using difference_type = std::ptrdiff_t;
    using reference = const batch_view&;
    using pointer = const batch_view*;
    using iterator_category = std::input_iterator_tag;

    iterator() = default;
    const batch_view& operator*() const { return view_; }
    const batch_view* operator->() const { return &view_; }
    iterator& operator++() {
      position_ += view_.stored.size();
      load();
      return *this;
    }
    iterator operator++(int) {
      iterator before = *this;
      ++*this;
      return before;
    }
    bool operator==(const iterator& o) const {
      return range_ == o.range_ && position_ == o.position_;
    }

   private:
    friend class batch_list;
    iterator(std::span<const batch_range> ranges, size_t range) : ranges_(ranges), range_(range) {
      load();
    }
    void load();

    std::span<const batch_range> ranges_;
    size_t range_ = 0;
    uint64_t position_ = 0;  // inside ranges_[range_].bytes
    batch_view view_;
  };

  explicit batch_list(std::span<const batch_range> ranges) : ranges_(ranges) {}
  iterator begin() const { return iterator(ranges_, 0); }
  iterator end() const { return iterator(ranges_, ranges_.size()); }
  bool empty() const { return ranges_.empty(); }
  batch_view front() const { return *begin(); }
  // Walks every header: for tests and callers that need the number, not for the hot path.
  size_t count() const;

 private:
  std::span<const batch_range> ranges_;
};

struct read_result {
  // Whole batches, one range per segment touched, in offset order; together they follow on
  // without a gap from the batch holding the read's `from`.
  std::vector<batch_range> ranges;
  uint64_t bytes = 0;  // stored bytes of all batches
  offset next_offset;  // the offset after the last batch returned (the next read's start)
  // The maps the views point into: they stay mapped across a roll, a truncation, a deletion or
  // the log's own end for as long as this result lives (moving it keeps the views valid).
  std::vector<std::shared_ptr<const file_map>> keep_alive;

  // The batches one by one, for callers that need their headers.
  batch_list batches() const { return batch_list(ranges); }
};

struct read_options {
  bool verify_checksums = true;  // off for hot reads that trust the page cache
};

class log {
 public:
  // Opens the log in `dir`, creating it when absent. Runs recovery unless the clean-shutdown
  // marker is valid. Warnings (a cut tail, a rebuilt index) go to `warn`.
  static result<std::unique_ptr<log>> open(std::string dir, log_config config, io_ring& ring,
                                           segment_cache* cache = nullptr);
  ~log();
  log(const log&) = delete;
  log& operator=(const log&) = delete;

  // Assigns offsets [next_offset, next_offset + offset_count) and stages the batch. Errors:
  // log_failed after an I/O failure, invalid_argument for a bad spec or base, offsets must
  // strictly increase and terms never decrease.
  result<append_ack> append(const batch_spec& batch, append_callback done = {});
  // Forces an fdatasync of everything appended so far; `done` runs when it is durable.
  void flush(std::function<void(const status&)> done = {});
  // Time-driven work: interval flushes and segment_ms rolls.
  void tick();

  result<read_result> read(offset from, uint64_t max_bytes, offset upper_bound,
                           read_options options = {}) const;
  // The header of the batch containing `o`.
  result<batch_header> batch_at(offset o) const;
  // The base offset of the first batch whose max timestamp is >= target; nullopt when none.
  result<std::optional<offset>> offset_for_timestamp(timestamp_ms target) const;

  // Removes every batch from `from` on (a batch boundary in [log_start, next_offset]); durable
  // before it returns. Waits for this log's writes in flight through the ring. At the log start
  // the log empties (every segment goes) and last_term() becomes 0.
  status truncate_suffix(offset from);
  // Moves the log start to `new_start` and drops the whole segments below it. The file work
  // runs through the ring (segment_removal.h): the start is persisted, then the segments'
  // files deleted; a failure to persist it stops appends (failure()). A start beyond
  // next_offset empties the log, which then continues from there with last_term() 0; that
  // rare reset is durable before it returns.
  status truncate_prefix(offset new_start);
  // Where retention would move the log start: past the oldest closed segments that are past
  // retention_ms (by their newest timestamp) or beyond retention_bytes; log_start() when none.
  // An owner that keeps its own record of the log start (a Raft group) truncates through it.
  result<offset> retention_start() const;
  // Deletes those segments (truncate_prefix(retention_start())); returns the new log start.
  result<offset> apply_retention();

  // Takes `c`'s per-log settings from now on: segment size and age, retention, flush policy (a
  // log reopened with the data directory's defaults learns its topic's settings). The next roll
  // and retention use them; the rest of `c` (layout, buffers) stays as opened.
  status reconfigure(const log_config& c);

  // Syncs, seals the indexes and writes the clean-shutdown marker. The log is unusable after.
  status close();

  offset log_start() const { return log_start_; }
  offset next_offset() const { return next_offset_; }
  offset appended_offset() const { return next_offset_.prev(); }
  offset written_offset() const { return written_; }
  offset durable_offset() const { return durable_; }
  // The term of the last stored batch; 0 after a truncation or reset removed every batch (the
  // term before the log start is the Raft layer's to remember).
  term_id last_term() const { return last_term_; }
  uint64_t size_bytes() const;
  size_t segment_count() const { return segments_.size(); }
  // Rolls whose new segment's files were made ahead (segment_spare.h), not on the spot.
  uint64_t rolls_from_spare() const { return rolls_from_spare_; }
  const std::string& dir() const { return dir_; }
  const log_config& config() const { return config_; }
  // Changes config().cached_tail_bytes from now on (a Raft replica bounds its cache while it
  // follows, and lifts the bound when it leads and serves reads).
  void set_cached_tail_bytes(uint64_t bytes);
  // The error that stopped appends, if one did.
  const std::optional<error>& failure() const { return failure_; }
  uint64_t staged_bytes() const;
  // Runs after written or durable advanced (after the per-append callbacks).
  void set_progress_listener(std::function<void()> listener) { on_progress_ = std::move(listener); }

 private:
  struct chain;
  log(std::string dir, log_config config, io_ring& ring, segment_cache* cache);
  status recover();
  status roll(uint64_t reserve_bytes);
  bool sync_due(const chain& c) const;
  // Queues the chains that may go now; submits them unless the ring will (submit = false).
  void issue(bool submit = true);
  static void issue_thunk(io_ring::issuer* self);
  void issue_chain(chain& c);
  void on_chain_done(chain* c);
  // Whether the waiting seal_only chain chains_[i] must be issued now.
  bool seal_due(size_t i) const;
  struct sealed_record;
  // Records that `s` was synced and sealed (through the ring, unsynced).
  void note_sealed(const segment& s);
  void write_sealed_async();
  // Whether a segment past segment_ms may roll now (its successor's files are ready).
  bool age_roll_ready();
  // A rolled segment's files were cut (segment_seal.h), or cutting its .log failed.
  void on_segment_sealed(const std::shared_ptr<segment>& seg, int error);
  // Writes the `sealed` record in place, synced when `durable` (truncations, resets).
  status write_sealed(offset to, bool durable);
  // Scans the closed segment segments_[i] that no `sealed` record names; returns whether it
  // ends where its successor `next_base` begins (then it is synced and sealed as its roll
  // would have).
  result<bool> recover_unsealed(size_t i, offset next_base);
  std::unique_ptr<chain> new_chain();
  uint64_t chain_split_bytes() const { return 4 * config_.issue_staged_bytes; }
  void fail(error e);
  void wait_idle();
  const segment* segment_for(offset o) const;
  status ensure_mapped(const segment& s) const;
  status persist_log_start(offset start);
  // Hands the segments wholly below the log start whose seal completed to removal_; whether
  // there were any.
  bool drop_segments_below_start();
  std::vector<std::byte> encode_log_start(offset start) const;
  // Empties the log (every segment goes) and continues from `start`; last_term becomes 0.
  status reset_to(offset start);
  status sync_directory();
  void check_offsets() const;
  int64_t now() const { return config_.now_ms(); }

  std::string dir_;
  log_config config_;
  io_ring& ring_;
  struct issuer_t : io_ring::issuer {
    log* owner = nullptr;
  };
  issuer_t issuer_;  // listed with ring_ while a building chain waits to be issued
  segment_cache* cache_;
  std::unique_ptr<cache_window> cache_window_;  // when config_.cached_tail_bytes > 0
  std::unique_ptr<segment_spare> spare_;        // the next segment's files, made ahead
  uint64_t rolls_from_spare_ = 0;
  std::deque<std::shared_ptr<segment>> segments_;  // by base; the last is active
  std::deque<std::unique_ptr<chain>> chains_;      // in append order; the last may be building
  std::vector<staging_buffer> spare_buffers_;      // buffers of retired chains, for reuse
  offset log_start_{0};
  offset next_offset_{0};
  offset written_;
  offset durable_;
  term_id last_term_{0};
  uint64_t bytes_since_sync_ = 0;
  uint64_t staged_bytes_ = 0;  // in building chains
  int64_t last_sync_ms_ = 0;
  bool directory_sync_pending_ = false;
  // While set (wait_idle), waiting seals are issued at once.
  bool seals_forced_ = false;
  std::unique_ptr<sealed_record> sealed_;
  std::unique_ptr<segment_seal> seal_;
  std::unique_ptr<segment_removal> removal_;  // a prefix truncation's file work
  offset sealed_to_;                          // the value of the `sealed` record last written
  std::optional<offset> sealed_on_disk_;  // the record found at open (if valid) or written since
  bool sealed_found_ = false;             // a record file existed at open
  int directory_fd_ = -1;
  bool closed_ = false;
  std::optional<error> failure_;
  std::function<void()> on_progress_;
};

}  // namespace keel::engine
