#include "keel/raft/log_view.h"

#include <algorithm>

namespace keel::raft {

log_view::log_view(const log_reader& storage)
    : storage_(storage),
      unstable_start_(storage.last_offset().next()),
      last_(storage.last_offset()),
      written_through_(storage.last_offset()),
      handed_through_(storage.last_offset()),
      durable_last_(storage.last_offset()) {
  KEEL_RAFT_ASSERT(storage.first_offset().prev() <= storage.last_offset(),
                   "log_reader: last_offset must be >= first_offset - 1");
}

offset log_view::first() const {
  return reset_override_ ? reset_override_->start : storage_.first_offset();
}

term_id log_view::last_term() const {
  auto t = term_at(last_);
  KEEL_RAFT_ASSERT(t.ok(), "the term of the last offset must be known");
  return *t;
}

const batch* log_view::unstable_batch_at(offset at) const {
  KEEL_RAFT_ASSERT(at >= unstable_start_ && at <= last_, "offset outside the unstable range");
  auto it = std::lower_bound(unstable_.begin(), unstable_.end(), at,
                             [](const batch& b, offset o) { return b.last < o; });
  KEEL_RAFT_ASSERT(it != unstable_.end() && it->base <= at, "unstable batches must be contiguous");
  return &*it;
}

result<term_id> log_view::term_at(offset at) const {
  const offset f = first();
  if (at < f.prev()) return make_error(errc::compacted, "offset before the log start");
  if (at > last_) return make_error(errc::unavailable, "offset after the log end");
  if (at >= unstable_start_) return unstable_batch_at(at)->term;
  if (reset_override_ && at == reset_override_->start.prev()) return reset_override_->prev_term;
  if (at == offset::none()) return term_id(0);
  return storage_.term_at(at);
}

result<std::vector<batch>> log_view::read(offset from, offset to, uint64_t max_bytes) const {
  const offset f = first();
  if (from < f) return make_error(errc::compacted, "read before the log start");
  if (from > last_) return make_error(errc::unavailable, "read after the log end");
  to = min(to, last_);
  std::vector<batch> out;
  uint64_t bytes = 0;
  if (from < unstable_start_) {
    auto stored = storage_.read(from, min(to, unstable_start_.prev()), max_bytes);
    if (!stored.ok()) return stored.err();
    for (auto& b : *stored) {
      if (b.base > min(to, unstable_start_.prev())) break;
      KEEL_RAFT_ASSERT(out.empty() || out.back().last.next() == b.base,
                       "log_reader::read returned non-contiguous batches");
      bytes += batch_cost_bytes(b);
      out.push_back(std::move(b));
      if (bytes >= max_bytes) return out;
    }
    KEEL_RAFT_ASSERT(!out.empty() && out.front().base <= from,
                     "log_reader::read must return the batch holding `from`");
    // A short read (the host's own byte accounting stopped earlier) is fine: the caller sends
    // what it got. Only a read that reached the unstable start continues from memory.
    if (out.back().last >= to || out.back().last.next() < unstable_start_) return out;
    KEEL_RAFT_ASSERT(out.back().last.next() == unstable_start_,
                     "storage batches must end where the unstable batches start");
  }
  const offset start = max(from, unstable_start_);
  auto it = std::lower_bound(unstable_.begin(), unstable_.end(), start,
                             [](const batch& b, offset o) { return b.last < o; });
  for (; it != unstable_.end() && it->base <= to; ++it) {
    bytes += batch_cost_bytes(*it);
    out.push_back(*it);
    if (bytes >= max_bytes) break;
  }
  return out;
}

result<batch> log_view::batch_at(offset at) const {
  auto r = read(at, at, 1);
  if (!r.ok()) return r.err();
  KEEL_RAFT_ASSERT(!r->empty() && r->front().base <= at && at <= r->front().last,
                   "batch_at must return the batch holding the offset");
  return r->front();
}

bool log_view::matches(offset at, term_id t) const {
  auto r = term_at(at);
  return r.ok() && *r == t;
}

offset log_view::last_at_or_below_term(offset at, term_id t) const {
  const offset f = first();
  at = min(at, last_);
  while (at >= f) {
    auto tt = term_at(at);
    KEEL_RAFT_ASSERT(tt.ok(), "term of an offset inside the log must be known");
    if (*tt <= t) return at;
    auto b = batch_at(at);
    KEEL_RAFT_ASSERT(b.ok(), "batch inside the log must be readable");
    at = b->base.prev();
  }
  return f.prev();
}

void log_view::append(batch b) {
  KEEL_RAFT_ASSERT(b.base == last_.next(), "append must continue the log");
  KEEL_RAFT_ASSERT(b.base <= b.last, "a batch spans at least one offset");
  KEEL_RAFT_ASSERT(b.term >= last_term() && b.term > term_id(0),
                   "terms in a log never decrease (§5.3)");
  KEEL_RAFT_ASSERT(
      unstable_.empty() ? unstable_start_ == last_.next() : unstable_.back().last == last_,
      "unstable batches must end at the log end");
  last_ = b.last;
  unstable_.push_back(std::move(b));
}

void log_view::truncate_suffix(offset from) {
  KEEL_RAFT_ASSERT(from >= first() && from <= last_, "suffix truncation outside the log");
  if (from <= written_through_) truncate_from_ = truncate_from_ ? min(*truncate_from_, from) : from;
  if (from <= unstable_start_) {
    unstable_.clear();
    unstable_start_ = from;
  } else {
    while (!unstable_.empty() && unstable_.back().base >= from)
      unstable_.pop_back();
    KEEL_RAFT_ASSERT(!unstable_.empty() && unstable_.back().last == from.prev(),
                     "suffix truncation must fall on a batch boundary");
  }
  last_ = from.prev();
  handed_through_ = min(handed_through_, last_);
  durable_last_ = min(durable_last_, last_);
}

void log_view::reset(offset start, term_id start_prev_term) {
  unstable_.clear();
  unstable_start_ = start;
  last_ = start.prev();
  truncate_from_.reset();
  reset_override_ = start_override{start, start_prev_term};
  written_through_ = last_;
  handed_through_ = last_;
  durable_last_ = last_;
}

bool log_view::has_unhanded() const {
  return truncate_from_.has_value() || handed_through_ < last_;
}

std::optional<offset> log_view::take_truncation() {
  auto t = truncate_from_;
  truncate_from_.reset();
  if (t) written_through_ = min(written_through_, t->prev());
  return t;
}

std::vector<batch> log_view::take_unhanded() {
  std::vector<batch> out;
  auto it = std::lower_bound(unstable_.begin(), unstable_.end(), handed_through_.next(),
                             [](const batch& b, offset o) { return b.last < o; });
  for (; it != unstable_.end(); ++it)
    out.push_back(*it);
  KEEL_RAFT_ASSERT(out.empty() || out.front().base == handed_through_.next(),
                   "hand-out must continue where the previous one ended");
  handed_through_ = last_;
  written_through_ = max(written_through_, last_);
  return out;
}

offset log_view::on_persisted() {
  while (!unstable_.empty() && unstable_.front().last <= handed_through_)
    unstable_.pop_front();
  unstable_start_ = unstable_.empty() ? last_.next() : unstable_.front().base;
  durable_last_ = max(durable_last_, handed_through_);
  KEEL_RAFT_ASSERT(durable_last_ <= last_, "durable offset beyond the log end");
  return durable_last_;
}

}  // namespace keel::raft
