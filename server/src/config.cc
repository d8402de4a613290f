#include "keel/server/config.h"

#include <fcntl.h>
#include <unistd.h>

#include <charconv>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <thread>

namespace keel::server {
namespace {

std::string trim(const std::string& s) {
  const auto b = s.find_first_not_of(" \t\r");
  if (b == std::string::npos) return {};
  const auto e = s.find_last_not_of(" \t\r");
  return s.substr(b, e - b + 1);
}

template <class T>
std::optional<T> parse_int(const std::string& s) {
  T v{};
  const auto* end = s.data() + s.size();
  auto [p, ec] = std::from_chars(s.data(), end, v);
  if (ec != std::errc() || p != end || s.empty()) return std::nullopt;
  return v;
}

// Sets one named setting; returns "" or an error naming it.
std::string apply(broker_config& c, const std::string& name, const std::string& value) {
  auto bad = [&](const std::string& why) { return name + ": " + why + " (got '" + value + "')"; };
  auto integer = [&](auto& field, auto lo, auto hi) -> std::string {
    using T = std::remove_reference_t<decltype(field)>;
    auto v = parse_int<int64_t>(value);
    if (!v || *v < static_cast<int64_t>(lo) || *v > static_cast<int64_t>(hi))
      return bad("expected an integer in [" + std::to_string(lo) + ", " + std::to_string(hi) + "]");
    field = static_cast<T>(*v);
    return {};
  };
  auto address = [&](host_port& field) -> std::string {
    auto hp = parse_host_port(value);
    if (!hp) return bad("expected host:port");
    field = *hp;
    return {};
  };
  if (name == "node-id") return integer(c.node_id, 0, INT32_MAX);
  if (name == "kafka-listen") return address(c.kafka_listen);
  if (name == "rpc-listen") return address(c.rpc_listen);
  if (name == "kafka-advertised") {
    c.kafka_advertised.emplace();
    return address(*c.kafka_advertised);
  }
  if (name == "rpc-advertised") {
    c.rpc_advertised.emplace();
    return address(*c.rpc_advertised);
  }
  if (name == "data-dir") {
    if (value.empty()) return bad("expected a directory");
    c.data_dir = value;
    return {};
  }
  if (name == "seeds") {
    auto s = parse_seeds(value);
    if (!s) return bad("expected id@host:port[,id@host:port...]");
    c.seeds = *s;
    return {};
  }
  if (name == "shards") return integer(c.shards, 0, 256);
  if (name == "flush") {
    auto f = parse_flush_policy(value);
    if (!f) return bad("expected every-append, every-bytes:N, every-ms:T or never");
    c.flush = *f;
    return {};
  }
  if (name == "segment-bytes") return integer(c.segment_bytes, 1 << 20, 1ll << 31);
  if (name == "segment-ms") return integer(c.segment_ms, 1000, INT64_MAX);
  if (name == "retention-ms") return integer(c.retention_ms, -1, INT64_MAX);
  if (name == "retention-bytes") return integer(c.retention_bytes, -1, INT64_MAX);
  if (name == "retention-check-interval-ms")
    return integer(c.retention_check_interval_ms, 100, INT64_MAX);
  if (name == "metadata-snapshot-every") return integer(c.metadata_snapshot_every, 2, INT64_MAX);
  if (name == "follower-cached-tail-bytes")
    return integer(c.follower_cached_tail_bytes, 0, 1ll << 40);
  if (name == "default-partitions") return integer(c.default_partitions, 1, 100000);
  if (name == "default-replication-factor") return integer(c.default_replication_factor, 1, 32);
  if (name == "tick-ms") return integer(c.tick_ms, 1, 1000);
  if (name == "election-ticks") return integer(c.election_ticks, 3, 10000);
  if (name == "message-max-bytes") return integer(c.message_max_bytes, 1024, 1 << 30);
  if (name == "max-request-bytes") return integer(c.max_request_bytes, 1024, 1u << 31);
  if (name == "offsets-topic-partitions") return integer(c.offsets_topic_partitions, 1, 1000);
  if (name == "group-initial-rebalance-delay-ms")
    return integer(c.group_initial_rebalance_delay_ms, 0, 600000);
  if (name == "group-min-session-timeout-ms")
    return integer(c.group_min_session_timeout_ms, 1, 3600000);
  if (name == "group-max-session-timeout-ms")
    return integer(c.group_max_session_timeout_ms, 1, 3600000);
  if (name == "offsets-retention-minutes")
    return integer(c.offsets_retention_minutes, 1, 10ll * 365 * 24 * 60);
  if (name == "broker-heartbeat-interval-ms")
    return integer(c.broker_heartbeat_interval_ms, 10, 60000);
  if (name == "broker-session-timeout-ms")
    return integer(c.broker_session_timeout_ms, 100, 3600000);
  if (name == "fault-injection-pause-heartbeats") {
    if (value != "true" && value != "false") return bad("expected true or false");
    c.fault_injection_pause_heartbeats = value == "true";
    return {};
  }
  if (name == "auto-create-topics") {
    if (value != "true" && value != "false") return bad("expected true or false");
    c.auto_create_topics = value == "true";
    return {};
  }
  return name + ": unknown setting";
}

}  // namespace

std::optional<host_port> parse_host_port(const std::string& text) {
  const auto colon = text.rfind(':');
  if (colon == std::string::npos || colon == 0) return std::nullopt;
  auto port = parse_int<uint32_t>(text.substr(colon + 1));
  if (!port || *port == 0 || *port > 65535) return std::nullopt;
  return host_port{text.substr(0, colon), static_cast<uint16_t>(*port)};
}

std::optional<std::vector<seed>> parse_seeds(const std::string& text) {
  std::vector<seed> out;
  std::stringstream ss(text);
  std::string item;
  while (std::getline(ss, item, ',')) {
    item = trim(item);
    const auto at = item.find('@');
    if (at == std::string::npos) return std::nullopt;
    auto id = parse_int<int32_t>(item.substr(0, at));
    auto hp = parse_host_port(item.substr(at + 1));
    if (!id || *id < 0 || !hp) return std::nullopt;
    out.push_back({*id, *hp});
  }
  if (out.empty()) return std::nullopt;
  return out;
}

std::optional<engine::flush_policy> parse_flush_policy(const std::string& text) {
  if (text == "every-append") return engine::flush_policy::every_append();
  if (text == "never") return engine::flush_policy::none();
  if (text.rfind("every-bytes:", 0) == 0) {
    auto n = parse_int<uint64_t>(text.substr(12));
    if (!n || *n == 0) return std::nullopt;
    return engine::flush_policy::every_n_bytes(*n);
  }
  if (text.rfind("every-ms:", 0) == 0) {
    auto n = parse_int<int64_t>(text.substr(9));
    if (!n || *n <= 0) return std::nullopt;
    return engine::flush_policy::every_ms(*n);
  }
  return std::nullopt;
}

std::string broker_config::validate() const {
  if (node_id < 0) return "node-id: required";
  if (data_dir.empty()) return "data-dir: required";
  if (seeds.empty()) return "seeds: required (the initial controller voters, id@host:port,...)";
  std::set<int32_t> ids;
  for (const seed& s : seeds) {
    if (!ids.insert(s.node_id).second)
      return "seeds: node " + std::to_string(s.node_id) + " is listed twice";
    if (s.node_id == node_id && !(s.rpc == rpc_address()) && !(s.rpc == rpc_listen))
      return "seeds: this node (" + std::to_string(node_id) + ") is listed at " +
             s.rpc.to_string() + " but its rpc address is " + rpc_address().to_string();
  }
  if (kafka_listen == rpc_listen) return "rpc-listen: the same address as kafka-listen";
  if (kafka_listen.port == rpc_listen.port &&
      (kafka_listen.host == "0.0.0.0" || rpc_listen.host == "0.0.0.0"))
    return "rpc-listen: port " + std::to_string(rpc_listen.port) + " is also kafka-listen's";
  if (group_min_session_timeout_ms > group_max_session_timeout_ms)
    return "group-min-session-timeout-ms: above group-max-session-timeout-ms";
  // A session must span a few heartbeats, or one late heartbeat fences a live broker.
  if (broker_session_timeout_ms < 2 * broker_heartbeat_interval_ms)
    return "broker-session-timeout-ms: " + std::to_string(broker_session_timeout_ms) +
           " is less than twice broker-heartbeat-interval-ms (" +
           std::to_string(broker_heartbeat_interval_ms) + ")";
  // The replication factor may exceed the seeds: brokers that are not voters join later, and a
  // topic asking for more replicas than live brokers is refused when it is created.
  return {};
}

std::optional<broker_config> parse_broker_args(const std::vector<std::string>& args,
                                               std::string& error) {
  std::vector<std::pair<std::string, std::string>> flags;
  std::optional<std::string> config_file;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a.rfind("--", 0) != 0) {
      error = "unexpected argument '" + a + "'";
      return std::nullopt;
    }
    std::string name = a.substr(2), value;
    if (const auto eq = name.find('='); eq != std::string::npos) {
      value = name.substr(eq + 1);
      name = name.substr(0, eq);
    } else if (i + 1 < args.size()) {
      value = args[++i];
    } else {
      error = name + ": missing value";
      return std::nullopt;
    }
    if (name == "config")
      config_file = value;
    else
      flags.emplace_back(name, value);
  }
  broker_config c;
  if (config_file) {
    std::ifstream in(*config_file);
    if (!in) {
      error = "config: cannot read '" + *config_file + "'";
      return std::nullopt;
    }
    std::string line;
    int number = 0;
    while (std::getline(in, line)) {
      ++number;
      line = trim(line.substr(0, line.find('#')));
      if (line.empty()) continue;
      const auto eq = line.find('=');
      if (eq == std::string::npos) {
        error = "config: line " + std::to_string(number) + " of " + *config_file +
                " is not name = value";
        return std::nullopt;
      }
      if (auto e = apply(c, trim(line.substr(0, eq)), trim(line.substr(eq + 1))); !e.empty()) {
        error = e + " in " + *config_file + " line " + std::to_string(number);
        return std::nullopt;
      }
    }
  }
  for (const auto& [name, value] : flags) {
    if (auto e = apply(c, name, value); !e.empty()) {
      error = e;
      return std::nullopt;
    }
  }
  if (auto e = c.validate(); !e.empty()) {
    error = e;
    return std::nullopt;
  }
  return c;
}

