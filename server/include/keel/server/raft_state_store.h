// raft_state_store: what one Raft group must find again after a crash besides its log, in one
// small file beside the partition's segments (`raft_state`).
//
// It holds the hard state (term, vote, commit), the log-start record (the term of the offset
// before the log start and the membership in effect there, see raft::log_reset), and the offsets
// of the configuration batches still in the log, so a restart finds the membership without
// scanning the log (restart time must not grow with the data).
//
// Layout: two slots of slot_bytes (8 KiB); a write always goes to the slot not holding the last
// synced state, so a torn or lost write can only damage a slot that is not needed. On open the
// valid slot with the larger sequence wins. Each slot, little-endian:
//   offset size field
//        0    8 magic            0x5441545354464152 ("RAFTSTAT")
//        8    8 sequence         increases with every write; the valid slot with the larger wins
//       16    8 term
//       24    8 vote             raft node id, 0 for none
//       32    8 commit
//       40    8 log_start
//       48    8 start_prev_term
//       56    8 start_config_offset
//       64    4 membership bytes n, then n bytes (raft::codec::encode_membership)
//        .    4 config offsets m, then m x 8 bytes
//     8176    8 group            the Raft group the state and its log belong to; 0 in states
//                                written before it was recorded (adopted at open)
//     8184    8 XXH3-64 of bytes [0, 8184)
// A log directory whose state names another group is a deleted topic's replica that this broker
// missed the deletion of (it was down): open refuses it, so a group never starts on a log and a
// term history that are not its own.
// Writes go through the shard's io_ring (write then fdatasync, linked): no blocking syscall. A
// change that may be lost (the commit index alone) is only staged and written now and then,
// without a sync: at load it would otherwise double the fdatasyncs of every replica.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "keel/engine/io_ring.h"
#include "keel/engine/result.h"
#include "keel/raft/config.h"
#include "keel/raft/ready.h"

namespace keel::server {

struct raft_persistent_state {
  raft::hard_state hard;
  raft::offset log_start{0};
  raft::term_id start_prev_term{0};
  raft::membership start_config;
  raft::offset start_config_offset = raft::offset::none();
  std::vector<raft::offset> config_offsets;  // ascending
  uint64_t group = 0;                        // 0: not recorded (an older state)
};

class raft_state_store {
 public:
  static constexpr size_t slot_bytes = 8192;

  // Opens (or creates, holding `initial`) dir/raft_state. A state of another group than
  // `initial.group` is refused (errc::already_exists, naming both groups).
  static engine::result<std::unique_ptr<raft_state_store>> open(
      const std::string& dir, engine::io_ring& ring, const raft_persistent_state& initial);
  ~raft_state_store();
  // The group recorded in dir/raft_state: none when there is no valid state, 0 when it predates
  // the record.
  static std::optional<uint64_t> stored_group(const std::string& dir);

  const raft_persistent_state& state() const { return state_; }
  // Replaces the state and makes it durable; `done` runs once it is (or with the error). One
  // write at a time: a save while one is in flight is queued and coalesced with later ones.
  void save(raft_persistent_state next, std::function<void(const engine::status&)> done);
  // Replaces the state without writing it: for a change that may be lost (a commit index is
  // re-learnt from the leader), written by the next save, by write_staged(), or at close.
  void stage(raft_persistent_state next);
  // Writes a staged change, without an fdatasync. Every write goes to the slot that does not
  // hold the last synced state, so a lost or torn unsynced write leaves that state to be found.
  // Nothing to do if nothing is staged.
  void write_staged();
  bool idle() const { return !in_flight_ && waiters_next_.empty(); }

 private:
  raft_state_store(int fd, engine::io_ring& ring);
  void start_write(bool sync);
  void on_write_done(int result, bool is_sync);

  struct write_op : engine::io_ring::operation {
    raft_state_store* owner = nullptr;
    bool is_sync = false;
  };

  int fd_;
  engine::io_ring& ring_;
  raft_persistent_state state_;
  uint64_t sequence_ = 0;
  alignas(4096) std::byte buffer_[slot_bytes];
  write_op write_op_, sync_op_;
  int pending_ops_ = 0;
  int error_ = 0;
  bool in_flight_ = false;
  bool dirty_ = false;    // a save came while a write was in flight: it follows, with a sync
  bool staged_ = false;   // state_ holds a change no write has carried yet
  int durable_slot_ = 0;  // the slot of the last synced write (or the one found at open)
  int writing_slot_ = 1;  // the slot of the write in flight: always the other one
  bool writing_synced_ = false;
  std::vector<std::function<void(const engine::status&)>> waiters_in_flight_, waiters_next_;
};

// Encoding, exposed for tests.
std::vector<std::byte> encode_raft_state(const raft_persistent_state& s, uint64_t sequence);
bool decode_raft_state(std::span<const std::byte> slot, raft_persistent_state& out,
                       uint64_t& sequence);

}  // namespace keel::server
