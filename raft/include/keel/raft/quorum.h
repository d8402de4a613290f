// Majority arithmetic over a voter set, kept apart from the rest of Raft so it is easy to test.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <vector>

#include "keel/raft/types.h"

namespace keel::raft::quorum {

// The largest value v such that a majority of `voters` acked at least v (acked(n) gives node n's
// value). With offsets this is the commit candidate of §5.3/§5.4.2: "a majority of matchIndex[i]
// >= N". An empty voter set yields `none_value` (nothing can be committed without voters).
int64_t majority_value(const std::vector<node_id>& voters,
                       const std::function<int64_t(node_id)>& acked, int64_t none_value);

enum class vote_outcome { pending, won, lost };

// Tally of an election (§5.2): won once a majority granted, lost once a majority can no longer
// grant. Votes from non-voters are ignored.
vote_outcome tally(const std::vector<node_id>& voters, const std::map<node_id, bool>& votes);

}  // namespace keel::raft::quorum