std::string settle_shards(broker_config& c) {
  // The shard directories present, and the highest one holding anything.
  unsigned present = 0, in_use = 0;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(c.data_dir, ec)) {
    const std::string name = e.path().filename().string();
    if (name.rfind("shard-", 0) != 0 || !e.is_directory(ec)) continue;
    auto k = parse_int<unsigned>(name.substr(6));
    if (!k || *k >= 256) continue;
    present = std::max(present, *k + 1);
    if (!std::filesystem::is_empty(e.path(), ec) && !ec) in_use = std::max(in_use, *k + 1);
  }
  if (ec) return "data-dir: cannot list '" + c.data_dir + "': " + ec.message();
  if (c.shards == 0) {
    c.shards = present > 0 ? present : std::max(1u, std::thread::hardware_concurrency());
    return {};
  }
  if (c.shards < in_use)
    return "shards: data-dir '" + c.data_dir + "' holds the logs of shard " +
           std::to_string(in_use - 1) + ", but --shards is " + std::to_string(c.shards) +
           ": the replicas of shards beyond it would start empty; start with --shards " +
           std::to_string(in_use) + " or more";
  return {};
}

std::string claim_data_dir(const std::string& data_dir, int32_t node_id) {
  std::error_code ec;
  std::filesystem::create_directories(data_dir, ec);
  if (ec) return "data-dir: cannot create '" + data_dir + "': " + ec.message();
  const std::string path = data_dir + "/node.id";
  std::ifstream in(path);
  if (in) {
    std::string text;
    std::getline(in, text);
    auto id = parse_int<int32_t>(trim(text));
    if (!id) return "data-dir: " + path + " is damaged ('" + text + "')";
    if (*id != node_id)
      return "data-dir: '" + data_dir + "' belongs to node " + std::to_string(*id) + ", not node " +
             std::to_string(node_id);
    return {};
  }
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << node_id << "\n";
    if (!out) return "data-dir: cannot write " + tmp;
  }
  const int fd = ::open(tmp.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd >= 0) {
    ::fsync(fd);
    ::close(fd);
  }
  std::filesystem::rename(tmp, path, ec);
  if (ec) return "data-dir: cannot write " + path + ": " + ec.message();
  const int dfd = ::open(data_dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
  return {};
}

