// producer_state: one partition's idempotent producers (Kafka's producer state), the leader's
// check of each produced batch against it, and its snapshots.
//
// For each producer id: its epoch and its last five batches (first and last sequence, first and
// last offset, epoch). The state is a pure function of the log's data batches: replaying the
// batch headers in offset order rebuilds it, which is what a new leader does (from a snapshot).
//
// The rules (../shared/kafka-protocol/README.md §4), checked by the leader before it proposes:
//   - an epoch older than the producer's              -> INVALID_PRODUCER_EPOCH (47)
//   - a newer epoch: the base sequence must be 0      -> else OUT_OF_ORDER_SEQUENCE_NUMBER (45)
//   - an unknown producer: base sequence 0 accepted   -> else UNKNOWN_PRODUCER_ID (59)
//   - the same first and last sequence as one of the last five batches: a duplicate, answered
//     with that batch's offsets and not appended
//   - base sequence = last sequence + 1 (INT32_MAX wraps to 0): appended
//   - anything else                                   -> OUT_OF_ORDER_SEQUENCE_NUMBER (45)
// A batch that passed is recorded when it is proposed, not when it commits: clients keep up to
// five requests in flight per partition, so the next one must follow the proposed ones.
//
// Snapshot (little-endian, net/wire.h): u64 magic 0x54415453444F5250 ("PRODSTAT"), u32 body
// bytes n, then the body: u32 version (1), i64 next offset (the scan resumes there; only batches
// below it are in the snapshot), u32 producers, per producer i64 id, i16 epoch, u8 batches, per
// batch i32 first seq, i32 last seq, i64 first offset, i64 last offset, i16 epoch; then u64
// XXH3-64 of the magic, the length and the body. Bytes after that are ignored (a file slot may
// hold the tail of an older, longer image).
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "keel/engine/io_ring.h"
#include "keel/engine/log.h"

namespace keel::server {

// Sequences are int32 and wrap from INT32_MAX to 0.
int32_t add_sequence(int32_t sequence, int64_t delta);

struct producer_batch {
  int32_t first_seq = 0;
  int32_t last_seq = 0;
  int64_t first_offset = 0;
  int64_t last_offset = 0;
  int16_t epoch = 0;
  bool operator==(const producer_batch&) const = default;
};

struct producer_entry {
  int16_t epoch = 0;
  std::deque<producer_batch> batches;  // oldest first, at most producer_state::max_batches
  bool operator==(const producer_entry&) const = default;
};

struct producer_snapshot;

class producer_state {
 public:
  static constexpr size_t max_batches = 5;

  struct verdict {
    int16_t error = 0;                        // a Kafka error code; 0: append or duplicate
    std::optional<producer_batch> duplicate;  // a retry of this recorded batch
  };
  // The leader's check of a batch with producer id `id` (>= 0).
  verdict check(int64_t id, int16_t epoch, int32_t base_seq, int32_t last_offset_delta) const;
  // Records a batch now in the log at [base_offset, base_offset + last_offset_delta]: one that
  // passed check() (at propose time) or one read back from the log (a rebuild). A newer epoch
  // resets the producer; an older one is ignored (the leader never appends one).
  void record(int64_t id, int16_t epoch, int32_t base_seq, int32_t last_offset_delta,
              int64_t base_offset);
  // Drops every batch at or above `offset` (a producer left with none is forgotten): the state as
  // of the log's prefix below `offset`, given that what follows is replayed.
  void truncate_from(int64_t offset);
  void clear() { producers_.clear(); }

  const producer_entry* find(int64_t id) const;
  size_t size() const { return producers_.size(); }
  bool operator==(const producer_state&) const = default;

  // The snapshot image of this state as of `next_offset` (call truncate_from(next_offset) first:
  // batches at or above it are not written).
  std::vector<std::byte> encode_snapshot(int64_t next_offset) const;
  // nullopt when `image` is not a valid snapshot (garbage, torn, another version).
  static std::optional<producer_snapshot> decode_snapshot(std::span<const std::byte> image);

 private:
  std::unordered_map<int64_t, producer_entry> producers_;
};

struct producer_snapshot {
  int64_t next_offset = 0;  // the log is replayed from here
  producer_state state;
};

// The snapshot files of one partition: two slots in its log directory (producer_state.0 and .1),
// written alternately through the shard's io_ring (write, then fdatasync, linked), so a torn
// write can only damage the slot being replaced and the shard thread never blocks on the disk.
// Opening (two open() calls) and loading (two small reads) are plain calls: once per leadership.
class producer_snapshot_store {
 public:
  static engine::result<std::unique_ptr<producer_snapshot_store>> open(const std::string& dir,
                                                                       engine::io_ring& ring);
  ~producer_snapshot_store();  // waits for a write in flight
  producer_snapshot_store(const producer_snapshot_store&) = delete;
  producer_snapshot_store& operator=(const producer_snapshot_store&) = delete;

  // The valid snapshots found, newest (largest next offset) first; each damaged slot is named in
  // a warning.
  std::vector<producer_snapshot> load(const std::function<void(const std::string&)>& warn);
  // Starts writing `image` into the older slot; false (nothing done) while a write is in flight.
  // `done` runs on completion with an empty string or the error.
  bool save(std::vector<std::byte> image, std::function<void(const std::string&)> done = {});
  bool busy() const { return pending_ > 0; }

 private:
  producer_snapshot_store(engine::io_ring& ring, std::string dir) : ring_(ring), dir_(dir) {}
  void on_done(int result, bool is_sync);

  struct op : engine::io_ring::operation {
    producer_snapshot_store* owner = nullptr;
    bool is_sync = false;
  };
  engine::io_ring& ring_;
  std::string dir_;
  int fds_[2] = {-1, -1};
  int next_slot_ = 0;
  int64_t slot_offset_[2] = {-1, -1};  // the next offset each slot holds (-1: none valid)
  std::vector<std::byte> buffer_;
  op write_op_, sync_op_;
  int pending_ = 0;
  int error_ = 0;
  std::function<void(const std::string&)> done_;
};

// A partition's producer state: on its leader, the state and the term it was built for (another
// term means another leadership: rebuild before serving); on a follower, the state of the
// committed log. Both take the periodic snapshots, so whichever replica leads next rebuilds from a
// recent one.
struct partition_producers {
  producer_state state;
  int64_t term = -1;  // -1: not built
  std::unique_ptr<producer_snapshot_store> store;
  int64_t snapshot_offset = -1;  // the next offset of the newest snapshot written or loaded
  uint64_t bytes_since_snapshot = 0;
  // On a follower (term == following): the state covers the committed log below this offset.
  static constexpr int64_t following = -2;
  int64_t followed_to = 0;
  static constexpr int64_t snapshot_every_offsets = 100'000;
  static constexpr uint64_t snapshot_every_bytes = 64ull << 20;
};

// Rebuilds `state` from `log`: from the newest usable snapshot (one whose next offset lies within
// [log start, `until`]), else from the log start, replaying the headers of the data batches
// (type `data_type`) below `until`. False when the log is not written up to `until` yet (retry
// later). Warnings (a damaged or stale snapshot) go to `warn`. Returns the offset scanned from
// in `scanned_from`.
bool rebuild_producer_state(const engine::log& log, producer_snapshot_store* store, int64_t until,
                            uint8_t data_type, producer_state& state, int64_t& scanned_from,
                            const std::function<void(const std::string&)>& warn);

}  // namespace keel::server
