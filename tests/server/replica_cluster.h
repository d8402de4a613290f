// A test harness: three replicas of one Raft group (partition hosts or controllers) on real
// engine logs in their own directories, sharing one io_ring, joined by an in-memory network and
// driven in rounds on the test's thread.
#pragma once

#include <gtest/gtest.h>

#include <deque>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>

#include "keel/engine/log.h"
#include "keel/server/partition_host.h"

namespace keel::server {

template <class Replica>
class replica_cluster {
 public:
  // Builds replica `id` over its opened log; `node_dir` is its own directory.
  using opener = std::function<std::unique_ptr<Replica>(
      int id, engine::log& log, engine::io_ring& ring, partition_host::message_sink sink,
      raft::random_source& random, const std::filesystem::path& node_dir)>;

  replica_cluster(std::filesystem::path dir, engine::log_config log_config, opener open)
      : dir_(std::move(dir)), log_config_(std::move(log_config)), open_(std::move(open)) {
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
    auto r = engine::io_ring::create();
    EXPECT_TRUE(r.ok());
    ring_ = std::move(r).value();
    for (int i = 1; i <= 3; ++i)
      start(i);
  }
  ~replica_cluster() {
    for (int i = 1; i <= 3; ++i)
      stop(i);
    std::filesystem::remove_all(dir_);
  }

  void start(int i) {
    auto& n = nodes_[i];
    n.random = std::make_unique<seeded_random>(1000 + i);
    const auto node_dir = dir_ / ("n" + std::to_string(i));
    std::filesystem::create_directories(node_dir);
    auto l = engine::log::open((node_dir / "log").string(), log_config_, *ring_);
    ASSERT_TRUE(l.ok()) << l.err().describe();
    n.log = std::move(l).value();
    n.replica = open_(
        i, *n.log, *ring_, [this](raft::message m) { network_.push_back(std::move(m)); }, *n.random,
        node_dir);
    ASSERT_NE(n.replica, nullptr);
  }

  void stop(int i) {
    auto& n = nodes_[i];
    n.replica.reset();
    if (n.log) (void)n.log->close();
    n.log.reset();
  }

  Replica* replica(int i) { return nodes_[i].replica.get(); }
  engine::log* log(int i) { return nodes_[i].log.get(); }
  Replica* leader() {
    for (auto& [i, n] : nodes_)
      if (n.replica && n.replica->is_leader()) return n.replica.get();
    return nullptr;
  }
  int leader_id() {
    for (auto& [i, n] : nodes_)
      if (n.replica && n.replica->is_leader()) return i;
    return 0;
  }
  int follower_id() {
    for (auto& [i, n] : nodes_)
      if (n.replica && !n.replica->is_leader()) return i;
    return 0;
  }

  // Rounds of: deliver what is in flight, tick everyone every `tick_every` rounds, let the disk
  // complete. True once `done` holds.
  bool run_until(const std::function<bool()>& done, int rounds = 5000, int tick_every = 4) {
    for (int r = 0; r < rounds; ++r) {
      if (done()) return true;
      std::deque<raft::message> in_flight;
      in_flight.swap(network_);
      for (auto& m : in_flight) {
        auto& n = nodes_[static_cast<int>(m.to.value())];
        if (n.replica) n.replica->step(m);
      }
      if (r % tick_every == 0)
        for (auto& [i, n] : nodes_)
          if (n.replica) n.replica->tick();
      ring_->poll();
      if (network_.empty() && ring_->in_flight() > 0) ring_->wait();
    }
    return done();
  }

 private:
  struct node {
    std::unique_ptr<seeded_random> random;
    std::unique_ptr<engine::log> log;
    std::unique_ptr<Replica> replica;
  };
  std::filesystem::path dir_;
  engine::log_config log_config_;
  opener open_;
  std::unique_ptr<engine::io_ring> ring_;
  std::map<int, node> nodes_;
  std::deque<raft::message> network_;
};

}  // namespace keel::server
