// The small modules on their own: quorum arithmetic, the progress tracker, the log view.
#include <gtest/gtest.h>

#include "keel/raft/log_view.h"
#include "keel/raft/progress.h"
#include "keel/raft/quorum.h"
#include "test_util.h"

namespace keel::raft::testing {
namespace {

TEST(Quorum, MajorityValueIsTheQuorumthLargest) {
  std::map<uint64_t, int64_t> acked = {{1, 5}, {2, 9}, {3, 7}, {4, 1}, {5, 7}};
  auto f = [&](node_id n) { return acked.at(n.value()); };
  EXPECT_EQ(quorum::majority_value(voters({1, 2, 3}).voters, f, -1), 7);
  EXPECT_EQ(quorum::majority_value(voters({1, 2, 3, 4}).voters, f, -1), 5);
  EXPECT_EQ(quorum::majority_value(voters({1, 2, 3, 4, 5}).voters, f, -1), 7);
  EXPECT_EQ(quorum::majority_value(voters({4}).voters, f, -1), 1);
  EXPECT_EQ(quorum::majority_value({}, f, -1), -1);
}

TEST(Quorum, TallyWinsLosesOrWaits) {
  const auto v = voters({1, 2, 3, 4, 5}).voters;
  std::map<node_id, bool> votes = {{node_id(1), true}, {node_id(2), true}};
  EXPECT_EQ(quorum::tally(v, votes), quorum::vote_outcome::pending);
  votes[node_id(9)] = true;  // not a voter: ignored
  EXPECT_EQ(quorum::tally(v, votes), quorum::vote_outcome::pending);
  votes[node_id(3)] = true;
  EXPECT_EQ(quorum::tally(v, votes), quorum::vote_outcome::won);
  std::map<node_id, bool> no = {{node_id(1), false}, {node_id(2), false}, {node_id(3), false}};
  EXPECT_EQ(quorum::tally(v, no), quorum::vote_outcome::lost);
}

TEST(Progress, InflightWindowLimitsMessagesAndBytes) {
  inflight_window w(3, 100);
  w.add(offset(1), 10);
  w.add(offset(2), 10);
  EXPECT_FALSE(w.full());
  w.add(offset(5), 10);
  EXPECT_TRUE(w.full());  // 3 messages
  w.free_through(offset(2));
  EXPECT_EQ(w.count(), 1u);
  EXPECT_EQ(w.bytes(), 10u);
  w.add(offset(9), 95);
  EXPECT_TRUE(w.full());  // 105 bytes
  w.free_through(offset(100));
  EXPECT_EQ(w.count(), 0u);
  EXPECT_EQ(w.bytes(), 0u);
}

TEST(Progress, ProbeIgnoresStaleRejectionsAndBacktracksWithHint) {
  progress p(offset(20), 4, 1000);
  EXPECT_EQ(p.next, offset(21));
  p.sent(offset(20), 0, false);
  EXPECT_TRUE(p.paused());
  EXPECT_FALSE(p.on_reject(offset(15), offset(3)));  // not the outstanding probe
  EXPECT_TRUE(p.on_reject(offset(20), offset(12)));
  EXPECT_EQ(p.next, offset(13));
  EXPECT_FALSE(p.paused());
  // A hint that says nothing new still moves strictly below the rejected offset.
  p.sent(offset(12), 0, false);
  EXPECT_TRUE(p.on_reject(offset(12), offset(40)));
  EXPECT_EQ(p.next, offset(12));
}

TEST(Progress, ReplicateAdvancesOptimisticallyAndFallsBackOnRejection) {
  progress p(offset(10), 2, 1000);
  EXPECT_TRUE(p.on_accept(offset(10)));
  p.become_replicate();
  p.sent(offset(14), 10, true);
  EXPECT_EQ(p.next, offset(15));
  p.sent(offset(18), 10, true);
  EXPECT_TRUE(p.paused());
  EXPECT_TRUE(p.on_accept(offset(14)));
  EXPECT_FALSE(p.paused());
  EXPECT_FALSE(p.on_reject(offset(12), offset(0)));  // at or below match: stale
  EXPECT_TRUE(p.on_reject(offset(18), offset(0)));
  EXPECT_EQ(p.next, offset(15));
}

TEST(LogView, ServesUnstableEntriesAndHandsThemOutOnce) {
  memory_log storage;
  fill_log(storage, {1, 1});
  log_view v(storage);
  v.append(make_batch(batch_type::data, 2, 2, 4));
  EXPECT_EQ(v.last(), offset(4));
  EXPECT_EQ(*v.term_at(offset(3)), term_id(2));
  EXPECT_EQ(*v.term_at(offset(1)), term_id(1));
  EXPECT_EQ(v.term_at(offset(5)).err().code, errc::unavailable);
  auto all = v.read(offset(0), offset(4), 1 << 20);
  ASSERT_TRUE(all.ok());
  EXPECT_EQ(all->size(), 3u);
  EXPECT_TRUE(v.has_unhanded());
  auto out = v.take_unhanded();
  ASSERT_EQ(out.size(), 1u);
  EXPECT_FALSE(v.has_unhanded());
  for (const batch& b : out)
    storage.append(b);
  EXPECT_EQ(v.durable_last(), offset(1));
  v.on_persisted();
  EXPECT_EQ(v.durable_last(), offset(4));
  EXPECT_EQ(*v.term_at(offset(3)), term_id(2));
}

TEST(LogView, TruncationAfterHandOutIsReplayedToTheHost) {
  memory_log storage;
  fill_log(storage, {1});
  log_view v(storage);
  v.append(make_batch(batch_type::data, 1, 1, 1));
  v.append(make_batch(batch_type::data, 1, 2, 2));
  auto out = v.take_unhanded();  // the host is writing 1..2
  v.truncate_suffix(offset(2));  // meanwhile a new leader overwrites 2
  v.append(make_batch(batch_type::data, 3, 2, 2));
  for (const batch& b : out)
    storage.append(b);
  v.on_persisted();
  EXPECT_EQ(v.durable_last(), offset(1));  // offset 2 on disk is the old one
  EXPECT_EQ(*v.term_at(offset(2)), term_id(3));
  EXPECT_EQ(v.take_truncation(), std::optional<offset>(offset(2)));
  auto next = v.take_unhanded();
  ASSERT_EQ(next.size(), 1u);
  EXPECT_EQ(next[0].term, term_id(3));
}

TEST(LogView, FindsLastOffsetAtOrBelowATerm) {
  memory_log storage;
  fill_log(storage, {1, 1, 2, 2, 4, 4, 4});
  log_view v(storage);
  EXPECT_EQ(v.last_at_or_below_term(offset(6), term_id(3)), offset(3));
  EXPECT_EQ(v.last_at_or_below_term(offset(6), term_id(4)), offset(6));
  EXPECT_EQ(v.last_at_or_below_term(offset(2), term_id(1)), offset(1));
  EXPECT_EQ(v.last_at_or_below_term(offset(6), term_id(0)), offset::none());
}

// A host log whose reads stop after one batch (its own byte accounting): the view must accept a
// short read instead of asserting that storage covers everything up to the unstable start.
class one_batch_reader final : public log_reader {
 public:
  explicit one_batch_reader(const memory_log& log) : log_(log) {}
  offset first_offset() const override { return log_.first_offset(); }
  offset last_offset() const override { return log_.last_offset(); }
  result<term_id> term_at(offset at) const override { return log_.term_at(at); }
  result<std::vector<batch>> read(offset from, offset to, uint64_t) const override {
    auto r = log_.read(from, to, 1);
    if (r.ok() && r->size() > 1) r->resize(1);
    return r;
  }

 private:
  const memory_log& log_;
};

TEST(LogView, AcceptsShortReadsFromTheHostLog) {
  memory_log storage;
  fill_log(storage, {1, 1, 1});
  one_batch_reader reader(storage);
  log_view v(reader);
  v.append(make_batch(batch_type::data, 2, 3, 3));
  auto r = v.read(offset(0), offset(3), 1 << 20);
  ASSERT_TRUE(r.ok());
  ASSERT_EQ(r->size(), 1u);
  EXPECT_EQ(r->front().base, offset(0));
  // Reading from the last stored batch continues into memory.
  r = v.read(offset(2), offset(3), 1 << 20);
  ASSERT_TRUE(r.ok());
  ASSERT_EQ(r->size(), 2u);
  EXPECT_EQ(r->back().term, term_id(2));
}

}  // namespace
}  // namespace keel::raft::testing
