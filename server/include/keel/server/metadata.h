// metadata_state: the cluster's metadata, the state machine of the controller group (group 0).
//
// Every change is a command, committed through Raft and applied in log order on every broker, so
// each broker holds the same state at the same offset. apply() is deterministic: a command that
// does not fit the state (a topic that exists, an unknown broker) is rejected the same way
// everywhere and changes nothing. The leader checks and plans commands before proposing them
// (plan_topic), so rejections at apply are rare races, not the normal path.
//
// Command encoding (little-endian, wire.h): u8 command_type, then the fields below in order.
// Strings and byte strings are u32 length + bytes; lists are u32 count + items.
//   register_broker     i32 id, str kafka host, u16 kafka port, str rpc host, u16 rpc port,
//                       u32 shards
//   create_topic        str name, 16 bytes id, i16 replication factor, configs (str key, str
//                       value)*, partitions (replicas (i32 broker, u32 shard)*)*
//   delete_topic        str name
//   create_partitions   str name, new partitions (replicas (i32 broker, u32 shard)*)*
//   set_topic_config    str name, str key, str value ("" removes the key)
//   allocate_producer_ids  i32 broker, i64 block size
//   fence_broker        i32 id
//   unfence_broker      i32 id
//   metadata_barrier    i32 broker, u64 nonce
// Snapshot: u32 version (3), i64 next producer id, u64 next group id, brokers*, topics* (as the
// commands encode them, each followed by its group ids u64*), barriers (i32 broker, u64
// nonce)*. Version 2 has no barriers; version 1 also lacks each broker's u8 fenced (0 or 1)
// after it and restores every broker unfenced.
//
// A metadata barrier is how a restarted broker learns that its metadata has caught up with
// everything it had applied before it went down (a follower re-learns the commit index only
// from the leader). It proposes a barrier with a nonce of its own; the barrier's offset follows
// every entry committed before it, so once this broker's state shows its nonce, the state holds
// all of them and no replica on its disk that the state does not name can still be wanted.
//
// Liveness (KIP-631's broker fencing): a broker is fenced or not in this replicated state, so
// every broker answers "is broker B alive" the same way at the same offset. Only the controller
// leader proposes fence_broker (heartbeats lapsed for a session timeout) and unfence_broker (a
// heartbeat from a fenced, registered broker); see liveness.h. A broker registering for the first
// time starts unfenced (it is talking to the controller as it registers); a re-registration
// updates addresses and shards and keeps the flag, so a restarted broker is unfenced by its
// heartbeats, not by registering.
// Group 0 is the metadata group itself; partition groups are numbered from 1 in creation order.
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "keel/server/config.h"

namespace keel::server {

using topic_uuid = std::array<uint8_t, 16>;

enum class command_type : uint8_t {
  register_broker = 1,
  create_topic = 2,
  delete_topic = 3,
  create_partitions = 4,
  set_topic_config = 5,
  allocate_producer_ids = 6,
  fence_broker = 7,
  unfence_broker = 8,
  metadata_barrier = 9,
};

struct broker_info {
  int32_t id = 0;
  host_port kafka;
  host_port rpc;
  uint32_t shards = 1;
  // Set by fence_broker, cleared by unfence_broker; not part of register_broker.
  bool fenced = false;
  bool operator==(const broker_info&) const = default;
  // The registration's own fields (what register_broker carries), ignoring liveness.
  bool same_registration(const broker_info& o) const {
    return id == o.id && kafka == o.kafka && rpc == o.rpc && shards == o.shards;
  }
};

struct replica {
  int32_t broker = 0;
  uint32_t shard = 0;
  bool operator==(const replica&) const = default;
};

struct topic_info {
  std::string name;
  topic_uuid id{};
  int16_t replication_factor = 1;
  std::map<std::string, std::string> configs;
  std::vector<std::vector<replica>> partitions;  // [partition] -> replicas; [0] is preferred leader
  // [partition] -> the partition's Raft group id, assigned when the command applies (so every
  // broker assigns the same ones); not part of the create commands.
  std::vector<uint64_t> groups;
  bool operator==(const topic_info&) const = default;
};

struct producer_id_block {
  int64_t first = 0;
  int64_t size = 0;
};

// The outcome of applying one command.
struct apply_result {
  bool ok = true;
  std::string error;                           // why it was rejected
  std::optional<producer_id_block> allocated;  // for allocate_producer_ids
};

class metadata_state {
 public:
  apply_result apply(std::span<const std::byte> command);