std::string usage() {
  return R"(usage: keel-broker --node-id N --data-dir DIR --seeds ID@HOST:PORT[,...] [options]
  --config FILE                    name = value lines with the names below (flags override)
  --kafka-listen HOST:PORT         Kafka listener (127.0.0.1:9092)
  --rpc-listen HOST:PORT           inter-broker listener (127.0.0.1:19092)
  --kafka-advertised HOST:PORT     address clients are told (the listener)
  --rpc-advertised HOST:PORT       address brokers are told (the listener)
  --shards N                       shard threads (as many as the data dir holds; one per
                                   core for a new one; never fewer than hold logs)
  --flush POLICY                   every-append | every-bytes:N | every-ms:T | never
  --segment-bytes N                segment size (134217728)
  --segment-ms N                   segment age before a roll (604800000)
  --retention-ms N                 default retention by age, -1 = forever (604800000)
  --retention-bytes N              default retention by size, -1 = none
  --retention-check-interval-ms N  how often partitions apply retention (300000)
  --metadata-snapshot-every N      snapshot the cluster metadata every N offsets (4096)
  --follower-cached-tail-bytes N   durable bytes of a follower replica's log tail kept in the
                                   page cache; older ones are dropped, 0 = no bound (16777216)
  --default-partitions N           partitions of an auto-created topic (1)
  --default-replication-factor N   replicas of a new topic (3, or the registered broker count
                                   if fewer; refused while fewer brokers are alive)
  --tick-ms N                      Raft tick (10)
  --election-ticks N               election timeout in ticks (100)
  --auto-create-topics true|false  create topics on first use (true)
  --message-max-bytes N            largest record batch (1048588; topic: max.message.bytes)
  --max-request-bytes N            largest Kafka request (104857600)
  --offsets-topic-partitions N     partitions of __consumer_offsets (8)
  --group-initial-rebalance-delay-ms N   wait for more members of a new group (300)
  --group-min-session-timeout-ms N / --group-max-session-timeout-ms N   (1000 / 1800000)
  --offsets-retention-minutes N    empty groups' offsets expire after this (10080)
  --broker-heartbeat-interval-ms N heartbeats to the controller this often (500)
  --broker-session-timeout-ms N    the controller fences a broker silent this long (3000)
)";
}

}  // namespace keel::server
