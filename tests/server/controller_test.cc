// The metadata group: commands apply identically on every replica, snapshots bound the log, a
// replica that fell behind the leader's log start is brought back by a snapshot, and a restart
// rebuilds the state from the snapshot plus the log after it.
#include "keel/server/controller.h"

#include "replica_cluster.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <deque>
#include <filesystem>

namespace keel::server {
namespace {

using metadata_cluster = replica_cluster<controller>;

std::unique_ptr<controller> open_controller(int id, engine::log& log, engine::io_ring& ring,
                                            partition_host::message_sink sink,
                                            raft::random_source& random,
                                            const std::filesystem::path& node_dir) {
  raft::core_options o;
  o.group = raft::group_id(0);
  o.self = raft::node_id(static_cast<uint64_t>(id));
  raft::membership voters;
  voters.voters = {raft::node_id(1), raft::node_id(2), raft::node_id(3)};
  auto c = controller::open(log, ring, o, voters, std::move(sink), random,
                            (node_dir / "metadata.snapshot").string(), /*snapshot_every=*/10);
  EXPECT_TRUE(c.ok()) << c.err().describe();
  return c ? std::move(c).value() : nullptr;
}

TEST(controller, snapshots_bound_the_log_and_bring_back_a_replica_that_fell_behind) {
  metadata_cluster mc(
      std::filesystem::temp_directory_path() / ("keel-ctl-" + std::to_string(::getpid())),
      engine::log_config{}, open_controller);
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
  const int follower = mc.follower_id();
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
  EXPECT_GT(mc.log(mc.leader_id())->log_start().value(), 10);

  // It comes back: the leader no longer holds what it missed, so it gets the snapshot.
  mc.start(follower);
  ASSERT_TRUE(mc.run_until([&] { return mc.replica(follower)->state() == mc.leader()->state(); }));
  EXPECT_EQ(mc.replica(follower)->state().topics().size(), 30u);

  // Every replica restarts from its snapshot and the log after it, to the same state.
  const metadata_state expected = mc.leader()->state();
  for (int i = 1; i <= 3; ++i) {
    mc.stop(i);
    mc.start(i);
  }
  ASSERT_TRUE(mc.run_until([&] {
    for (int i = 1; i <= 3; ++i)
      if (!(mc.replica(i)->state() == expected)) return false;
    return true;
  }));
}

}  // namespace
}  // namespace keel::server