  std::vector<std::byte> snapshot() const;
  // Replaces the state with a snapshot; false (state unchanged) when it does not decode.
  bool restore(std::span<const std::byte> snapshot);

  const std::map<int32_t, broker_info>& brokers() const { return brokers_; }
  const std::map<std::string, topic_info>& topics() const { return topics_; }
  const topic_info* topic(const std::string& name) const;
  // Registered and not fenced: what every broker calls alive.
  bool broker_unfenced(int32_t id) const;
  // The registered brokers that are not fenced, in id order.
  std::vector<int32_t> unfenced_brokers() const;
  int64_t next_producer_id() const { return next_producer_id_; }
  uint64_t next_group_id() const { return next_group_id_; }
  // The nonce of broker `id`'s last applied metadata barrier, 0 if none.
  uint64_t barrier_of(int32_t id) const;
  bool operator==(const metadata_state&) const = default;

  // The replication factor of a topic created without one (CreateTopics with -1, auto-created
  // topics, __consumer_offsets): `configured`, or the number of registered brokers if fewer (a
  // cluster smaller than the default), at least 1. Registered, not alive: a broker that is
  // fenced for a while does not shrink the topics created meanwhile for good. Like an explicit
  // one, it is refused (check_replication_factor) while fewer brokers are alive, as Kafka
  // refuses it with INVALID_REPLICATION_FACTOR.
  int16_t default_replication_factor(int16_t configured) const;
  // Empty when `replication_factor` replicas fit on the registered ones of `alive` (the
  // placement candidates); else why, naming the factor asked for, the alive brokers and the
  // registered ones that are not alive (fenced).
  std::string check_replication_factor(int16_t replication_factor,
                                       const std::vector<int32_t>& alive) const;

  // Leader side: replica sets for `partitions` new partitions of `replication_factor` replicas
  // over `brokers` (live ones), spread evenly over brokers and their shards and leaders rotating.
  // nullopt with `error` set when impossible (check_replication_factor's error for too few).
  std::optional<std::vector<std::vector<replica>>> plan_partitions(
      int32_t partitions, int16_t replication_factor, const std::vector<int32_t>& brokers,
      std::string& error) const;

 private:
  std::map<int32_t, broker_info> brokers_;
  std::map<std::string, topic_info> topics_;
  int64_t next_producer_id_ = 1000;
  uint64_t next_group_id_ = 1;
  std::map<int32_t, uint64_t> barriers_;  // broker -> nonce of its last barrier
};

// Command builders (leader side).
std::vector<std::byte> encode_register_broker(const broker_info& b);
std::vector<std::byte> encode_create_topic(const topic_info& t);
std::vector<std::byte> encode_delete_topic(const std::string& name);
std::vector<std::byte> encode_create_partitions(const std::string& name,
                                                const std::vector<std::vector<replica>>& added);
std::vector<std::byte> encode_set_topic_config(const std::string& name, const std::string& key,
                                               const std::string& value);
std::vector<std::byte> encode_allocate_producer_ids(int32_t broker, int64_t block_size);
std::vector<std::byte> encode_fence_broker(int32_t id);
std::vector<std::byte> encode_unfence_broker(int32_t id);
// Broker side: a barrier for broker `id`; `nonce` must not be 0.
std::vector<std::byte> encode_metadata_barrier(int32_t id, uint64_t nonce);

// Topic names as Kafka allows them: 1-249 characters of [a-zA-Z0-9._-], not "." or "..".
bool valid_topic_name(const std::string& name);

}  // namespace keel::server
