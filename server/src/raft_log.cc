#include "keel/server/raft_log.h"

namespace keel::server {

raft::result<raft::term_id> raft_log::term_at(raft::offset at) const {
  const raft::offset first = first_offset();
  if (at == first.prev()) {
    // The log start record: offset(-1) has term 0 by definition.
    return at.value() < 0 ? raft::term_id(0) : state_.state().start_prev_term;
  }
  if (at < first) return raft::make_error(raft::errc::compacted, "offset below the log start");
  if (at > last_offset())
    return raft::make_error(raft::errc::unavailable, "offset past the log end");
  auto h = log_.batch_at(to_engine(at));
  if (!h) {
    // Appended but not written yet: raft reads only what earlier Readies made durable, so this
    // is a caller outside that contract.
    return raft::make_error(raft::errc::unavailable, h.err().describe());
  }
  return raft::term_id(h->term.value());
}

raft::result<std::vector<raft::batch>> raft_log::read(raft::offset from, raft::offset to,
                                                      uint64_t max_bytes) const {
  if (from < first_offset())
    return raft::make_error(raft::errc::compacted, "offset below the log start");
  if (from > last_offset())
    return raft::make_error(raft::errc::unavailable, "offset past the log end");
  // Raft's contract: whole batches from the one holding `from`, stopping only after the batch
  // whose cost (raft::batch_cost_bytes) reaches max_bytes, or at `to`. The engine stops before a
  // batch that would pass its byte bound, so read in rounds until raft's rule is met.
  std::vector<raft::batch> out;
  uint64_t cost = 0;
  engine::offset at = to_engine(from);
  while (at <= to_engine(to) && cost < max_bytes) {
    // Replication reads verify checksums: a follower must never receive corrupt bytes.
    auto r = log_.read(at, std::max<uint64_t>(max_bytes - cost, 1), to_engine(to),
                       engine::read_options{true});
    if (!r) return raft::make_error(raft::errc::unavailable, r.err().describe());
    if (r->batches().empty()) break;
    for (const engine::batch_view& v : r->batches()) {
      raft::batch b;
      b.type = static_cast<raft::batch_type>(v.header.type);
      b.term = raft::term_id(v.header.term.value());
      b.base = to_raft(v.header.base_offset);
      b.last = to_raft(v.header.last_offset);
      b.payload = raft::shared_bytes::copy_of(v.payload().data(), v.payload().size());
      cost += raft::batch_cost_bytes(b);
      out.push_back(std::move(b));
      if (cost >= max_bytes) break;
    }
    at = to_engine(out.back().last.next());
  }
  if (out.empty()) return raft::make_error(raft::errc::unavailable, "not written yet");
  return out;
}

std::vector<raft::batch> raft_log::config_batches(raft::offset from, raft::offset to) const {
  std::vector<raft::batch> out;
  for (raft::offset o : state_.state().config_offsets) {
    if (o < from || o > to) continue;
    auto r = read(o, o, 1);
    KEEL_RAFT_ASSERT(r.ok() && !r->empty(), "a recorded configuration batch must be readable");
    raft::batch& b = r->front();
    KEEL_RAFT_ASSERT(b.base == o && b.type == raft::batch_type::config,
                     "the recorded offset holds a configuration batch");
    out.push_back(std::move(b));
  }
  return out;
}

}  // namespace keel::server
