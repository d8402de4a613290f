// broker: the composition root. Builds every part of a keel-broker from its configuration and
// owns them: shards (threads with their io_context and io_ring), each shard's log manager and
// partition replicas, and on shard 0 the inter-broker transport, the controller (metadata group)
// and the routing of Raft messages and client requests.
//
// Threads: shard k's replicas are touched only on shard k. Shard 0 owns the transport, the
// controller, the routing table (group -> shard), the leader table and client sessions. Work
// crosses shards only by shard::post.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <vector>

#include "keel/engine/log_manager.h"
#include "keel/net/admin.h"
#include "keel/net/transport.h"
#include "keel/server/config.h"
#include "keel/server/controller.h"
#include "keel/server/group_coordinator.h"
#include "keel/server/liveness.h"
#include "keel/server/partition_host.h"
#include "keel/server/producer_state.h"
#include "keel/server/shard.h"

namespace keel::server {

class kafka_frontend;

class broker {
 public:
  // Throws std::runtime_error with a message naming what failed (start-up only).
  explicit broker(broker_config config);
  ~broker();
  broker(const broker&) = delete;
  broker& operator=(const broker&) = delete;

  // Starts the shards and listeners; returns once the broker serves.
  void start();
  // Graceful stop: hands leaderships to caught-up followers, then closes every log cleanly.
  // Safe from any thread; returns when the broker has stopped.
  void stop();
  uint16_t rpc_port() const { return rpc_port_; }
  uint16_t kafka_port() const { return kafka_port_; }

 private:
  friend class kafka_frontend;  // the Kafka API handlers (kafka_*.cc) work on this broker's parts

  // A one-shot wake-up for a reader waiting on the high watermark (a long-polling fetch);
  // `cancelled` is set once nobody waits any more, so idle partitions do not pile them up.
  struct commit_waiter {
    std::shared_ptr<std::atomic<bool>> cancelled;
    std::function<void()> wake;
  };
  struct replica_state {
    std::string topic;
    int32_t partition = 0;
    std::vector<int32_t> replicas;
    std::map<std::string, std::string> configs;
    engine::log* log = nullptr;
    std::unique_ptr<partition_host> host;
    std::vector<commit_waiter> commit_waiters;
    // On __consumer_offsets partitions: the group coordinator (declared after the host, so it
    // goes first).
    std::unique_ptr<group_coordinator> coordinator;
    // The commit index at the previous leader report: a follower whose match has reached it is
    // in sync (it keeps up with the leader within one report period).
    raft::offset isr_mark = raft::offset::none();
    // Idempotent producers, on the leader (kafka_records.cc); built at a leadership's first
    // idempotent produce.
    std::unique_ptr<partition_producers> producers;
    // Whether this replica led at the previous tick: leadership changes are logged.
    bool was_leader = false;
    // A retention compaction is under way (apply_retention).
    bool retention_in_flight = false;
  };
  struct shard_state {
    std::unique_ptr<shard> runner;
    std::unique_ptr<engine::log_manager> logs;
    std::unique_ptr<seeded_random> random;
    std::map<uint64_t, replica_state> groups;
    // The brokers that should lead nothing, as shard 0 last posted them: those the metadata has
    // fenced, and those whose leader reports say they count themselves fenced (no heartbeat
    // acknowledged for a session), this broker included. Leader balancing hands no leadership
    // to one of them (Metadata would answer it as unavailable); when this broker is in it, its
    // shards hand their leaderships to caught-up replicas outside it (hand_off_leaderships).
    std::set<int32_t> fenced;
    int64_t last_retention_ms = 0;  // steady clock
  };
  struct leader_entry {
    int32_t leader = -1;
    int64_t term = 0;
    int64_t high_watermark = -1;
    std::vector<int32_t> isr;
    std::chrono::steady_clock::time_point seen;
  };
  struct desired_replica {
    std::string topic;
    int32_t partition;
    std::vector<int32_t> replicas;
    uint32_t shard;
    std::map<std::string, std::string> configs;
  };

