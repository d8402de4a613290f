// cache_window: keeps only the newest durable bytes of one log in the page cache.
//
// A busy log writes far more than any reader rereads: without a bound the page cache grows with
// every byte written, and each write lands in a fresh page. Keeping a window of the newest
// `window_bytes` and dropping older durable bytes (their pages unmapped from the log's read map,
// then evicted with POSIX_FADV_DONTNEED) lets writes reuse the pages just freed, while readers
// near the tail still read from memory. A reader further back reads from disk through the same
// map. Only durable bytes are dropped: their pages are clean, so eviction never starts I/O.
//
// Drops go through the ring (madvise, then fadvise linked after it); each holds the segment's
// map and a descriptor of its own, so a segment sealed, truncated or deleted meanwhile stays
// safe to drop. Used by log on its shard thread only.
#pragma once

#include <cstdint>
#include <deque>
#include <memory>

#include "keel/engine/file_map.h"
#include "keel/engine/io_ring.h"
#include "keel/engine/segment.h"

namespace keel::engine {

class cache_window {
 public:
  cache_window(io_ring& ring, uint64_t window_bytes);
  ~cache_window() = default;
  cache_window(const cache_window&) = delete;
  cache_window& operator=(const cache_window&) = delete;

  // The log's bytes up to `durable_end` of its active segment `seg` are durable.
  void on_durable(const segment& seg, uint64_t durable_end);
  // `seg` was sealed with every byte durable; it leaves the window as newer bytes arrive.
  void on_sealed(const segment& seg);
  // A truncation or reset rewrote the log: forget what was tracked (nothing is dropped).
  void reset() { segments_.clear(); }
  void set_window(uint64_t bytes);

  // Drops issued so far (for tests and stats).
  uint64_t drops_issued() const { return drops_issued_; }

 private:
  struct descriptor;  // a dup of a segment's file descriptor, closed with its last holder
  struct tracked {
    const segment* seg = nullptr;  // identity only; never dereferenced after tracking starts
    offset base;
    std::shared_ptr<file_map> map;
    std::shared_ptr<descriptor> fd;
    uint64_t end = 0;      // durable end within the segment
    uint64_t dropped = 0;  // bytes [0, dropped) were dropped
    bool sealed = false;
  };
  tracked* track(const segment& seg);
  void trim();
  void drop(tracked& t, uint64_t to);

  io_ring& ring_;
  uint64_t window_;
  std::deque<tracked> segments_;  // oldest first; the active one last
  uint64_t drops_issued_ = 0;
};

}  // namespace keel::engine
