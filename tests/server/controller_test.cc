// The metadata group: commands apply identically on every replica, snapshots bound the log, a
// replica that fell behind the leader's log start is brought back by a snapshot, and a restart
// rebuilds the state from the snapshot plus the log after it.
#include "keel/server/controller.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <deque>
#include <filesystem>

namespace keel::server {
namespace {

class metadata_cluster {
 public:
  explicit metadata_cluster(std::filesystem::path dir) : dir_(std::move(dir)) {
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
    auto r = engine::io_ring::create();
    EXPECT_TRUE(r.ok());
    ring_ = std::move(r).value();
    for (int i = 1; i <= 3; ++i)
      start(i);
  }
  ~metadata_cluster() {
    for (int i = 1; i <= 3; ++i)
      stop(i);
    std::filesystem::remove_all(dir_);
  }

  void start(int i) {
    auto& n = nodes_[i];
    n.random = std::make_unique<seeded_random>(77 + i);
    const auto d = dir_ / ("n" + std::to_string(i));
    std::filesystem::create_directories(d);
    auto l = engine::log::open((d / "log").string(), engine::log_config{}, *ring_);
    ASSERT_TRUE(l.ok()) << l.err().describe();
    n.log = std::move(l).value();
    raft::core_options o;
    o.group = raft::group_id(0);
    o.self = raft::node_id(i);
    raft::membership voters;
    voters.voters = {raft::node_id(1), raft::node_id(2), raft::node_id(3)};
    auto c = controller::open(
        *n.log, *ring_, o, voters, [this](raft::message m) { network_.push_back(std::move(m)); },
        *n.random, (d / "metadata.snapshot").string(), /*snapshot_every=*/10);
    ASSERT_TRUE(c.ok()) << c.err().describe();
    n.c = std::move(c).value();
  }
  void stop(int i) {
    auto& n = nodes_[i];
    n.c.reset();
    if (n.log) (void)n.log->close();
    n.log.reset();
  }
  controller* leader() {
    for (auto& [i, n] : nodes_)
      if (n.c && n.c->is_leader()) return n.c.get();
    return nullptr;
  }
  bool run_until(const std::function<bool()>& done, int rounds = 5000) {
    for (int r = 0; r < rounds; ++r) {
      if (done()) return true;
      std::deque<raft::message> in_flight;
      in_flight.swap(network_);
      for (auto& m : in_flight) {
        auto& n = nodes_[static_cast<int>(m.to.value())];
        if (n.c) n.c->step(m);
      }
      if (r % 3 == 0)
        for (auto& [i, n] : nodes_)
          if (n.c) n.c->tick();
      ring_->poll();
      if (network_.empty()) ring_->wait();
    }
    return done();
  }

  struct node {
    std::unique_ptr<seeded_random> random;
    std::unique_ptr<engine::log> log;
    std::unique_ptr<controller> c;
  };
  std::filesystem::path dir_;
  std::unique_ptr<engine::io_ring> ring_;
  std::map<int, node> nodes_;
  std::deque<raft::message> network_;
};

TEST(controller, snapshots_bound_the_log_and_bring_back_a_replica_that_fell_behind) {
  metadata_cluster mc(std::filesystem::temp_directory_path() /
                      ("keel-ctl-" + std::to_string(::getpid())));
  ASSERT_TRUE(mc.run_until([&] { return mc.leader() != nullptr; }));
  int answered = 0;
  auto submit = [&](std::vector<std::byte> cmd) {
    mc.leader()->submit(std::move(cmd), [&](const apply_result& r) {
      EXPECT_TRUE(r.ok) << r.error;
      ++answered;
    });
  };
  for (int b = 1; b <= 3; ++b)
    submit(encode_register_broker(
        {b, {"127.0.0.1", uint16_t(9090 + b)}, {"127.0.0.1", uint16_t(19090 + b)}, 2}));
  ASSERT_TRUE(mc.run_until([&] { return answered == 3; }));

  // Replica 3 stops; the others apply enough commands to snapshot and drop their logs' heads.
  int follower = 0;
  for (auto& [i, n] : mc.nodes_)
    if (!n.c->is_leader()) follower = i;
  mc.stop(follower);
  for (int t = 0; t < 30; ++t) {
    controller* l = mc.leader();
    ASSERT_NE(l, nullptr);
    l->create_topic("topic-" + std::to_string(t), 2, 2, {}, {1, 2, 3}, [&](const apply_result& r) {
      EXPECT_TRUE(r.ok) << r.error;
      ++answered;
    });
    ASSERT_TRUE(mc.run_until([&] { return answered == 4 + t; }));
  }
  controller* l = mc.leader();
  EXPECT_GT(l->snapshot_offset().value(), 10);
  EXPECT_GT(mc.nodes_[static_cast<int>(l->host().core().self().value())].log->log_start().value(),
            10);

  // It comes back: the leader no longer holds what it missed, so it gets the snapshot.
  mc.start(follower);
  ASSERT_TRUE(mc.run_until([&] { return mc.nodes_[follower].c->state() == mc.leader()->state(); }));
  EXPECT_EQ(mc.nodes_[follower].c->state().topics().size(), 30u);

  // Every replica restarts from its snapshot and the log after it, to the same state.
  const metadata_state expected = mc.leader()->state();
  for (int i = 1; i <= 3; ++i) {
    mc.stop(i);
    mc.start(i);
  }
  ASSERT_TRUE(mc.run_until([&] {
    for (auto& [i, n] : mc.nodes_)
      if (!(n.c->state() == expected)) return false;
    return true;
  }));
}

}  // namespace
}  // namespace keel::server
