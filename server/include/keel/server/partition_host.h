// partition_host: one Raft group on its shard — the engine log, the raft core, its persistent
// state — and the Ready loop that joins them (the contract is on raft::ready).
//
// The loop, one Ready at a time:
//   1. messages go to the sink at once (a leader replicates while it writes its own copy);
//   2. a term or vote change is made durable first (raft_state_store), then
//   3. a log-start reset, a suffix truncation and the batches are applied to the engine log, the
//      batches appended at their given offsets through the shard's ring, the hard state saved;
//   4. when all of it is durable, messages_after_persist go out (acknowledgements promise
//      durability), the high watermark moves to the new commit index and waiting proposals and
//      readers are told, and the core is advanced.
// A commit-index-only change is staged and written about once an election timeout, unsynced (a
// lost commit index is re-learnt).
// Everything runs on the owning shard's thread; nothing here blocks on the disk except the
// rare suffix truncation (engine::log::truncate_suffix), which waits for one fdatasync, and the
// rarer log-start reset. A reset's snapshot (on_snapshot) and then its record in the raft state
// are durable before the log is reset.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <random>

#include "keel/engine/log.h"
#include "keel/raft/core.h"
#include "keel/server/raft_log.h"
#include "keel/server/raft_state_store.h"

namespace keel::server {

class seeded_random final : public raft::random_source {
 public:
  explicit seeded_random(uint64_t seed) : rng_(seed) {}
  uint64_t next_below(uint64_t bound) override { return rng_() % bound; }

 private:
  std::mt19937_64 rng_;
};

struct partition_host_options {
  raft::core_options core;
  raft::membership initial_config;  // for a group with no state yet
  // The newest record timestamp of a data batch (for the engine's time index); none by default.
  std::function<engine::timestamp_ms(const raft::batch&)> max_timestamp_of;
  // For groups whose state is not the log (the metadata group): apply a log-start snapshot and
  // keep it durably, then call `done` (an empty string, or the error). The log is reset only
  // after `done`: a crash between leaves the old log, never a log without its snapshot.
  std::function<void(const raft::shared_bytes&, std::function<void(const std::string& error)> done)>
      on_snapshot;
  raft::snapshot_hook* snapshots = nullptr;
  // While this replica follows, its log keeps only this many durable tail bytes in the page
  // cache (engine log_config::cached_tail_bytes): a follower serves no reads, so the pages it
  // wrote are better reused for the next writes. Leading restores the log's own setting.
  // 0: followers keep the log's own setting too.
  uint64_t follower_cached_tail_bytes = 0;
};

// When a proposal's callback runs: at the Raft commit (on a majority's logs), or once the
// leader's own log has written it (Kafka's acks=1; lost if the leader fails before a commit).
enum class proposal_wait { commit, local_write };

// How a proposal ended: committed (or locally written, for proposal_wait::local_write) with its
// offsets, or failed (leadership lost, the log failed).
struct proposal_outcome {
  bool committed = false;
  raft::offset base;
  raft::offset last;
  std::string error;
};

class partition_host {
 public:
  using message_sink = std::function<void(raft::message)>;
  using proposal_callback = std::function<void(const proposal_outcome&)>;

  // `log` must outlive the host. Throws nothing; errors come back as values.
  static engine::result<std::unique_ptr<partition_host>> open(engine::log& log,
                                                              engine::io_ring& ring,
                                                              partition_host_options options,
                                                              message_sink sink,
                                                              raft::random_source& random);
  ~partition_host();

  void tick();
  void step(const raft::message& m);
  // Leader only. `done` runs once the batch is committed (or written locally, per `wait`), or
  // fails.
  raft::result<raft::batch> propose(raft::batch_type type, int64_t offset_count,
                                    raft::shared_bytes payload, proposal_callback done = {},
                                    proposal_wait wait = proposal_wait::commit);
  // The offset the next proposal will take (leader only): callers that stamp offsets into the
  // payload (Kafka batches carry their base offset) read it just before proposing.
  raft::offset next_offset() const { return core_->log().last().next(); }
  raft::status transfer_leadership(raft::node_id target);
  // Moves the log start to `start` (a committed prefix only): the log-start record is made
  // durable first, then the engine deletes the segments below it. For retention, and for
  // groups that keep their state in a snapshot (the metadata group).
  void compact(raft::offset start, std::function<void(const std::string& error)> done);

  raft::core& core() { return *core_; }
  const raft::core& core() const { return *core_; }
  engine::log& log() { return log_; }
  // The Raft commit index: what clients may read up to.
  raft::offset high_watermark() const { return high_watermark_; }
  bool is_leader() const { return core_->current_role() == raft::role::leader; }
  // Runs after the high watermark moved (fetch waiters, the metadata applier).
  void on_commit(std::function<void(raft::offset)> listener) {
    commit_listeners_.push_back(std::move(listener));
  }
  // Runs the Ready loop if the core has work; called after every input, and safe to call again.
  void process_ready();
  // The loop is idle: no Ready outstanding.
  bool idle() const { return !ready_in_flight_; }
  // Why the group stopped, if the log or the state file failed.
  const std::string& failure() const { return failure_; }

 private:
  partition_host(engine::log& log, engine::io_ring& ring, partition_host_options options,
                 message_sink sink);
  void apply_to_log();
  void complete_one(const std::string& error);
  void finish();
  void fail(const std::string& why);
  void fail_proposals(const std::string& why);

  engine::log& log_;
  engine::io_ring& ring_;
  partition_host_options options_;
  message_sink sink_;
  std::unique_ptr<raft_state_store> state_;
  std::unique_ptr<raft_log> reader_;
  std::unique_ptr<raft::core> core_;
  raft::offset high_watermark_ = raft::offset::none();
  bool ready_in_flight_ = false;
  std::optional<raft::ready> parked_;  // the Ready being persisted
  // How far its log-start reset went (apply_to_log).
  enum class reset_step { none, snapshot_kept, start_recorded };
  reset_step reset_step_ = reset_step::none;
  int pending_ = 0;  // its writes not yet complete
  std::string failure_;
  std::multimap<raft::offset, std::pair<raft::offset, proposal_callback>> proposals_;  // by last
  std::multimap<raft::offset, std::pair<raft::offset, proposal_callback>> local_writes_;
  raft::term_id proposals_term_;
  uint64_t leader_cached_tail_bytes_ = 0;  // the log's own setting
  bool cache_as_follower_ = false;
  int ticks_since_state_write_ = 0;
  std::vector<std::function<void(raft::offset)>> commit_listeners_;
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

}  // namespace keel::server
