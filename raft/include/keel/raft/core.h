// The per-group Raft state machine. It performs no I/O, reads no clock and starts no thread: the
// host feeds it ticks, messages and proposals and carries out the Ready it returns (ready.h).
// Same state + same inputs = same outputs, which is what lets tests/raft simulate it.
#pragma once

#include <cstdint>
#include <deque>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "keel/raft/config.h"
#include "keel/raft/log.h"
#include "keel/raft/log_view.h"
#include "keel/raft/message.h"
#include "keel/raft/progress.h"
#include "keel/raft/ready.h"
#include "keel/raft/types.h"

namespace keel::raft {

// Injected randomness: the only source of randomized election timeouts (§5.2).
class random_source {
 public:
  virtual ~random_source() = default;
  // Uniform in [0, bound). Invariant: bound > 0.
  virtual uint64_t next_below(uint64_t bound) = 0;
};

// Pluggable snapshot hook for groups whose state is not the log itself (e.g. the metadata group):
// the leader asks it for the state image as of an offset when a follower must restart its log.
class snapshot_hook {
 public:
  virtual ~snapshot_hook() = default;
  virtual shared_bytes snapshot_at(offset through) = 0;
};

struct core_options {
  group_id group;
  node_id self;
  // Time in ticks. A follower campaigns after a random timeout in [election, 2 * election).
  int election_ticks = 10;
  int heartbeat_ticks = 1;
  bool pre_vote = true;  // Ongaro §9.6: a partitioned node cannot inflate terms
  bool check_quorum =
      true;  // Ongaro §6.2: a leader without a quorum steps down; voters keep a lease
  size_t max_inflight_messages = 64;
  uint64_t max_inflight_bytes = 8 << 20;
  uint64_t max_append_bytes = 1 << 20;        // per AppendEntries message
  uint64_t max_uncommitted_bytes = 64 << 20;  // proposals beyond this are refused (busy)
  size_t max_pending_reads = 4096;
  // Heartbeat rounds a follower may go without progress, with appends in flight, before they
  // are taken as lost and resent from its match. More than one when a follower's fsync can
  // outlast a heartbeat interval: resending everything in flight doubles a busy link's load.
  int stall_rounds = 1;
};

// What a node needs besides its log when it starts: the durable hard state and the configuration
// in effect at the log start (the boot configuration for a fresh group).
struct boot_state {
  hard_state hard;
  membership config;
  offset config_offset = offset::none();
};

enum class role { follower, pre_candidate, candidate, leader };
const char* to_string(role r);

// The record a host keeps beside its log to describe the log start (see log_reader).
struct log_start_record {
  offset start;
  term_id start_prev_term;
  membership config;
  offset config_offset;
};

class core {
 public:
  // Invariant: storage and random outlive the core; `storage` reflects every Ready handed out and
  // written (see log_reader).
  core(core_options options, const log_reader& storage, random_source& random, boot_state boot,
       snapshot_hook* snapshots = nullptr);

  // Advances logical time by one tick.
  void tick();
  // Handles one message addressed to this node. Errors (wrong group or recipient, malformed
  // content) leave the state untouched.
  status step(const message& m);
  // Leader only: appends a batch of `offset_count` offsets and returns it (with its offsets).
  result<batch> propose(batch_type type, int64_t offset_count, shared_bytes payload);
  // Leader only: proposes a new membership (at most one voter changed, see config.h).
  result<batch> propose_config(membership next);
  // Leader only: hands leadership to `target` (Ongaro §3.10); proposals are refused meanwhile.
  status transfer_leadership(node_id target);
  // Leader only: a linearizable read point; answered in a later Ready's `reads` (§8).
  status read_index(uint64_t request_id);

  bool has_ready() const;
  ready take_ready();
  // While a Ready's writes are in flight: the queued messages that depend on nothing unpersisted
  // (heartbeats and their replies, a leader's appends — §10.2.1 lets a leader send before its
  // own write), so a slow fsync cannot silence a leader or its followers past an election
  // timeout. Empty while a term or vote is unpersisted; the rest wait for the next Ready.
  std::vector<message> take_messages();
  // The host finished the last Ready (see the contract in ready.h).
  void advance();

