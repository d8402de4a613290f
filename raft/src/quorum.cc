#include "keel/raft/quorum.h"

#include <algorithm>

namespace keel::raft::quorum {

int64_t majority_value(const std::vector<node_id>& voters,
                       const std::function<int64_t(node_id)>& acked, int64_t none_value) {
  if (voters.empty()) return none_value;
  std::vector<int64_t> values;
  values.reserve(voters.size());
  for (node_id n : voters)
    values.push_back(acked(n));
  // Sorted descending, the value at position quorum-1 is acked by at least a quorum.
  std::sort(values.begin(), values.end(), std::greater<>());
  const size_t quorum = voters.size() / 2 + 1;
  return values[quorum - 1];
}

vote_outcome tally(const std::vector<node_id>& voters, const std::map<node_id, bool>& votes) {
  size_t granted = 0;
  size_t rejected = 0;
  for (node_id n : voters) {
    auto it = votes.find(n);
    if (it == votes.end()) continue;
    (it->second ? granted : rejected)++;
  }
  const size_t quorum = voters.size() / 2 + 1;
  if (granted >= quorum) return vote_outcome::won;
  if (voters.size() - rejected < quorum) return vote_outcome::lost;
  return vote_outcome::pending;
}

}  // namespace keel::raft::quorum
