// Deterministic simulation of a Raft group: one thread, one seeded PRNG for every choice, a
// simulated clock, network (delay, loss, duplication, reordering, partitions) and disks (only
// fsynced state survives a crash; the unsynced tail is lost or torn). Checkers run outside the
// nodes after every step. One seed replays a run exactly.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace keel::raft::sim {

struct options {
  uint64_t seed = 1;
  int nodes = 3;      // 3 or 5
  int steps = 10000;  // safety phase: events processed with faults on
  // Liveness bound, in ticks of one node: max(liveness_ticks, steps / 4). Long runs can leave
  // thousands of uncommitted offsets behind (voters down for a long time); catching a follower
  // up over them at one small batch per round trip takes time proportional to that backlog.
  int liveness_ticks = 2000;
  bool trace = false;  // print every event as it happens
};

struct outcome {
  bool passed = false;
  std::string failure;             // what failed, empty when passed
  std::vector<std::string> trace;  // the last events before the end (one line each)
  // Figures for the run.
  uint64_t proposals = 0;
  uint64_t acknowledged = 0;
  uint64_t crashes = 0;
  uint64_t elections = 0;  // distinct terms with a leader
  uint64_t config_changes = 0;
  uint64_t resets = 0;  // log-start resets installed
  uint64_t reads = 0;   // ReadIndex answers checked
  int64_t final_commit = -1;
};

outcome run(const options& o);

// The command line that replays one seed with a full trace.
std::string replay_command(const options& o);

}  // namespace keel::raft::sim
