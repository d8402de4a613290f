// Configuration of one partition log.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

namespace keel::engine {

// When appended bytes are made durable with fdatasync. Under every_append a rolled segment is
// synced before the next segment receives a byte; under the others its sync waits for the next
// durable claim (log.h), and recovery cuts the log after a rolled segment that a crash left
// incomplete. Either way no acknowledged-durable batch is ever behind an unsynced segment.
struct flush_policy {
  enum class mode {
    every_append,    // each group of appends written together is followed by an fdatasync
    every_bytes,     // sync once at least `bytes` were written since the last sync
    every_interval,  // sync when `interval_ms` passed since the last sync (checked by tick())
    never,           // only on flush and close; durability comes from replication
  };
  mode kind = mode::every_append;
  uint64_t bytes = 0;
  int64_t interval_ms = 0;

  static flush_policy every_append() { return {}; }
  static flush_policy every_n_bytes(uint64_t n) { return {mode::every_bytes, n, 0}; }
  static flush_policy every_ms(int64_t ms) { return {mode::every_interval, 0, ms}; }
  static flush_policy none() { return {mode::never, 0, 0}; }
};

struct log_config {
  uint64_t segment_bytes = 128ull << 20;        // roll when the next batch would pass this
  int64_t segment_ms = 7ll * 24 * 3600 * 1000;  // roll a segment this old (first append), too
  uint32_t index_interval_bytes = 4096;         // bytes between offset index entries
  uint32_t index_max_bytes = 10u << 20;         // bound on each index file's preallocation
  uint64_t preallocate_bytes = 16ull << 20;     // fallocate the active segment in these steps
  flush_policy flush;
  int64_t retention_ms = 7ll * 24 * 3600 * 1000;  // -1: keep forever
  int64_t retention_bytes = -1;                   // -1: no size bound
  unsigned write_chains_in_flight_max = 4;        // unsynced write groups in flight at once
  uint64_t staged_bytes_max = 64ull << 20;        // appends beyond this wait (backpressure)
  // Appends stage their bytes until the ring's next submit, poll or wait (io_ring.h); a chain
  // that reaches this many bytes is issued at once, so staging stays bounded between polls.
  uint64_t issue_staged_bytes = 256u << 10;
  // Durable bytes at the log's tail kept in the page cache; older durable bytes are dropped
  // from it as the log grows (cache_window.h), so writes reuse freed pages and readers near the
  // tail still read memory. 0: no bound, the kernel alone decides.
  uint64_t cached_tail_bytes = 0;
  // Milliseconds since the epoch; injectable so tests control segment_ms, retention and flush.
  std::function<int64_t()> now_ms;

  // Empty when the configuration is usable; otherwise names the bad setting.
  std::string validate() const;
};

}  // namespace keel::engine
