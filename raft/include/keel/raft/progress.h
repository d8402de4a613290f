// The leader's view of one follower: how far its log matches, where to send next, and how much
// may be in flight to it. Pure bookkeeping; core.cc decides when to send.
#pragma once

#include <cstdint>
#include <deque>
#include <string>

#include "keel/raft/types.h"

namespace keel::raft {

// A bounded window of AppendEntries in flight to one follower, in messages and in bytes.
// Each record is the last offset a message carried; a response that acks offset M frees every
// record <= M (acks are cumulative because a follower's log is a prefix-closed sequence).
class inflight_window {
 public:
  inflight_window(size_t max_messages, uint64_t max_bytes)
      : max_messages_(max_messages), max_bytes_(max_bytes) {
    KEEL_RAFT_ASSERT(max_messages > 0 && max_bytes > 0, "inflight window limits must be positive");
  }

  // Invariant: records are strictly increasing in offset.
  void add(offset last, uint64_t bytes);
  void free_through(offset acked);
  void clear();
  // Frees the oldest record: used when a follower is reachable but its acks were lost.
  void free_first();
  // Full when either limit is reached; a single message larger than max_bytes is still allowed
  // when the window is empty, so an oversized batch cannot wedge replication.
  bool full() const { return records_.size() >= max_messages_ || bytes_ >= max_bytes_; }
  size_t count() const { return records_.size(); }
  uint64_t bytes() const { return bytes_; }

 private:
  struct record {
    offset last;
    uint64_t bytes;
  };
  size_t max_messages_;
  uint64_t max_bytes_;
  std::deque<record> records_;
  uint64_t bytes_ = 0;
};

// probe: the match point is unknown; one AppendEntries at a time, until one is accepted.
// replicate: the match point is known; AppendEntries are pipelined, next advancing optimistically.
// reset: the follower needs entries before the leader's log start; a log-start reset is in flight.
enum class progress_state { probe, replicate, reset };
const char* to_string(progress_state state);

// Invariant: match < next; in replicate state next - 1 >= match and inflights cover (match,
// next-1].
struct progress {
  progress(offset last, size_t max_inflight_messages, uint64_t max_inflight_bytes)
      : match(offset::none()),
        next(last.next()),
        inflight(max_inflight_messages, max_inflight_bytes) {}

  offset match;  // highest offset known to match the leader's log and be durable there
  offset next;   // next offset to send
  progress_state state = progress_state::probe;
  bool probe_sent = false;     // probe: an AppendEntries is outstanding; wait for reply/heartbeat
  offset reset_offset;         // reset: the last offset covered by the log-start reset sent
  bool recent_active = false;  // heard from since the last CheckQuorum round (§6.2 of Ongaro)
  uint64_t read_ack_seq = 0;   // highest ReadIndex heartbeat round this follower acknowledged
  // replicate: match as of the previous heartbeat reply. If core_options::stall_rounds rounds
  // pass with requests in flight and no progress, they were lost or rejected out of order:
  // probe again.
  offset stall_mark = offset::none();
  int stalled_rounds = 0;
  inflight_window inflight;

  void become_probe();
  void become_replicate();
  void become_reset(offset last_covered);
  // Accepted AppendEntries up to `acked`; returns false if it tells nothing new (stale reply).
  bool on_accept(offset acked);
  // The follower rejected an AppendEntries whose previous offset was `rejected_prev`; `hint` is
  // where the leader's log and the follower's can at best agree (fast backtracking). Returns
  // false for a stale rejection.
  bool on_reject(offset rejected_prev, offset hint);
  // Records an AppendEntries carrying entries through `last` (`bytes` of them) just sent.
  void sent(offset last, uint64_t bytes, bool carried_entries);
  // Whether the leader should hold back further AppendEntries for now.
  bool paused() const;
  std::string describe() const;
};

}  // namespace keel::raft
