// raft_sim --seeds A-B --steps N [--nodes 3|5] [--trace]
// Runs the deterministic simulation for every seed in [A, B]. Exits non-zero if any seed fails;
// the last line is exactly "seeds=<count> passed=<count> failed=<count>".
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "sim.h"

namespace {
int usage() {
  std::fprintf(stderr, "usage: raft_sim --seeds A-B --steps N [--nodes 3|5] [--trace]\n");
  return 2;
}
}  // namespace

int main(int argc, char** argv) {
  uint64_t first = 1, last = 1;
  keel::raft::sim::options base;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--seeds" && i + 1 < argc) {
      const std::string v = argv[++i];
      const auto dash = v.find('-');
      char* end = nullptr;
      first = std::strtoull(v.c_str(), &end, 10);
      last = dash == std::string::npos ? first : std::strtoull(v.c_str() + dash + 1, &end, 10);
      if (last < first) return usage();
    } else if (a == "--steps" && i + 1 < argc) {
      base.steps = std::atoi(argv[++i]);
    } else if (a == "--nodes" && i + 1 < argc) {
      base.nodes = std::atoi(argv[++i]);
      if (base.nodes != 3 && base.nodes != 5) return usage();
    } else if (a == "--trace") {
      base.trace = true;
    } else {
      return usage();
    }
  }
  uint64_t passed = 0, failed = 0;
  keel::raft::sim::outcome total;
  const auto t0 = std::chrono::steady_clock::now();
  for (uint64_t seed = first; seed <= last; ++seed) {
    keel::raft::sim::options o = base;
    o.seed = seed;
    const auto r = keel::raft::sim::run(o);
    total.proposals += r.proposals;
    total.acknowledged += r.acknowledged;
    total.crashes += r.crashes;
    total.elections += r.elections;
    total.config_changes += r.config_changes;
    total.resets += r.resets;
    total.reads += r.reads;
    if (r.passed) {
      ++passed;
      continue;
    }
    ++failed;
    std::printf("seed %llu FAILED: %s\n", (unsigned long long)seed, r.failure.c_str());
    if (!o.trace) {
      std::printf("last events:\n");
      for (const auto& line : r.trace)
        std::printf("  %s\n", line.c_str());
    }
    std::printf("replay: %s\n", keel::raft::sim::replay_command(o).c_str());
  }
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf(
      "raft_sim: %llu seeds x %d steps, %d nodes, %.1f s; totals: proposals=%llu "
      "acknowledged=%llu crashes=%llu leader_terms=%llu config_changes=%llu "
      "log_resets=%llu reads=%llu\n",
      (unsigned long long)(last - first + 1), base.steps, base.nodes, secs,
      (unsigned long long)total.proposals, (unsigned long long)total.acknowledged,
      (unsigned long long)total.crashes, (unsigned long long)total.elections,
      (unsigned long long)total.config_changes, (unsigned long long)total.resets,
      (unsigned long long)total.reads);
  std::printf("seeds=%llu passed=%llu failed=%llu\n", (unsigned long long)(last - first + 1),
              (unsigned long long)passed, (unsigned long long)failed);
  return failed == 0 ? 0 : 1;
}
