// The core's view of its log: the host's log (through log_reader) plus the batches raft/ has
// accepted but not yet seen durable ("unstable"), plus pending truncations and log-start resets.
//
// Invariants:
//   first() - 1 <= last(); unstable batches are contiguous and cover [unstable_start, last()];
//   storage content below unstable_start matches this log (it was written from earlier Readies).
//   Storage may still hold a stale suffix at or beyond truncate_from(): it is never read, because
//   reads above unstable_start - 1 are served from memory and reads never pass last().
#pragma once

#include <deque>
#include <optional>
#include <vector>

#include "keel/raft/log.h"
#include "keel/raft/types.h"

namespace keel::raft {

class log_view {
 public:
  explicit log_view(const log_reader& storage);

  offset first() const;
  offset last() const { return last_; }
  term_id last_term() const;
  result<term_id> term_at(offset at) const;
  // Whole batches covering [from, min(to, last())], stopping after the batch crossing max_bytes.
  result<std::vector<batch>> read(offset from, offset to, uint64_t max_bytes) const;
  // The batch holding `at` (used to step back a whole batch at a time).
  result<batch> batch_at(offset at) const;
  // Whether the log holds `at` with term `t` (offset first()-1 counts, with its remembered term).
  bool matches(offset at, term_id t) const;
  // The largest offset <= at whose term is <= t, or first()-1 (fast backtracking, §5.3).
  offset last_at_or_below_term(offset at, term_id t) const;

  // Appends after last(). Invariant: b.base == last() + 1.
  void append(batch b);
  // Removes [from, last()]; the host is told to do the same in the next Ready if it may hold
  // any of those offsets. Invariant: first() <= from <= last().
  void truncate_suffix(offset from);
  // Replaces the whole log by an empty one starting at `start` (log-start reset).
  void reset(offset start, term_id start_prev_term);

  // Ready hand-out: batches not yet given to the host, and the pending truncation point.
  bool has_unhanded() const;
  std::optional<offset> take_truncation();
  std::vector<batch> take_unhanded();
  // The host made everything handed out so far durable. Returns the durable last offset.
  offset on_persisted();
  offset durable_last() const { return durable_last_; }
  // Drops the override of the log start once the host persisted a reset.
  void on_reset_persisted() { reset_override_.reset(); }

 private:
  const batch* unstable_batch_at(offset at) const;

  const log_reader& storage_;
  std::deque<batch> unstable_;
  offset unstable_start_;
  offset last_;
  // Highest offset the host's log holds or will hold once it has written what was handed out.
  offset written_through_;
  // Highest offset handed out to the host whose content still matches this log.
  offset handed_through_;
  // Highest offset known durable and matching this log. Invariant: durable_last_ <= last_.
  offset durable_last_;
  std::optional<offset> truncate_from_;
  struct start_override {
    offset start;
    term_id prev_term;
  };
  std::optional<start_override> reset_override_;
};

}  // namespace keel::raft
