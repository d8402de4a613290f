#include "keel/raft/progress.h"

namespace keel::raft {

void inflight_window::add(offset last, uint64_t bytes) {
  KEEL_RAFT_ASSERT(records_.empty() || records_.back().last < last,
                   "inflight records must increase in offset");
  records_.push_back(record{last, bytes});
  bytes_ += bytes;
}

void inflight_window::free_through(offset acked) {
  while (!records_.empty() && records_.front().last <= acked) {
    KEEL_RAFT_ASSERT(bytes_ >= records_.front().bytes, "inflight byte count underflow");
    bytes_ -= records_.front().bytes;
    records_.pop_front();
  }
}

void inflight_window::free_first() {
  if (records_.empty()) return;
  bytes_ -= records_.front().bytes;
  records_.pop_front();
}

void inflight_window::clear() {
  records_.clear();
  bytes_ = 0;
}

const char* to_string(progress_state state) {
  switch (state) {
    case progress_state::probe:
      return "probe";
    case progress_state::replicate:
      return "replicate";
    case progress_state::reset:
      return "reset";
  }
  return "?";
}

void progress::become_probe() {
  stalled_rounds = 0;
  // Leaving reset: the follower has at least the reset point unless told otherwise.
  const offset from = state == progress_state::reset ? max(match, reset_offset) : match;
  state = progress_state::probe;
  next = from.next();
  probe_sent = false;
  inflight.clear();
}

void progress::become_replicate() {
  stalled_rounds = 0;
  state = progress_state::replicate;
  next = match.next();
  probe_sent = false;
  inflight.clear();
}

void progress::become_reset(offset last_covered) {
  state = progress_state::reset;
  reset_offset = last_covered;
  probe_sent = false;
  inflight.clear();
}

bool progress::on_accept(offset acked) {
  bool updated = false;
  if (acked > match) {
    match = acked;
    updated = true;
    probe_sent = false;
  }
  if (next <= acked) next = acked.next();
  inflight.free_through(acked);
  KEEL_RAFT_ASSERT(match < next, "progress: match must stay below next");
  return updated;
}

bool progress::on_reject(offset rejected_prev, offset hint) {
  if (state == progress_state::replicate) {
    // Pipelined: an older request may be rejected after a newer one was accepted.
    if (rejected_prev <= match) return false;
    // The match point is known: restart from it; the hint cannot move us below match.
    next = match.next();
    return true;
  }
  // probe: only the reply to the single outstanding request counts.
  if (next.prev() != rejected_prev) return false;
  // rejected_prev itself did not match, so the next probe must start at or below it: this keeps
  // backtracking strictly decreasing even when the hint says nothing new (it then ends, at worst,
  // below the log start, where a log-start reset takes over).
  next = max(min(rejected_prev.prev(), hint).next(), match.next());
  probe_sent = false;
  return true;
}

void progress::sent(offset last, uint64_t bytes, bool carried_entries) {
  switch (state) {
    case progress_state::replicate:
      if (carried_entries) {
        next = last.next();
        inflight.add(last, bytes);
      }
      break;
    case progress_state::probe:
      probe_sent = true;
      break;
    case progress_state::reset:
      break;
  }
}

bool progress::paused() const {
  switch (state) {
    case progress_state::probe:
      return probe_sent;
    case progress_state::replicate:
      return inflight.full();
    case progress_state::reset:
      return true;
  }
  return true;
}

std::string progress::describe() const {
  return std::string(to_string(state)) + " match=" + std::to_string(match.value()) +
         " next=" + std::to_string(next.value()) + " inflight=" + std::to_string(inflight.count());
}

}  // namespace keel::raft
