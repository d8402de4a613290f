// group_coordinator: Kafka's classic consumer-group protocol for the groups that hash to one
// partition of __consumer_offsets. One lives beside every replica of such a partition, on the
// partition's shard, and is touched only there.
//
// Two states, on purpose:
//   - the committed state (groups as last persisted, committed offsets) is built on EVERY replica
//     by applying the partition's committed records in log order, so a new leader already has it;
//   - the live groups (members, heartbeats, rebalances in progress) exist only on the leader, the
//     coordinator; they start from the committed state once the leader has applied everything up
//     to its own term's first entry (until then: COORDINATOR_LOAD_IN_PROGRESS).
// Offsets and completed rebalances are acknowledged only after their records commit (Raft). A
// periodic checkpoint rewrites the whole committed state and compacts the log before it, so a
// restarting replica replays at most one checkpoint and what followed.
//
// Rules follow Kafka's GroupCoordinator: KIP-394 member ids (MEMBER_ID_REQUIRED on a first join
// from v4), generations and fencing (ILLEGAL_GENERATION, UNKNOWN_MEMBER_ID,
// REBALANCE_IN_PROGRESS), session and rebalance timeouts, the leader member computing the
// assignment (the broker relays the clients' protocol bytes untouched), static membership
// (KIP-345), empty groups expiring after the offsets retention.
#pragma once

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "keel/net/kafka/messages.h"
#include "keel/net/kafka/record_batch.h"
#include "keel/server/group_records.h"
#include "keel/server/partition_host.h"

namespace keel::server {

struct group_coordinator_options {
  int32_t min_session_timeout_ms = 1000;
  int32_t max_session_timeout_ms = 1800000;
  int32_t initial_rebalance_delay_ms = 300;  // group.initial.rebalance.delay.ms
  int64_t offsets_retention_ms = 7ll * 24 * 3600 * 1000;
  int32_t max_metadata_bytes = 4096;   // offset.metadata.max.bytes
  int64_t checkpoint_records = 20000;  // records applied between checkpoints
  std::function<int64_t()> now_ms;     // wall clock (ms); the system clock by default
};

class group_coordinator {
 public:
  using join_done = std::function<void(net::kafka::join_group_response)>;
  using sync_done = std::function<void(net::kafka::sync_group_response)>;

  group_coordinator(partition_host& host, group_coordinator_options options);
  ~group_coordinator();  // answers every parked request NOT_COORDINATOR
  group_coordinator(const group_coordinator&) = delete;
  group_coordinator& operator=(const group_coordinator&) = delete;

  // Applies newly committed records (every replica). Called from the host's commit listener.
  void on_commit();
  // Timers: session expiry, rebalance deadlines, expiry of empty groups, checkpoints.
  void tick();
  // none when this replica coordinates now; else NOT_COORDINATOR or COORDINATOR_LOAD_IN_PROGRESS.
  int16_t status();

  void join(const net::kafka::join_group_request& m, int16_t version, const std::string& client_id,
            const std::string& client_host, join_done done);
  void sync(const net::kafka::sync_group_request& m, int16_t version, sync_done done);
  net::kafka::heartbeat_response heartbeat(const net::kafka::heartbeat_request& m);
  net::kafka::leave_group_response leave(const net::kafka::leave_group_request& m, int16_t version);
  // `partitions` are those that exist (the caller answered the others); `done` gets one error
  // per partition, in order, once the records commit.
  void commit_offsets(const net::kafka::offset_commit_request& m,
                      std::vector<topic_partition_key> partitions,
                      std::function<void(std::vector<int16_t>)> done);
  // Committed offsets of `group`; nullopt topics = every partition with an offset.
  std::map<topic_partition_key, committed_offset> offsets(
      const std::string& group, const std::optional<std::vector<topic_partition_key>>& only) const;
  net::kafka::describe_groups_response::described_group describe(const std::string& group);
  // Groups with their state and protocol type (ListGroups).
  struct listed_group {
    std::string id;
    std::string protocol_type;
    std::string state;
  };
  std::vector<listed_group> list();
  void delete_group(const std::string& group, std::function<void(int16_t)> done);
  void delete_offsets(const std::string& group, std::vector<topic_partition_key> partitions,
                      std::function<void(int16_t group_error, std::vector<int16_t>)> done);

  // Committed state (tests, the keel tool through DescribeGroups/OffsetFetch).
  const std::map<std::string, stored_group>& committed_groups() const { return committed_; }

 private:
  enum class phase { empty, preparing_rebalance, completing_rebalance, stable };
  struct member {
    std::string id;
    std::optional<std::string> instance_id;
    std::string client_id;
    std::string client_host;
    int32_t session_timeout_ms = 0;
    int32_t rebalance_timeout_ms = 0;
    std::string protocol_type;
    std::vector<std::pair<std::string, std::vector<std::byte>>> protocols;  // by preference
    std::vector<std::byte> assignment;
    int64_t last_heard_ms = 0;
    join_done awaiting_join;
    sync_done awaiting_sync;
    int16_t join_version = 0;
  };
  struct group {
    std::string id;
    phase state = phase::empty;
    std::string protocol_type;
    std::optional<std::string> protocol;
    int32_t generation = 0;
    std::string leader;
    std::map<std::string, member> members;
    std::map<std::string, int64_t> pending_members;  // KIP-394 ids handed out: id -> when
    int64_t rebalance_deadline_ms = 0;
    int64_t join_not_before_ms = 0;  // the initial rebalance delay of a group that was empty
    int64_t state_time_ms = 0;
  };

  int64_t now() const;
  group* live_group(const std::string& id);
  void drop_live_state(int16_t error);
  void prepare_rebalance(group& g);
  void maybe_complete_join(group& g);
  void remove_member(group& g, const std::string& member_id);
  void became_empty(group& g);
  void persist_group(group& g, std::function<void(bool ok)> done);
  stored_group to_stored(const group& g) const;
  // Proposes records as one batch; `done(ok)` at commit or failure.
  bool propose(std::vector<net::kafka::record> records, std::function<void(bool ok)> done);
  void apply(const group_record& r, int64_t offset);
  void maybe_checkpoint();
  void expire_empty_groups();
  static const char* state_name(phase p);
  std::set<std::string> subscribed_topics(const group& g) const;

  partition_host& host_;
  group_coordinator_options options_;
  // Committed state, every replica.
  std::map<std::string, stored_group> committed_;
  std::map<std::string, std::map<topic_partition_key, committed_offset>> offsets_;
  int64_t applied_ = -1;  // the last offset applied
  int64_t records_since_checkpoint_ = 0;
  int64_t last_checkpoint_end_ = -1;
  // Live state, the leader only.
  std::map<std::string, group> live_;
  int64_t loaded_term_ = -1;
  int64_t last_expiry_check_ms_ = 0;
  uint64_t next_member_serial_ = 0;
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

}  // namespace keel::server
