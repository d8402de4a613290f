// The sparse offset index of one segment (`<base>.index`) and its time index (`<base>.timeindex`).
//
// .index layout: a sequence of 8-byte entries, little-endian, no header:
//   offset size field
//        0    4 relative_offset  batch base offset minus the segment's base offset
//        4    4 position         byte position of that batch in the segment's .log file
// One entry is added for a batch when at least index_interval_bytes were appended since the
// previous entry; the segment's first batch (position 0) gets none, so every real entry has
// position > 0 and an all-zero entry marks the end. Both fields strictly increase.
//
// .timeindex layout: a sequence of 12-byte entries, little-endian, no header:
//   offset size field
//        0    8 timestamp        the largest batch max_timestamp seen up to this batch (ms)
//        8    4 relative_offset  base offset of that batch minus the segment's base offset
// An entry is added beside an offset-index entry (and at roll and close) when the segment's
// largest timestamp has grown since the last entry, so timestamps strictly increase. An
// all-zero entry marks the end (only timestamps > 0 are indexed, so a real entry is never zero).
//
// Both files are preallocated (fallocate, so a full disk fails at creation rather than as a
// SIGBUS in a store through the map) to the entries their segment can need, at most
// index_max_bytes, and memory-mapped read-write; a rolled segment's files are cut to their
// entries. They are derived data: after an unclean shutdown the active segment's indexes are
// rebuilt from its .log; a closed segment's index that fails its sanity check is rebuilt too.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "keel/engine/file_map.h"
#include "keel/engine/result.h"
#include "keel/engine/types.h"

namespace keel::engine {

// A fixed-size-entry file, mapped, with the count of its entries found by the zero terminator.
class index_file {
 public:
  // Opens or creates `path`; grows it to `capacity_bytes` when `writable`. A read-only open maps
  // exactly the file's current size.
  static result<index_file> open(const std::string& path, size_t entry_size, size_t capacity_bytes,
                                 bool writable);
  // Maps a new, zero-filled file already sized to `capacity_bytes` (segment_spare.h), writable;
  // closes `fd`.
  static result<index_file> adopt(int fd, const std::string& path, size_t entry_size,
                                  size_t capacity_bytes);

  size_t entry_size() const { return entry_size_; }
  size_t capacity() const { return capacity_; }
  size_t count() const { return count_; }
  bool full() const { return count_ == capacity_; }
  const std::byte* entry(size_t i) const { return map_->data() + i * entry_size_; }
  std::byte* mutable_entry(size_t i) { return map_->data() + i * entry_size_; }
  void push_back_count() { ++count_; }
  // Drops entries [n, count) and zeroes them, so the terminator rule holds.
  void truncate(size_t n);
  // Cuts the file to its entries (a rolled segment); the map stays valid for readers.
  status trim(const std::string& path) const;
  // The file's size once trimmed: its entries.
  uint64_t content_bytes() const { return count_ * entry_size_; }
  bool writable() const { return writable_; }
  status sync() const;

 private:
  // Maps `map_bytes` of `fd` (closing it) with no entries counted yet.
  static result<index_file> map_fd(int fd, const std::string& path, size_t entry_size,
                                   size_t map_bytes, bool writable);

  std::shared_ptr<file_map> map_;
  size_t entry_size_ = 0;
  size_t capacity_ = 0;
  size_t count_ = 0;
  bool writable_ = false;
};

class offset_index {
 public:
  struct entry {
    offset base_offset;
    uint32_t position = 0;
  };

  offset_index() = default;
  offset_index(index_file file, offset segment_base)
      : file_(std::move(file)), base_(segment_base) {}

  size_t count() const { return file_->count(); }
  bool full() const { return file_->full(); }
  entry at(size_t i) const;
  // The greatest entry whose offset is <= target, or none when target precedes every entry.
  std::optional<entry> floor(offset target) const;
  // The greatest entry whose position is <= position, or none when it precedes every entry.
  std::optional<entry> floor_position(uint64_t position) const;
  void append(offset batch_base, uint32_t position);
  // Drops every entry whose offset is >= from.
  void truncate_from(offset from);
  // True when entries increase and stay inside [0, log_bytes).
  bool sane(uint64_t log_bytes) const;
  void clear() { file_->truncate(0); }
  status trim(const std::string& path) const { return file_->trim(path); }
  uint64_t content_bytes() const { return file_ ? file_->content_bytes() : 0; }
  status sync() const { return file_->sync(); }
  bool is_open() const { return file_.has_value(); }

 private:
  std::optional<index_file> file_;
  offset base_;
};

class time_index {
 public:
  struct entry {
    timestamp_ms timestamp;
    offset base_offset;
  };

  time_index() = default;
  time_index(index_file file, offset segment_base) : file_(std::move(file)), base_(segment_base) {}

  size_t count() const { return file_->count(); }
  bool full() const { return file_->full(); }
  entry at(size_t i) const;
  std::optional<entry> last() const;
  // The greatest entry whose timestamp is < target: every batch up to its offset is older.
  std::optional<entry> floor_before(timestamp_ms target) const;
  // Appends when `timestamp` exceeds the last entry's; returns whether it did.
  bool maybe_append(timestamp_ms timestamp, offset batch_base);
  void truncate_from(offset from);
  bool sane() const;
  void clear() { file_->truncate(0); }
  status trim(const std::string& path) const { return file_->trim(path); }
  uint64_t content_bytes() const { return file_ ? file_->content_bytes() : 0; }
  status sync() const { return file_->sync(); }
  bool is_open() const { return file_.has_value(); }

 private:
  std::optional<index_file> file_;
  offset base_;
};

}  // namespace keel::engine