  // Shard 0.
  void start_on_shard0();
  void on_frame(net::node_id from, uint16_t type, std::span<const std::byte> payload);
  void send_raft(raft::message m);
  // A Raft message as a sealed transport frame (any shard may build one).
  static std::vector<std::byte> raft_frame_of(const raft::message& m);
  void flush_heartbeats();
  void route_raft(const raft::message& m);
  void tick_shard0();
  void register_self();
  void reconcile();
  void on_controller_request(net::node_id from, std::span<const std::byte> payload);
  void on_controller_response(std::span<const std::byte> payload);
  void ask_controller(uint8_t kind, std::vector<std::byte> body,
                      std::function<void(bool ok, const std::string& error)> done);
  // As above, with the whole outcome (an allocated producer id block comes back in it).
  // `origin`: the broker whose link the request came in on (on_controller_request), or -1 for
  // this broker's own requests; a heartbeat must name its origin.
  using controller_result_fn = std::function<void(const apply_result&)>;
  void ask_controller_for(uint8_t kind, std::vector<std::byte> body, controller_result_fn done,
                          net::node_id origin = -1);
  // One new producer id from this broker's block, fetching another block of
  // producer_id_block_size from the controller when it runs out (requests arriving meanwhile
  // wait for it). `done` runs on shard 0 with the id, or -1 and why.
  void next_producer_id(std::function<void(int64_t id, const std::string& error)> done);
  static constexpr int64_t producer_id_block_size = 1000;
  using controller_done = std::function<void(bool ok, const std::string& error)>;
  void request_create_topic(const std::string& name, int32_t partitions, int16_t rf,
                            const std::map<std::string, std::string>& configs,
                            controller_done done);
  void request_delete_topic(const std::string& name, controller_done done);
  void request_create_partitions(const std::string& name, int32_t total, controller_done done);
  // A stable name for the cluster (Kafka's cluster id), the same on every broker.
  std::string cluster_id() const;
  // Liveness as the replicated metadata says (registered and not fenced), so every broker gives
  // the same answer at the same metadata offset.
  bool broker_alive(int32_t id) const;
  // Broker liveness (liveness.h). Every broker: a heartbeat to the controller leader, with
  // `shutting_down` set once by a graceful stop. The controller leader: liveness_for_term() is
  // its tracker, reset at each new term; check_liveness() fences the silent brokers;
  // propose_fencing() proposes one fence or unfence record and logs why.
  void send_broker_heartbeat(bool shutting_down);
  // Every broker, every liveness check: whether this broker counts itself fenced (fenced in the
  // metadata it follows, or no heartbeat acknowledged for a session timeout: cut off from the
  // controller leader, which fences it), then post_fenced().
  void check_self_fenced();
  // The file whose existence pauses heartbeats (fault injection, tests only).
  std::string heartbeat_pause_file() const;
  // Posts to every shard the brokers that should lead nothing (shard_state::fenced), when that
  // set changed.
  void post_fenced();
  // On shard k when this broker is fenced: each partition it leads goes to an unfenced replica
  // that is in sync (Raft's leadership transfer catches it up the rest of the way).
  void hand_off_leaderships(unsigned k);
  broker_liveness& liveness_for_term();
  void check_liveness();
  void propose_fencing(int32_t id, bool fence, const char* why);
  void handle_client(net::node_id session, uint16_t type, std::span<const std::byte> payload);
  void on_leader_report(std::span<const std::byte> payload);
  // Placement candidates on the controller leader: the unfenced brokers, and the leader's own.
  std::vector<int32_t> live_brokers() const;
  int32_t leader_of(uint64_t group) const;

  // Any shard.
  raft::core_options core_options(uint64_t group) const;
  engine::log_config log_config_for(const std::map<std::string, std::string>& configs) const;
  void ensure_replica(unsigned shard, uint64_t group, desired_replica d);
  void drop_replica(unsigned shard, uint64_t group);
  // Shard 0: until the metadata shows this broker's own barrier (metadata.h), proposes one now
  // and then; once it shows, posts sweep_orphans to every shard with the logs to keep there.
  void send_metadata_barrier();
  void sweep_after_barrier(const std::map<uint64_t, desired_replica>& desired);
  // On shard k: deletes every log of the shard's manager that is not in `keep` (replicas of
  // deleted topics whose removal a crash cut short).
  void sweep_orphans(unsigned shard, const std::set<std::string>& keep);
  void tick_shard(unsigned shard);
  // Retention of the shard's data partitions, each through its Raft group (partition_host::
  // compact), so the group's record of its log start stays true.
  void apply_retention(unsigned shard);
  partition_host::message_sink sink_for(unsigned shard);

  broker_config config_;
  std::vector<shard_state> shards_;
  uint16_t rpc_port_ = 0;
  uint16_t kafka_port_ = 0;

  // Shard 0 only.
  std::unique_ptr<net::transport> transport_;
  std::unique_ptr<controller> controller_;
  std::unique_ptr<kafka_frontend> kafka_;
  engine::log* metadata_log_ = nullptr;
  std::map<uint64_t, unsigned> group_shard_;
  std::map<uint64_t, leader_entry> leaders_;
  std::map<int32_t, std::vector<raft::message>> heartbeat_requests_out_, heartbeat_responses_out_;
  bool heartbeat_flush_scheduled_ = false;
  std::map<uint64_t, controller_result_fn> controller_waiters_;
  struct {
    int64_t next = 0, end = 0;  // the current block [next, end)
    bool fetching = false;
    std::vector<std::function<void(int64_t, const std::string&)>> waiters;
  } producer_ids_;
  uint64_t next_request_id_ = 1;
  size_t seed_cursor_ = 0;
  bool registered_ = false;
  uint64_t shard0_ticks_ = 0;
  // This process's metadata barrier (never 0), and whether the sweep it enables has run.
  uint64_t barrier_nonce_ = 0;
  bool barrier_asked_ = false;  // a barrier request in flight or committed
  bool orphans_swept_ = false;
  // The controller leader's heartbeat tracker, and the controller term it was reset for (-1:
  // not leading).
  std::unique_ptr<broker_liveness> liveness_;
  int64_t liveness_term_ = -1;
  // The fenced set last posted to the shards (shard_state::fenced).
  std::set<int32_t> fenced_posted_;
  // When the controller last acknowledged this broker's heartbeat (or when it was not
  // registered yet: a session counts from its registration), and whether it counts itself
  // fenced (check_self_fenced; sent in its leader reports).
  std::chrono::steady_clock::time_point heartbeat_acked_{};
  bool self_fenced_ = false;
  // Fault injection (config fault_injection_pause_heartbeats): whether heartbeats are paused.
  bool heartbeats_paused_ = false;
  // Peers that count themselves fenced, as their latest leader reports said, and when.
  std::map<int32_t, std::chrono::steady_clock::time_point> peers_self_fenced_;

  std::atomic<bool> stopping_{false};
  std::atomic<bool> stopped_{false};
};

}  // namespace keel::server
