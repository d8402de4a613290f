// The admin protocol: what the keel tool (and tests, and later the Kafka front end's admin
// paths) ask a broker over its RPC port, and what brokers ask the controller. Every message is
// one frame (frame.h) whose type is an admin_type; payloads use wire.h, start with a u64
// correlation id, and are decoded with bounds on every count and length.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

namespace keel::net {

enum class admin_type : uint16_t {
  describe_cluster_request = 64,
  describe_cluster_response = 65,
  create_topic_request = 66,
  delete_topic_request = 67,
  topic_response = 68,  // answers create and delete
  produce_request = 69,
  produce_response = 70,
  fetch_request = 71,
  fetch_response = 72,
};

enum class admin_error : int16_t {
  none = 0,
  not_leader = 1,       // this broker does not lead the partition (leader_hint says who)
  unknown_topic = 2,    // no such topic or partition
  invalid_request = 3,  // malformed or out of range
  topic_exists = 4,
  not_controller = 5,  // no controller leader is known yet; retry
  timed_out = 6,
  storage_error = 7,
  offset_out_of_range = 8,
  not_enough_brokers = 9,  // the replication factor exceeds the live brokers
  busy = 10,               // the partition has as much in flight as it takes; retry shortly
};
const char* to_string(admin_error e);

struct broker_status {
  int32_t id = 0;
  std::string kafka_host;
  uint16_t kafka_port = 0;
  std::string rpc_host;
  uint16_t rpc_port = 0;
  // Not fenced in the replicated cluster metadata (the controller fences a broker whose
  // heartbeats lapsed), so every broker answers the same.
  bool alive = false;
};

struct partition_status {
  int32_t partition = 0;
  uint64_t group = 0;
  std::vector<int32_t> replicas;
  int32_t leader = -1;  // -1: unknown
  int64_t leader_term = 0;
  int64_t high_watermark = -1;  // as last reported by the leader
};

struct topic_status {
  std::string name;
  std::vector<partition_status> partitions;
};

struct describe_cluster_response {
  uint64_t correlation = 0;
  int32_t controller = -1;
  std::vector<broker_status> brokers;
  std::vector<topic_status> topics;
};

struct create_topic_request {
  uint64_t correlation = 0;
  std::string name;
  int32_t partitions = 1;
  int16_t replication_factor = 1;
};

struct topic_response {
  uint64_t correlation = 0;
  admin_error error = admin_error::none;
  std::string message;
};

struct produce_request {
  uint64_t correlation = 0;
  std::string topic;
  int32_t partition = 0;
  int16_t acks = -1;  // -1: after the Raft commit; 1: after the leader's write; 0: no answer
  uint32_t offset_count = 1;
  std::vector<std::byte> payload;
};

struct produce_response {
  uint64_t correlation = 0;
  admin_error error = admin_error::none;
  int32_t leader_hint = -1;
  int64_t base_offset = -1;
};

struct fetch_request {
  uint64_t correlation = 0;
  std::string topic;
  int32_t partition = 0;
  int64_t offset = 0;
  uint32_t max_bytes = 1 << 20;
};

struct fetched_batch {
  int64_t base_offset = 0;
  int64_t last_offset = 0;
  int64_t term = 0;
  uint8_t type = 0;
  std::vector<std::byte> payload;
};

struct fetch_response {
  uint64_t correlation = 0;
  admin_error error = admin_error::none;
  int32_t leader_hint = -1;
  int64_t high_watermark = -1;
  int64_t log_start = 0;
  std::vector<fetched_batch> batches;
};

std::vector<std::byte> encode(uint64_t correlation);  // describe_cluster_request
std::vector<std::byte> encode(const describe_cluster_response& m);
std::vector<std::byte> encode(const create_topic_request& m);
std::vector<std::byte> encode_delete_topic(uint64_t correlation, const std::string& name);
std::vector<std::byte> encode(const topic_response& m);
std::vector<std::byte> encode(const produce_request& m);
std::vector<std::byte> encode(const produce_response& m);
std::vector<std::byte> encode(const fetch_request& m);
std::vector<std::byte> encode(const fetch_response& m);

std::optional<uint64_t> decode_correlation(std::span<const std::byte> bytes);
std::optional<describe_cluster_response> decode_describe_cluster_response(
    std::span<const std::byte> b);
std::optional<create_topic_request> decode_create_topic_request(std::span<const std::byte> b);
std::optional<std::pair<uint64_t, std::string>> decode_delete_topic_request(
    std::span<const std::byte> b);
std::optional<topic_response> decode_topic_response(std::span<const std::byte> b);
std::optional<produce_request> decode_produce_request(std::span<const std::byte> b);
std::optional<produce_response> decode_produce_response(std::span<const std::byte> b);
std::optional<fetch_request> decode_fetch_request(std::span<const std::byte> b);
std::optional<fetch_response> decode_fetch_response(std::span<const std::byte> b);

}  // namespace keel::net