  // The record the host must keep if it truncates its log's prefix to `start` (retention).
  // Invariant: start - 1 <= commit().
  result<log_start_record> log_start_for(offset start) const;

  node_id self() const { return options_.self; }
  group_id group() const { return options_.group; }
  role current_role() const { return role_; }
  term_id term() const { return term_; }
  node_id vote() const { return vote_; }
  node_id leader() const { return leader_; }
  offset commit() const { return commit_; }
  const log_view& log() const { return log_; }
  const membership& config() const { return configs_.back().second; }
  offset config_offset() const { return configs_.back().first; }
  const progress* progress_of(node_id n) const;
  node_id transfer_target() const { return transferee_; }
  std::string describe() const;

 private:
  struct outgoing {
    message m;
    bool after_persist;
  };
  enum class campaign_kind { pre_vote, election, transfer };

  void send(node_id to, message_body body, bool after_persist);
  void send_with_term(node_id to, term_id t, message_body body, bool after_persist);
  void become_follower(term_id t, node_id leader);
  void become_pre_candidate();
  void become_candidate();
  void become_leader();
  void campaign(campaign_kind kind);
  void reset_timers();
  bool promotable() const { return config().is_voter(options_.self); }
  bool in_lease() const;

  void on_vote_request(const message& m, const vote_request& r);
  void on_vote_response(const message& m, const vote_response& r);
  void on_append_request(const message& m, const append_request& r);
  void on_append_response(const message& m, const append_response& r);
  void on_heartbeat_request(const message& m, const heartbeat_request& r);
  void on_heartbeat_response(const message& m, const heartbeat_response& r);
  void on_reset_request(const message& m, const reset_request& r);
  void on_timeout_now(const message& m);

  void append_own(batch b);
  void apply_config_entry(offset at, membership config);
  void on_truncated(offset from);
  void sync_progress_with_config();
  void maybe_commit();
  void commit_to(offset c);
  void on_commit_advanced();
  void broadcast_appends();
  void send_appends(node_id to, bool allow_empty);
  bool send_one_append(node_id to, bool allow_empty);
  void send_reset(node_id to);
  void broadcast_heartbeats();
  void release_reads();
  void abort_transfer() { transferee_ = node_id::none(); }
  const membership& committed_config() const;
  offset own_match() const { return log_.durable_last(); }

  core_options options_;
  random_source& random_;
  snapshot_hook* snapshots_;
  log_view log_;

  term_id term_;
  node_id vote_;
  node_id leader_;
  role role_ = role::follower;
  // Invariant: first()-1 <= commit_ <= last(); commit_ never decreases.
  offset commit_;
  offset commit_reported_;
  hard_state hard_handed_;

  // Membership history: the configuration of every config entry above the commit index, after
  // the latest committed one (the front). The back is in effect ("effective once appended").
  std::vector<std::pair<offset, membership>> configs_;

  std::map<node_id, progress> progress_;
  std::map<node_id, bool> votes_;
  int election_elapsed_ = 0;
  int heartbeat_elapsed_ = 0;
  int randomized_election_ticks_ = 0;
  node_id transferee_;
  offset noop_offset_;  // leader: its no-op; nothing is committed in its term until this is
  std::deque<std::pair<offset, uint64_t>> uncommitted_;  // leader: (last, bytes) of own batches
  uint64_t uncommitted_bytes_ = 0;
  bool broadcast_pending_ = false;

  struct pending_read {
    uint64_t id;
    offset index;
    uint64_t seq;
  };
  uint64_t read_seq_ = 0;
  std::deque<pending_read> pending_reads_;
  std::vector<uint64_t> reads_awaiting_term_commit_;
  std::vector<read_state> read_states_;

  std::vector<outgoing> outbox_;
  std::optional<log_reset> reset_to_hand_;
  bool ready_outstanding_ = false;
  bool outstanding_has_reset_ = false;
  bool outstanding_changes_term_or_vote_ = false;
};

}  // namespace keel::raft
