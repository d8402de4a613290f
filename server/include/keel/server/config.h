// broker_config: everything a keel-broker is told at start-up, from flags and an optional file.
//
// Flags are `--name value` (or `--name=value`); the file named by `--config` holds `name = value`
// lines with the same names (`#` starts a comment). Flags override the file. Every bad or
// contradictory setting stops start-up with a message naming the setting.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "keel/engine/log_config.h"

namespace keel::server {

struct host_port {
  std::string host;
  uint16_t port = 0;
  std::string to_string() const { return host + ":" + std::to_string(port); }
  bool operator==(const host_port&) const = default;
};

struct seed {
  int32_t node_id = 0;
  host_port rpc;
};

struct broker_config {
  int32_t node_id = -1;
  host_port kafka_listen{"127.0.0.1", 9092};
  host_port rpc_listen{"127.0.0.1", 19092};
  std::optional<host_port> kafka_advertised;  // defaults to kafka_listen
  std::optional<host_port> rpc_advertised;    // defaults to rpc_listen
  std::string data_dir;
  std::vector<seed> seeds;  // the initial controller voters
  unsigned shards = 0;      // 0: as many as the data dir holds, one per core for a new one
  engine::flush_policy flush = engine::flush_policy::every_append();
  uint64_t segment_bytes = 128ull << 20;
  int64_t segment_ms = 7ll * 24 * 3600 * 1000;
  int64_t retention_ms = 7ll * 24 * 3600 * 1000;
  int64_t retention_bytes = -1;
  int64_t retention_check_interval_ms = 300000;  // log.retention.check.interval.ms
  // The controller snapshots the metadata every this many applied offsets and drops the log
  // before it (controller.h).
  int64_t metadata_snapshot_every = 4096;
  // Durable bytes of a follower replica's log tail kept in the page cache (partition_host.h).
  uint64_t follower_cached_tail_bytes = 16ull << 20;
  int32_t default_partitions = 1;
  int16_t default_replication_factor = 3;
  int tick_ms = 10;
  int election_ticks = 100;  // 1 s at the default tick
  bool auto_create_topics = true;
  int32_t message_max_bytes = 1048588;      // a batch's largest size (topic: max.message.bytes)
  uint32_t max_request_bytes = 100u << 20;  // socket.request.max.bytes
  int32_t offsets_topic_partitions = 8;     // partitions of __consumer_offsets
  int32_t group_initial_rebalance_delay_ms = 300;
  int32_t group_min_session_timeout_ms = 1000;
  int32_t group_max_session_timeout_ms = 1800000;
  int64_t offsets_retention_minutes = 7 * 24 * 60;
  // Broker liveness (KIP-631): every broker heartbeats to the controller leader this often, and
  // the leader fences a broker silent for the session timeout. Kafka's defaults are 2 s / 9 s;
  // ours are shorter so a dead broker leaves the Metadata broker list soon after its partitions
  // have elected new leaders (a few election timeouts).
  int32_t broker_heartbeat_interval_ms = 500;
  int32_t broker_session_timeout_ms = 3000;
  // Fault injection for tests, not for production (left out of usage()): when true, the broker
  // sends no heartbeats while the file <data-dir>/fault-injection.pause-heartbeats exists, as if
  // cut off from the controller leader's heartbeat handling while still reaching its peers.
  bool fault_injection_pause_heartbeats = false;

  host_port kafka_address() const { return kafka_advertised.value_or(kafka_listen); }
  host_port rpc_address() const { return rpc_advertised.value_or(rpc_listen); }
  // Empty when usable, else "setting: why".
  std::string validate() const;
};

// Parses argv (without argv[0]). On error returns nullopt and sets `error` to a message that
// names the setting.
std::optional<broker_config> parse_broker_args(const std::vector<std::string>& args,
                                               std::string& error);
std::optional<host_port> parse_host_port(const std::string& text);
std::optional<std::vector<seed>> parse_seeds(const std::string& text);
std::optional<engine::flush_policy> parse_flush_policy(const std::string& text);
std::string usage();

// Claims the data directory for this node id: writes <data_dir>/node.id on first start; refuses
// a directory that belongs to another node. Returns an empty string on success.
std::string claim_data_dir(const std::string& data_dir, int32_t node_id);

// Settles `config.shards` against the data dir's shard-<k> directories (each shard's logs, and
// its partitions' replicas assigned to shard k). Unset (0): as many as the data dir holds, or one
// per core for a new one. Set lower than a shard that holds logs: refused (empty string on
// success), since that shard's replicas would start empty and, if every broker did it at once,
// their data would be lost.
std::string settle_shards(broker_config& config);

}  // namespace keel::server
