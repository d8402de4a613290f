// What the core hands to its host, and the contract for handling it.
#pragma once

#include <optional>
#include <vector>

#include "keel/raft/config.h"
#include "keel/raft/log.h"
#include "keel/raft/message.h"
#include "keel/raft/types.h"

namespace keel::raft {

// The state Raft must find again after a crash (Figure 2, "persistent state on all servers"),
// plus the commit index (not required for safety, kept to avoid re-deriving it; a host may lose
// it: on restart it is clamped to the log end).
struct hard_state {
  term_id term;
  node_id vote;
  offset commit = offset::none();
  bool operator==(const hard_state&) const = default;
};

// A new, empty log starting at `start` replaces the whole log (§7, InstallSnapshot, in Keel's
// form). The host must remember start_prev_term as the term of offset start - 1, and the
// membership as the configuration in effect at the log start (see core::log_start_record).
struct log_reset {
  offset start;
  term_id start_prev_term;
  membership config;
  offset config_offset;
  shared_bytes snapshot;  // state-machine image for groups whose state is not the log; else empty
};

// A ReadIndex answer: the read with this id may be served once the host has applied through
// `index` (§8 of the Raft paper, §6.4 of Ongaro's dissertation).
struct read_state {
  uint64_t request_id = 0;
  offset index;
};

// Ready: one batch of work for the host. Obtain it with core::ready() when core::has_ready(),
// handle it completely, then call core::advance(). Only one Ready is outstanding at a time; the
// core keeps accepting tick/step/propose in between, and their effects go to the next Ready.
//
// Contract, in this order:
//  1. `messages` may be sent at once, in parallel with the disk work below. (This is how a leader
//     replicates while writing its own copy; the leader counts itself toward a commit quorum
//     only after advance() tells it its write is durable.)
//  2. If `hard_state_changes_term_or_vote`, the new hard state must be durable before any entry of
//     this Ready can become durable (a crash must never leave entries of a term the node has not
//     durably entered; and a vote must never be forgotten, §5.2).
//  3. Apply `reset` (discard the whole log, restart it at reset->start), then `truncate_from`
//     (discard every offset >= it), then append `batches` at exactly their offsets, then persist
//     `hard_state` if present. Make all of it durable (fsync).
//  4. Only then send `messages_after_persist` (vote grants and AppendEntries acknowledgements
//     promise durability, Figure 2 "respond after persisting").
//  5. `committed_to` (if set) is the new commit index, the high watermark: entries up to it may
//     be served to clients and applied, but only once steps 3 is done (they may be in `batches`).
//     `reads` are ReadIndex answers.
//  6. Call core::advance().
// Between take_ready() and advance(), core::take_messages() hands out the new messages of the
// same kind as `messages` (safe before the outstanding write is durable); send them at once.
struct ready {
  std::optional<hard_state> hard_state_to_persist;
  bool hard_state_changes_term_or_vote = false;
  std::optional<log_reset> reset;
  std::optional<offset> truncate_from;
  std::vector<batch> batches;
  std::vector<message> messages;
  std::vector<message> messages_after_persist;
  std::optional<offset> committed_to;
  std::vector<read_state> reads;

  bool must_sync() const {
    return hard_state_to_persist.has_value() || reset.has_value() || truncate_from.has_value() ||
           !batches.empty();
  }
};

}  // namespace keel::raft
