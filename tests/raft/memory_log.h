// An in-memory log behind raft's log_reader port, for unit tests and the simulator. It keeps the
// batches exactly as the host appended them, the log start and the term before it, and a running
// hash of each prefix so checkers can compare whole prefixes in O(1).
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "keel/raft/log.h"

namespace keel::raft::testing {

inline uint64_t mix(uint64_t h, uint64_t v) {
  h ^= v + 0x9e3779b97f4a7c15ull + (h << 6) + (h >> 2);
  h ^= h >> 31;
  h *= 0xbf58476d1ce4e5b9ull;
  return h ^ (h >> 29);
}

inline uint64_t batch_hash(const batch& b) {
  uint64_t h = mix(uint64_t(b.type), uint64_t(b.term.value()));
  h = mix(h, uint64_t(b.base.value()));
  h = mix(h, uint64_t(b.last.value()));
  for (size_t i = 0; i < b.payload.size(); ++i)
    h = mix(h, std::to_integer<uint8_t>(b.payload.data()[i]));
  return h;
}

class memory_log final : public log_reader {
 public:
  struct stored {
    batch b;
    uint64_t prefix_hash;  // hash of every batch from the log start through this one
  };

  offset first_offset() const override { return start_; }
  offset last_offset() const override {
    return batches_.empty() ? start_.prev() : batches_.back().b.last;
  }
  result<term_id> term_at(offset at) const override {
    if (at < start_.prev()) return make_error(errc::compacted, "before log start");
    if (at > last_offset()) return make_error(errc::unavailable, "after log end");
    if (at == start_.prev()) return start_prev_term_;
    return batches_[index_of(at)].b.term;
  }
  result<std::vector<batch>> read(offset from, offset to, uint64_t max_bytes) const override {
    if (from < start_) return make_error(errc::compacted, "before log start");
    if (from > last_offset()) return make_error(errc::unavailable, "after log end");
    std::vector<batch> out;
    uint64_t bytes = 0;
    for (size_t i = index_of(from); i < batches_.size() && batches_[i].b.base <= to; ++i) {
      out.push_back(batches_[i].b);
      bytes += batch_cost_bytes(batches_[i].b);
      if (bytes >= max_bytes) break;
    }
    return out;
  }

  void append(const batch& b) {
    KEEL_RAFT_ASSERT(b.base == last_offset().next(), "memory_log: append must continue the log");
    const uint64_t prev = batches_.empty() ? start_hash() : batches_.back().prefix_hash;
    batches_.push_back(stored{b, mix(prev, batch_hash(b))});
  }
  // Removes every batch with offsets >= from; returns them.
  std::vector<stored> truncate_suffix(offset from) {
    std::vector<stored> removed;
    while (!batches_.empty() && batches_.back().b.last >= from) {
      KEEL_RAFT_ASSERT(batches_.back().b.base >= from, "memory_log: truncation inside a batch");
      removed.push_back(batches_.back());
      batches_.pop_back();
    }
    return removed;
  }
  // Drops batches before `start` (which must be a batch base or the log end + 1).
  void truncate_prefix(offset start) {
    KEEL_RAFT_ASSERT(start > start_ && start <= last_offset().next(), "memory_log: bad prefix");
    auto t = term_at(start.prev());
    KEEL_RAFT_ASSERT(t.ok(), "memory_log: term before new start");
    const uint64_t h = batches_[index_of(start.prev())].prefix_hash;
    size_t n = 0;
    while (n < batches_.size() && batches_[n].b.last < start)
      ++n;
    KEEL_RAFT_ASSERT(n == batches_.size() || batches_[n].b.base == start,
                     "memory_log: prefix truncation inside a batch");
    batches_.erase(batches_.begin(), batches_.begin() + long(n));
    start_prev_term_ = *t;
    start_ = start;
    start_hash_ = h;
  }
  void reset(offset start, term_id prev_term, uint64_t start_hash) {
    batches_.clear();
    start_ = start;
    start_prev_term_ = prev_term;
    start_hash_ = start_hash;
  }

  const std::vector<stored>& batches() const { return batches_; }
  // Index of the batch holding `at`. Invariant: start <= at <= last.
  size_t index_of(offset at) const {
    auto it = std::lower_bound(batches_.begin(), batches_.end(), at,
                               [](const stored& s, offset o) { return s.b.last < o; });
    KEEL_RAFT_ASSERT(it != batches_.end() && it->b.base <= at, "memory_log: offset not held");
    return size_t(it - batches_.begin());
  }
  const stored* find_ending_at(offset last) const {
    if (last < start_ || last > last_offset()) return nullptr;
    const stored& s = batches_[index_of(last)];
    return s.b.last == last ? &s : nullptr;
  }
  uint64_t start_hash() const { return start_hash_; }
  term_id start_prev_term() const { return start_prev_term_; }

 private:
  offset start_ = offset(0);
  term_id start_prev_term_ = term_id(0);
  uint64_t start_hash_ = 0;  // prefix hash of everything before start_ (0 for a fresh log)
  std::vector<stored> batches_;
};

}  // namespace keel::raft::testing
