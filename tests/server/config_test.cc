// Broker configuration: flags, a config file, and errors that name the setting.
#include "keel/server/config.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <thread>

namespace keel::server {
namespace {

std::optional<broker_config> parse(std::vector<std::string> args, std::string& error) {
  return parse_broker_args(args, error);
}

TEST(broker_config, flags_parse_and_defaults_fill_in) {
  std::string error;
  auto c = parse(
      {"--node-id", "2", "--data-dir", "/tmp/x", "--seeds",
       "1@127.0.0.1:19092,2@127.0.0.1:19093,3@127.0.0.1:19094", "--rpc-listen", "127.0.0.1:19093",
       "--kafka-listen=127.0.0.1:9093", "--flush", "every-ms:50", "--shards", "2"},
      error);
  ASSERT_TRUE(c) << error;
  EXPECT_EQ(c->node_id, 2);
  EXPECT_EQ(c->seeds.size(), 3u);
  EXPECT_EQ(c->seeds[2].rpc.port, 19094);
  EXPECT_EQ(c->kafka_address().to_string(), "127.0.0.1:9093");
  EXPECT_EQ(c->flush.kind, engine::flush_policy::mode::every_interval);
  EXPECT_EQ(c->flush.interval_ms, 50);
  EXPECT_EQ(c->shards, 2u);
  EXPECT_EQ(c->default_replication_factor, 3);
  EXPECT_EQ(c->broker_heartbeat_interval_ms, 500);
  EXPECT_EQ(c->broker_session_timeout_ms, 3000);
}

TEST(broker_config, every_bad_setting_is_named) {
  const std::vector<std::pair<std::vector<std::string>, std::string>> cases = {
      {{"--data-dir", "/d", "--seeds", "1@h:1"}, "node-id"},
      {{"--node-id", "1", "--seeds", "1@h:1"}, "data-dir"},
      {{"--node-id", "1", "--data-dir", "/d"}, "seeds"},
      {{"--node-id", "x", "--data-dir", "/d", "--seeds", "1@h:1"}, "node-id"},
      {{"--node-id", "1", "--data-dir", "/d", "--seeds", "1@h"}, "seeds"},
      {{"--node-id", "1", "--data-dir", "/d", "--seeds", "1@h:1,1@h:2"}, "seeds"},
      {{"--node-id", "1", "--data-dir", "/d", "--seeds", "2@h:1", "--flush", "sometimes"}, "flush"},
      {{"--node-id", "1", "--data-dir", "/d", "--seeds", "2@h:1", "--shards", "-3"}, "shards"},
      {{"--node-id", "1", "--data-dir", "/d", "--seeds", "2@h:1", "--kafka-listen", "h:99999"},
       "kafka-listen"},
      {{"--node-id", "1", "--data-dir", "/d", "--seeds", "2@h:1", "--colour", "blue"}, "colour"},
      {{"--node-id", "1", "--data-dir", "/d", "--seeds", "2@h:1", "--rpc-listen", "127.0.0.1:9092"},
       "rpc-listen"},
      {{"--node-id", "1", "--data-dir", "/d", "--seeds", "1@10.0.0.1:5"}, "seeds"},
      {{"--node-id"}, "node-id"},
      {{"--node-id", "1", "--data-dir", "/d", "--seeds", "2@h:1", "--broker-session-timeout-ms",
        "5"},
       "broker-session-timeout-ms"},
      {{"--node-id", "1", "--data-dir", "/d", "--seeds", "2@h:1", "--broker-heartbeat-interval-ms",
        "0"},
       "broker-heartbeat-interval-ms"},
      // A session shorter than two heartbeats would fence live brokers.
      {{"--node-id", "1", "--data-dir", "/d", "--seeds", "2@h:1", "--broker-heartbeat-interval-ms",
        "1000", "--broker-session-timeout-ms", "1500"},
       "broker-session-timeout-ms"},
  };
  for (const auto& [args, setting] : cases) {
    std::string error;
    EXPECT_FALSE(parse(args, error));
    EXPECT_EQ(error.rfind(setting + ":", 0), 0u)
        << "error '" << error << "' should name " << setting;
  }
}

TEST(broker_config, a_file_is_read_and_flags_override_it) {
  const auto path =
      std::filesystem::temp_directory_path() / ("keel-config-" + std::to_string(::getpid()));
  {
    std::ofstream f(path);
    f << "# a broker\nnode-id = 4\ndata-dir = /var/keel\nseeds = 4@127.0.0.1:19092\n"
         "segment-bytes = 1048576   # small\n";
  }
  std::string error;
  auto c = parse({"--config", path.string(), "--segment-bytes", "2097152"}, error);
  ASSERT_TRUE(c) << error;
  EXPECT_EQ(c->node_id, 4);
  EXPECT_EQ(c->segment_bytes, 2u << 20);
  {
    std::ofstream f(path);
    f << "node-id = 4\nretention-ms = soon\n";
  }
  EXPECT_FALSE(parse({"--config", path.string()}, error));
  EXPECT_NE(error.find("retention-ms"), std::string::npos);
  EXPECT_NE(error.find("line 2"), std::string::npos);
  std::filesystem::remove(path);
}

TEST(broker_config, the_fault_injection_hook_is_off_unless_asked_for_and_not_advertised) {
  std::string error;
  const std::vector<std::string> base = {"--node-id", "1", "--data-dir", "/d", "--seeds", "2@h:1"};
  auto c = parse(base, error);
  ASSERT_TRUE(c) << error;
  EXPECT_FALSE(c->fault_injection_pause_heartbeats);
  auto args = base;
  args.insert(args.end(), {"--fault-injection-pause-heartbeats", "true"});
  c = parse(args, error);
  ASSERT_TRUE(c) << error;
  EXPECT_TRUE(c->fault_injection_pause_heartbeats);
  args.back() = "yes";
  EXPECT_FALSE(parse(args, error));
  EXPECT_EQ(error.rfind("fault-injection-pause-heartbeats:", 0), 0u) << error;
  // A test hook: usable, not offered to operators.
  EXPECT_EQ(usage().find("fault-injection"), std::string::npos);
}

TEST(broker_config, a_data_dir_of_another_node_is_refused) {
  const auto dir =
      std::filesystem::temp_directory_path() / ("keel-claim-" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  EXPECT_EQ(claim_data_dir(dir.string(), 5), "");
  EXPECT_EQ(claim_data_dir(dir.string(), 5), "");
  const std::string e = claim_data_dir(dir.string(), 6);
  EXPECT_NE(e.find("belongs to node 5"), std::string::npos) << e;
  std::filesystem::remove_all(dir);
}

TEST(broker_config, shards_follow_the_data_dir_and_never_drop_a_shard_that_holds_logs) {
  namespace fs = std::filesystem;
  const auto dir = fs::temp_directory_path() / ("keel-shards-" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  auto settled = [&](unsigned asked, std::string& error) {
    broker_config c;
    c.data_dir = dir.string();
    c.shards = asked;
    error = settle_shards(c);
    return c.shards;
  };
  std::string e;
  // A new data dir: one shard per core unless asked.
  EXPECT_EQ(settled(0, e), std::max(1u, std::thread::hardware_concurrency()));
  EXPECT_EQ(e, "");
  EXPECT_EQ(settled(3, e), 3u);
  // Three shard directories, the last one holding a log: unset means three, fewer is refused
  // with the count that would do, more is fine.
  for (int k = 0; k < 3; ++k)
    fs::create_directories(dir / ("shard-" + std::to_string(k)));
  fs::create_directories(dir / "shard-2" / "orders-0");
  EXPECT_EQ(settled(0, e), 3u);
  EXPECT_EQ(e, "");
  settled(2, e);
  EXPECT_NE(e.find("shards: "), std::string::npos) << e;
  EXPECT_NE(e.find("holds the logs of shard 2"), std::string::npos) << e;
  EXPECT_NE(e.find("--shards 3 or more"), std::string::npos) << e;
  EXPECT_EQ(settled(4, e), 4u);
  EXPECT_EQ(e, "");
  // Empty shard directories beyond the count hold nothing to lose.
  fs::remove_all(dir / "shard-2" / "orders-0");
  EXPECT_EQ(settled(1, e), 1u);
  EXPECT_EQ(e, "");
  fs::remove_all(dir);
}

}  // namespace
}  // namespace keel::server
