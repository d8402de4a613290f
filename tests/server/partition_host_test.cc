// Three Raft replicas on real engine logs (files, fsync through one io_ring), joined by an
// in-memory network in one thread: the raft core, the engine adapter, the state file and the
// Ready loop together. Elects, commits, survives restarts of followers and of the leader, and
// ends with identical logs.
#include "keel/server/partition_host.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <deque>
#include <filesystem>

namespace keel::server {
namespace {

class cluster {
 public:
  explicit cluster(std::filesystem::path dir) : dir_(std::move(dir)) {
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
    auto r = engine::io_ring::create();
    EXPECT_TRUE(r.ok());
    ring_ = std::move(r).value();
    for (int i = 1; i <= 3; ++i)
      start(i);
  }
  ~cluster() {
    for (int i = 1; i <= 3; ++i)
      stop(i);
    std::filesystem::remove_all(dir_);
  }

  void start(int i) {
    auto& n = nodes_[i];
    n.random = std::make_unique<seeded_random>(1000 + i);
    engine::log_config lc;
    lc.segment_bytes = 256 << 10;
    auto l = engine::log::open((dir_ / ("n" + std::to_string(i))).string(), lc, *ring_);
    ASSERT_TRUE(l.ok()) << l.err().describe();
    n.log = std::move(l).value();
    partition_host_options o;
    o.core.group = raft::group_id(7);
    o.core.self = raft::node_id(i);
    o.core.election_ticks = 10;
    o.initial_config.voters = {raft::node_id(1), raft::node_id(2), raft::node_id(3)};
    auto h = partition_host::open(
        *n.log, *ring_, o, [this](raft::message m) { network_.push_back(std::move(m)); },
        *n.random);
    ASSERT_TRUE(h.ok()) << h.err().describe();
    n.host = std::move(h).value();
  }

  void stop(int i) {
    auto& n = nodes_[i];
    n.host.reset();
    if (n.log) (void)n.log->close();
    n.log.reset();
  }

  // One round: deliver what is in flight, tick everyone, let the disk complete.
  void step(bool tick) {
    std::deque<raft::message> in_flight;
    in_flight.swap(network_);
    for (auto& m : in_flight) {
      auto& n = nodes_[static_cast<int>(m.to.value())];
      if (n.host) n.host->step(m);
    }
    if (tick)
      for (auto& [i, n] : nodes_)
        if (n.host) n.host->tick();
    ring_->poll();
  }

  partition_host* leader() {
    for (auto& [i, n] : nodes_)
      if (n.host && n.host->is_leader()) return n.host.get();
    return nullptr;
  }

  bool run_until(const std::function<bool()>& done, int rounds = 3000) {
    for (int r = 0; r < rounds; ++r) {
      if (done()) return true;
      step(r % 4 == 0);
      if (network_.empty()) ring_->wait();
    }
    return done();
  }

  struct node {
    std::unique_ptr<seeded_random> random;
    std::unique_ptr<engine::log> log;
    std::unique_ptr<partition_host> host;
  };
  std::filesystem::path dir_;
  std::unique_ptr<engine::io_ring> ring_;
  std::map<int, node> nodes_;
  std::deque<raft::message> network_;
};

raft::shared_bytes text(const std::string& s) {
  return raft::shared_bytes::copy_of(s.data(), s.size());
}

std::vector<std::string> data_payloads(engine::log& l, raft::offset upto) {
  std::vector<std::string> out;
  engine::offset at = l.log_start();
  while (at <= to_engine(upto)) {
    auto r = l.read(at, 1 << 20, to_engine(upto));
    EXPECT_TRUE(r.ok());
    if (!r.ok() || r->batches.empty()) break;
    for (auto& b : r->batches)
      if (b.header.type == static_cast<uint8_t>(raft::batch_type::data))
        out.emplace_back(reinterpret_cast<const char*>(b.payload().data()), b.payload().size());
    at = r->next_offset;
  }
  return out;
}

TEST(partition_host, three_replicas_on_engine_logs_commit_and_survive_restarts) {
  cluster c(std::filesystem::temp_directory_path() / ("keel-ph-" + std::to_string(::getpid())));
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
  int follower = 0;
  for (auto& [i, n] : c.nodes_)
    if (!n.host->is_leader()) follower = i;
  c.stop(follower);
  propose_some(50);
  ASSERT_TRUE(c.run_until([&] { return committed == 250; }));
  c.start(follower);

  // The leader restarts: another takes over, and the old one rejoins as a follower.
  int old_leader = 0;
  for (auto& [i, n] : c.nodes_)
    if (n.host && n.host->is_leader()) old_leader = i;
  c.stop(old_leader);
  ASSERT_TRUE(c.run_until([&] { return c.leader() != nullptr; }));
  c.start(old_leader);
  propose_some(50);
  ASSERT_TRUE(c.run_until([&] { return committed == 300; }));

  // Every replica ends with the same committed data, in order.
  const raft::offset hw = c.leader()->high_watermark();
  ASSERT_TRUE(c.run_until([&] {
    for (auto& [i, n] : c.nodes_)
      if (n.host->high_watermark() < hw) return false;
    return true;
  }));
  for (auto& [i, n] : c.nodes_) {
    EXPECT_EQ(data_payloads(*n.log, hw), sent) << "node " << i;
  }
}

}  // namespace
}  // namespace keel::server
