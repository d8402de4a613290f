// The simulator itself: a seed replays exactly, and a run exercises the faults it claims to.
#include <gtest/gtest.h>

#include "sim.h"

namespace keel::raft::sim {
namespace {

TEST(Sim, OneSeedReplaysExactly) {
  options o;
  o.seed = 77;
  o.steps = 4000;
  const outcome a = run(o);
  const outcome b = run(o);
  ASSERT_TRUE(a.passed) << a.failure;
  EXPECT_EQ(a.trace, b.trace);
  EXPECT_EQ(a.proposals, b.proposals);
  EXPECT_EQ(a.final_commit, b.final_commit);
  o.seed = 78;
  EXPECT_NE(run(o).trace, a.trace);
}

TEST(Sim, RunsExerciseFaultsAndProgress) {
  outcome total;
  for (uint64_t seed = 1; seed <= 10; ++seed) {
    options o;
    o.seed = seed;
    o.nodes = seed % 2 ? 3 : 5;
    o.steps = 6000;
    const outcome r = run(o);
    ASSERT_TRUE(r.passed) << "seed " << seed << ": " << r.failure
                          << "\nreplay: " << replay_command(o);
    total.proposals += r.proposals;
    total.acknowledged += r.acknowledged;
    total.crashes += r.crashes;
    total.elections += r.elections;
    total.config_changes += r.config_changes;
    total.resets += r.resets;
    total.reads += r.reads;
  }
  EXPECT_GT(total.acknowledged, 1000u);
  EXPECT_GT(total.crashes, 10u);
  EXPECT_GT(total.elections, 20u);
  EXPECT_GT(total.config_changes, 5u);
  EXPECT_GT(total.resets, 0u);
  EXPECT_GT(total.reads, 100u);
}

}  // namespace
}  // namespace keel::raft::sim
