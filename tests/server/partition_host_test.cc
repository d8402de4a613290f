// Three Raft replicas on real engine logs (files, fsync through one io_ring), joined by an
// in-memory network in one thread: the raft core, the engine adapter, the state file and the
// Ready loop together. Elects, commits, survives restarts of followers and of the leader, and
// ends with identical logs.
#include "keel/server/partition_host.h"

#include "replica_cluster.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <deque>
#include <filesystem>

namespace keel::server {
namespace {

using cluster = replica_cluster<partition_host>;

std::unique_ptr<partition_host> open_host(int id, engine::log& log, engine::io_ring& ring,
                                          partition_host::message_sink sink,
                                          raft::random_source& random,
                                          const std::filesystem::path&) {
  partition_host_options o;
  o.core.group = raft::group_id(7);
  o.core.self = raft::node_id(static_cast<uint64_t>(id));
  o.core.election_ticks = 10;
  o.initial_config.voters = {raft::node_id(1), raft::node_id(2), raft::node_id(3)};
  auto h = partition_host::open(log, ring, o, std::move(sink), random);
  EXPECT_TRUE(h.ok()) << h.err().describe();
  return h ? std::move(h).value() : nullptr;
}

engine::log_config small_segments() {
  engine::log_config lc;
  lc.segment_bytes = 256 << 10;
  return lc;
}

raft::shared_bytes text(const std::string& s) {
  return raft::shared_bytes::copy_of(s.data(), s.size());
}

std::vector<std::string> data_payloads(engine::log& l, raft::offset upto) {
  std::vector<std::string> out;
  engine::offset at = l.log_start();
  while (at <= to_engine(upto)) {
    auto r = l.read(at, 1 << 20, to_engine(upto));
    EXPECT_TRUE(r.ok());
    if (!r.ok() || r->batches().empty()) break;
    for (auto& b : r->batches())
      if (b.header.type == static_cast<uint8_t>(raft::batch_type::data))
        out.emplace_back(reinterpret_cast<const char*>(b.payload().data()), b.payload().size());
    at = r->next_offset;
  }
  return out;
}

TEST(partition_host, three_replicas_on_engine_logs_commit_and_survive_restarts) {
  cluster c(std::filesystem::temp_directory_path() / ("keel-ph-" + std::to_string(::getpid())),
            small_segments(), open_host);
  ASSERT_TRUE(c.run_until([&] { return c.leader() != nullptr; }));

  std::vector<std::string> sent;
  int committed = 0;
  auto propose_some = [&](int n) {
    for (int k = 0; k < n; ++k) {
      partition_host* l = c.leader();
      ASSERT_NE(l, nullptr);
      const std::string p = "record " + std::to_string(sent.size());
      auto b = l->propose(raft::batch_type::data, 1, text(p), [&](const proposal_outcome& o) {
        EXPECT_TRUE(o.committed) << o.error;
        committed += o.committed;
      });
      ASSERT_TRUE(b.ok()) << b.err().describe();
      sent.push_back(p);
    }
  };
  propose_some(200);
  ASSERT_TRUE(c.run_until([&] { return committed == 200; }));

  // A follower restarts from its files and catches up.
  const int follower = c.follower_id();
  c.stop(follower);
  propose_some(50);
  ASSERT_TRUE(c.run_until([&] { return committed == 250; }));
  c.start(follower);

  // The leader restarts: another takes over, and the old one rejoins as a follower.
  const int old_leader = c.leader_id();
  c.stop(old_leader);
  ASSERT_TRUE(c.run_until([&] { return c.leader() != nullptr; }));
  c.start(old_leader);
  propose_some(50);
  ASSERT_TRUE(c.run_until([&] { return committed == 300; }));

  // Every replica ends with the same committed data, in order.
  const raft::offset hw = c.leader()->high_watermark();
  ASSERT_TRUE(c.run_until([&] {
    for (int i = 1; i <= 3; ++i)
      if (c.replica(i)->high_watermark() < hw) return false;
    return true;
  }));
  for (int i = 1; i <= 3; ++i)
    EXPECT_EQ(data_payloads(*c.log(i), hw), sent) << "node " << i;
}

// A follower's log bounds its page cache (partition_host_options::follower_cached_tail_bytes);
// the leader's keeps its own setting, and the two swap when leadership moves.
TEST(partition_host, followers_bound_their_page_cache_and_leaders_do_not) {
  constexpr uint64_t bound = 4 << 20;
  cluster c(
      std::filesystem::temp_directory_path() / ("keel-ph-cache-" + std::to_string(::getpid())),
      small_segments(),
      [](int id, engine::log& log, engine::io_ring& ring, partition_host::message_sink sink,
         raft::random_source& random, const std::filesystem::path&) {
        partition_host_options o;
        o.core.group = raft::group_id(7);
        o.core.self = raft::node_id(static_cast<uint64_t>(id));
        o.core.election_ticks = 10;
        o.initial_config.voters = {raft::node_id(1), raft::node_id(2), raft::node_id(3)};
        o.follower_cached_tail_bytes = bound;
        auto h = partition_host::open(log, ring, o, std::move(sink), random);
        EXPECT_TRUE(h.ok()) << h.err().describe();
        return h ? std::move(h).value() : nullptr;
      });
  auto settled = [&] {
    const int leader = c.leader_id();
    if (leader == 0) return false;
    for (int i = 1; i <= 3; ++i) {
      const uint64_t want = i == leader ? 0 : bound;
      if (c.log(i)->config().cached_tail_bytes != want) return false;
    }
    return true;
  };
  ASSERT_TRUE(c.run_until(settled));
  const int first = c.leader_id();
  const int next = first % 3 + 1;
  ASSERT_TRUE(c.leader()->transfer_leadership(raft::node_id(static_cast<uint64_t>(next))).ok());
  ASSERT_TRUE(c.run_until([&] { return c.leader_id() == next && settled(); }));
  EXPECT_EQ(c.log(first)->config().cached_tail_bytes, bound);
  EXPECT_EQ(c.log(next)->config().cached_tail_bytes, 0u);
}

}  // namespace
}  // namespace keel::server
