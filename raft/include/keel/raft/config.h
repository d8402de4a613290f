// Group membership: voters decide elections and commitment, learners only receive the log.
//
// Keel changes voters one at a time (Ongaro's dissertation §4.1, "single-server changes") rather
// than by joint consensus (§6 of the Raft paper). Reasoning: any majority of C and any majority of
// C ± one voter overlap, so a configuration that takes effect when appended can never yield two
// disjoint quorums, provided (a) a leader has at most one uncommitted configuration entry in its
// log, and (b) it has committed an entry of its own term before appending one (the fix to the
// single-server bug Ongaro described on raft-dev in 2015: without it, a leader elected under an
// uncommitted config of a previous term can commit a conflicting change). The no-op a leader
// appends on election provides (b). Learners do not count in quorums, so any number of them may
// change at once; promoting a learner is a one-voter change.
#pragma once

#include <algorithm>
#include <string>
#include <vector>

#include "keel/raft/types.h"

namespace keel::raft {

// Invariant: voters and learners are sorted, free of duplicates, disjoint, and never contain
// node_id::none().
struct membership {
  std::vector<node_id> voters;
  std::vector<node_id> learners;

  bool is_voter(node_id n) const { return std::binary_search(voters.begin(), voters.end(), n); }
  bool is_learner(node_id n) const {
    return std::binary_search(learners.begin(), learners.end(), n);
  }
  bool contains(node_id n) const { return is_voter(n) || is_learner(n); }
  size_t quorum() const { return voters.size() / 2 + 1; }
  // Every member (voters then learners).
  std::vector<node_id> members() const;
  // Sorts, removes duplicates; returns false if the sets are not disjoint or contain none().
  bool normalize();
  bool valid() const;
  std::string describe() const;
  // How many voters differ between the two (symmetric difference of the voter sets).
  static size_t voter_changes(const membership& a, const membership& b);

  bool operator==(const membership&) const = default;
};

}  // namespace keel::raft
