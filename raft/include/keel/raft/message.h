// Messages between the members of one Raft group. Every message names its group, sender,
// recipient and the sender's term, so a host can multiplex all groups over one connection.
//
// Heartbeats are deliberately separate, fixed-size messages (not empty AppendEntries): they carry
// no log position, only the leader's term, a commit index already clamped to what the follower
// has, and a ReadIndex round. A host can therefore gather every group's heartbeats between two
// brokers into one frame (codec: encode_heartbeat_frame) and split the responses back by group.
#pragma once

#include <cstdint>
#include <string>
#include <variant>
#include <vector>

#include "keel/raft/config.h"
#include "keel/raft/log.h"
#include "keel/raft/types.h"

namespace keel::raft {

// RequestVote (§5.2) and PreVote (Ongaro §9.6). A pre-vote carries the term the candidate would
// campaign in, without anyone changing term. `transfer` marks a campaign started by TimeoutNow:
// voters then skip the leader-lease check (§3.10 / §6.2 of Ongaro).
struct vote_request {
  bool pre_vote = false;
  bool transfer = false;
  offset last_offset;
  term_id last_term;
  bool operator==(const vote_request&) const = default;
};

struct vote_response {
  bool pre_vote = false;
  bool granted = false;
  bool operator==(const vote_response&) const = default;
};

// AppendEntries (§5.3): batches following prev_offset, whose term must be prev_term.
struct append_request {
  offset prev_offset;
  term_id prev_term;
  offset leader_commit;
  std::vector<batch> batches;
  bool operator==(const append_request&) const = default;
};

// Accepted: the follower's log matches the leader's through `match` and that prefix is durable.
// Rejected: prev_offset (`rejected_prev`) did not match; `hint_offset`/`hint_term` is the last
// follower entry whose term is <= the leader's prev_term (or its last entry, if its log is
// shorter), so the leader skips a whole conflicting term per round trip (§5.3, fast backtracking).
struct append_response {
  bool reject = false;
  offset match;
  offset rejected_prev;
  offset hint_offset;
  term_id hint_term;
  bool operator==(const append_response&) const = default;
};

struct heartbeat_request {
  offset commit;          // min(leader commit, follower match): never past what the follower holds
  uint64_t read_seq = 0;  // ReadIndex round being confirmed, 0 if none
  bool operator==(const heartbeat_request&) const = default;
};

struct heartbeat_response {
  uint64_t read_seq = 0;
  bool operator==(const heartbeat_response&) const = default;
};

// Log-start reset (InstallSnapshot, §7, in Keel's form): the leader no longer holds the entries the
// follower needs, so the follower discards its log and restarts it at `start`, remembering that
// `start - 1` has term `start_prev_term`. `config` is the leader's latest committed membership
// (entry `config_offset`). `snapshot` is the state-machine image from the snapshot hook for
// groups whose state is not the log itself; empty for partition logs.
struct reset_request {
  offset start;
  term_id start_prev_term;
  membership config;
  offset config_offset;
  shared_bytes snapshot;
  bool operator==(const reset_request&) const = default;
};

// TimeoutNow (leadership transfer, Ongaro §3.10): start an election at once.
struct timeout_now {
  bool operator==(const timeout_now&) const = default;
};

using message_body =
    std::variant<vote_request, vote_response, append_request, append_response, heartbeat_request,
                 heartbeat_response, reset_request, timeout_now>;

struct message {
  group_id group;
  node_id from;
  node_id to;
  term_id term;
  message_body body;

  bool operator==(const message&) const = default;
  std::string describe() const;
};

const char* message_kind(const message_body& body);

}  // namespace keel::raft
