// Behaviour beyond the paper's figures: PreVote, CheckQuorum and leases, leadership transfer,
// membership changes, log-start resets, ReadIndex, flow control and batching, restarts.
#include <gtest/gtest.h>

#include "test_util.h"

namespace keel::raft::testing {
namespace {

shared_bytes bytes(size_t n) {
  return shared_bytes(std::vector<std::byte>(n, std::byte(7)));
}

TEST(PreVote, PartitionedNodeDoesNotInflateTerms) {
  // Ongaro §9.6: a node that cannot win does not increment its term, so when it rejoins it does
  // not depose the working leader.
  cluster c(3);
  c.elect(1);
  const term_id t = c.at(1).term();
  c.isolate(3);
  for (int i = 0; i < 100; ++i)
    c.at(3).tick();
  c.run();
  EXPECT_EQ(c.at(3).term(), t);
  EXPECT_EQ(c.at(3).current_role(), role::pre_candidate);
  c.reconnect(3);
  c.tick_all(3);
  EXPECT_EQ(c.at(1).current_role(), role::leader);
  EXPECT_EQ(c.at(1).term(), t);
}

TEST(PreVote, WithoutPreVoteAPartitionedNodeDisruptsOnReturn) {
  // The contrast that motivates PreVote: without it (and without leases) terms inflate.
  cluster c(3, /*pre_vote=*/false, /*check_quorum=*/false);
  c.elect(1);
  const term_id t = c.at(1).term();
  c.isolate(3);
  for (int i = 0; i < 100; ++i)
    c.at(3).tick();
  EXPECT_GT(c.at(3).term(), t);
}

TEST(CheckQuorum, LeaderWithoutQuorumStepsDown) {
  // Ongaro §6.2: a leader that hears from no quorum within an election timeout steps down.
  cluster c(3);
  c.elect(1);
  c.isolate(2);
  c.isolate(3);
  for (int i = 0; i < 25; ++i)
    c.at(1).tick();
  EXPECT_EQ(c.at(1).current_role(), role::follower);
}

TEST(CheckQuorum, VoterInLeaseIgnoresVoteRequests) {
  // A follower that heard from its leader within the election timeout ignores RequestVote, so a
  // removed or flaky node cannot depose a healthy leader.
  cluster c(3);
  c.elect(1);
  const term_id t = c.at(1).term();
  auto s = c.at(2).step(
      msg(3, 2, t.value() + 1, vote_request{false, false, offset(100), term_id(t.value())}));
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(c.at(2).term(), t);
  EXPECT_EQ(c.at(2).vote(), c.at(2).vote());
  EXPECT_EQ(c.at(2).leader(), node_id(1));
}

TEST(Transfer, LeadershipMovesToCaughtUpTarget) {
  // Ongaro §3.10: the leader brings the target up to date, then sends TimeoutNow.
  cluster c(3);
  c.elect(1);
  c.isolate(3);
  c.propose(1);
  c.reconnect(3);
  ASSERT_TRUE(c.at(1).transfer_leadership(node_id(3)).ok());
  EXPECT_FALSE(c.at(1).propose(batch_type::data, 1, bytes(1)).ok());  // refused meanwhile
  c.tick_all(3);
  EXPECT_EQ(c.leader(), std::optional<uint64_t>(3));
  EXPECT_EQ(c.at(1).current_role(), role::follower);
}

TEST(Transfer, AbandonedAfterAnElectionTimeout) {
  cluster c(3);
  c.elect(1);
  c.isolate(3);
  ASSERT_TRUE(c.at(1).transfer_leadership(node_id(3)).ok());
  EXPECT_EQ(c.at(1).transfer_target(), node_id(3));
  for (int i = 0; i < 10; ++i) {
    c.at(1).tick();
    c.at(2).tick();
    c.run();
  }
  EXPECT_EQ(c.at(1).transfer_target(), node_id::none());
  EXPECT_TRUE(c.at(1).propose(batch_type::data, 1, bytes(1)).ok());
}

TEST(Membership, LearnerReceivesLogButDoesNotVoteOrCount) {
  cluster c(4);
  c.elect(1);
  c.propose(1);
  membership m = voters({1, 2, 3});
  m.learners.push_back(node_id(4));
  ASSERT_TRUE(c.at(1).propose_config(m).ok());
  c.run();
  // Takes effect when appended: everyone already uses it.
  for (uint64_t id = 1; id <= 4; ++id)
    EXPECT_EQ(c.at(id).config(), m) << id;
  batch b = c.propose(1);
  c.tick_all(2);
  EXPECT_EQ(c.node(4).log.last_offset(), b.last);  // the learner has the log
  // The learner never campaigns, however long it waits.
  c.isolate(1);
  for (int i = 0; i < 50; ++i)
    c.at(4).tick();
  EXPECT_EQ(c.at(4).current_role(), role::follower);
}

TEST(Membership, OneVoterAtATimeAndOneChangeInFlight) {
  cluster c(3);
  c.elect(1);
  c.propose(1);
  auto two = c.at(1).propose_config(voters({1}));
  EXPECT_FALSE(two.ok());
  EXPECT_EQ(two.err().code, errc::invalid_argument);
  c.isolate(2);
  c.isolate(3);
  ASSERT_TRUE(c.at(1).propose_config(voters({1, 2, 3, 4})).ok());
  c.run();
  auto again = c.at(1).propose_config(voters({1, 2, 3}));
  EXPECT_FALSE(again.ok());
  EXPECT_EQ(again.err().code, errc::busy);  // the first change is not committed yet
}

TEST(Membership, ConfigChangeRefusedBeforeLeaderCommitsItsTerm) {
  // The single-server-change bug fix: a new leader first commits an entry of its own term.
  test_node n;
  n.boot = voters({1, 2, 3});
  n.start(options_for(1));
  for (int i = 0; i < 10; ++i)
    n.c->tick();
  n.flush();
  ASSERT_TRUE(n.c->step(msg(2, 1, 1, vote_response{true, true})).ok());
  n.flush();
  ASSERT_TRUE(n.c->step(msg(2, 1, 1, vote_response{false, true})).ok());
  n.flush();
  ASSERT_EQ(n.c->current_role(), role::leader);
  auto r = n.c->propose_config(voters({1, 2}));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.err().code, errc::busy);
}

TEST(Membership, RemovedLeaderStepsDownOnceRemovalCommits) {
  cluster c(3);
  c.elect(1);
  c.propose(1);
  ASSERT_TRUE(c.at(1).propose_config(voters({2, 3})).ok());
  c.tick_all(3);
  EXPECT_NE(c.at(1).current_role(), role::leader);
  EXPECT_FALSE(c.at(1).config().is_voter(node_id(1)));
  c.tick_all(40);
  auto l = c.leader();
  ASSERT_TRUE(l.has_value());
  EXPECT_NE(*l, 1u);
  batch b = c.propose(*l);
  c.tick_all(2);
  EXPECT_GE(c.at(2).commit(), b.last);
}

TEST(Membership, AddedVoterCatchesUpAndCounts) {
  cluster c(4);
  // Start with voters {1,2,3}; node 4 is new and empty.
  ASSERT_TRUE(c.at(1).config().is_voter(node_id(4)));  // cluster() boots all as voters
  c.elect(1);
  c.propose(1);
  ASSERT_TRUE(c.at(1).propose_config(voters({1, 2, 3})).ok());
  c.tick_all(2);
  ASSERT_TRUE(c.at(1).propose_config(voters({1, 2, 3, 4})).ok());
  c.tick_all(2);
  c.isolate(2);
  c.isolate(3);
  // With 4 voters a quorum is 3: 1 and 4 alone cannot commit.
  auto b = c.at(1).propose(batch_type::data, 1, bytes(1));
  ASSERT_TRUE(b.ok());
  c.tick_all(1);
  EXPECT_LT(c.at(1).commit(), b->last);
  c.reconnect(2);
  c.tick_all(3);
  EXPECT_GE(c.at(1).commit(), b->last);
}

TEST(LogStart, FollowerBehindTheLeadersLogStartIsReset) {
  // §7 in Keel's form: the leader's retention dropped the entries the follower needs.
  cluster c(3);
  c.elect(1);
  c.isolate(3);
  for (int i = 0; i < 6; ++i)
    c.propose(1);
  const offset commit = c.at(1).commit();
  // Retention on the leader (and 2): only a committed prefix may go.
  const offset start = commit;  // keep the last committed batch
  auto rec = c.at(1).log_start_for(start);
  ASSERT_TRUE(rec.ok());
  EXPECT_EQ(rec->start_prev_term, *c.node(1).log.term_at(start.prev()));
  EXPECT_FALSE(c.at(1).log_start_for(commit.plus(2)).ok());
  c.node(1).log.truncate_prefix(start);
  c.reconnect(3);
  c.tick_all(4);
  bool reset_seen = false;
  for (const ready& rd : c.node(3).readies) {
    if (rd.reset) {
      reset_seen = true;
      EXPECT_EQ(rd.reset->start, start);
      EXPECT_EQ(rd.reset->config, voters({1, 2, 3}));
    }
  }
  EXPECT_TRUE(reset_seen);
  EXPECT_EQ(c.node(3).log.first_offset(), start);
  EXPECT_EQ(c.node(3).log.last_offset(), c.node(1).log.last_offset());
  EXPECT_GE(c.at(3).commit(), commit);
}

TEST(LogStart, SnapshotHookSuppliesStateForTheReset) {
  struct hook final : snapshot_hook {
    offset asked = offset::none();
    shared_bytes snapshot_at(offset through) override {
      asked = through;
      return shared_bytes::copy_of("state", 5);
    }
  } h;
  test_node leader;
  leader.boot = voters({1, 2, 3});
  leader.c = std::make_unique<core>(options_for(1), leader.log, leader.random,
                                    boot_state{leader.hard, leader.boot, offset::none()}, &h);
  for (int i = 0; i < 10; ++i)
    leader.c->tick();
  leader.flush();
  ASSERT_TRUE(leader.c->step(msg(3, 1, 1, vote_response{true, true})).ok());
  leader.flush();
  ASSERT_TRUE(leader.c->step(msg(3, 1, 1, vote_response{false, true})).ok());
  leader.flush();
  ASSERT_TRUE(leader.c->propose(batch_type::data, 2, bytes(3)).ok());
  leader.flush();
  append_response ack;
  ack.match = offset(2);
  ASSERT_TRUE(leader.c->step(msg(3, 1, 1, ack)).ok());
  leader.flush();
  ASSERT_EQ(leader.c->commit(), offset(2));
  leader.log.truncate_prefix(offset(1));  // retention
  // Node 2 never answered the first probe (offsets from 0, now gone); when it shows up the
  // leader cannot send offset 0 any more and resets its log instead.
  ASSERT_TRUE(leader.c->step(msg(2, 1, 1, heartbeat_response{0})).ok());
  bool sent = false;
  for (const message& m : leader.flush()) {
    if (auto* r = std::get_if<reset_request>(&m.body)) {
      sent = true;
      EXPECT_EQ(r->start, offset(1));
      EXPECT_EQ(r->start_prev_term, term_id(1));
      EXPECT_EQ(r->snapshot, shared_bytes::copy_of("state", 5));
    }
  }
  EXPECT_TRUE(sent);
  EXPECT_EQ(h.asked, offset(0));
}

TEST(ReadIndex, AnsweredAfterAQuorumConfirmsLeadership) {
  // §8: the leader records its commit index, confirms it is still leader with a heartbeat round,
  // then the read may be served once applied through that index.
  cluster c(3);
  c.elect(1);
  batch b = c.propose(1);
  c.isolate(2);
  c.isolate(3);
  ASSERT_TRUE(c.at(1).read_index(42).ok());
  c.run();
  for (const ready& rd : c.node(1).readies)
    EXPECT_TRUE(rd.reads.empty());
  c.reconnect(2);
  c.tick_all(1);
  std::vector<read_state> reads;
  for (const ready& rd : c.node(1).readies)
    for (const read_state& r : rd.reads)
      reads.push_back(r);
  ASSERT_EQ(reads.size(), 1u);
  EXPECT_EQ(reads[0].request_id, 42u);
  EXPECT_GE(reads[0].index, b.last);
}

TEST(ReadIndex, RefusedOnFollower) {
  cluster c(3);
  c.elect(1);
  auto s = c.at(2).read_index(1);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.err().code, errc::not_leader);
  EXPECT_EQ(s.err().leader_hint, node_id(1));
}

TEST(Replication, QueuedProposalsGoOutInOneAppendPerFollower) {
  cluster c(3);
  c.elect(1);
  c.node(1).flush();
  for (int i = 0; i < 5; ++i)
    ASSERT_TRUE(c.at(1).propose(batch_type::data, 2, bytes(10)).ok());
  auto out = c.node(1).flush();
  int appends_to_2 = 0;
  for (const message& m : out) {
    if (m.to != node_id(2)) continue;
    if (auto* a = std::get_if<append_request>(&m.body)) {
      ++appends_to_2;
      EXPECT_EQ(a->batches.size(), 5u);
    }
  }
  EXPECT_EQ(appends_to_2, 1);
}

TEST(Replication, InflightWindowBoundsPipelining) {
  test_node n;
  n.boot = voters({1, 2});
  core_options o = options_for(1);
  o.max_inflight_messages = 3;
  o.max_append_bytes = 1;  // one batch per message
  n.start(o);
  for (int i = 0; i < 10; ++i)
    n.c->tick();
  n.flush();
  ASSERT_TRUE(n.c->step(msg(2, 1, 1, vote_response{true, true})).ok());
  n.flush();
  ASSERT_TRUE(n.c->step(msg(2, 1, 1, vote_response{false, true})).ok());
  n.flush();
  append_response ack;
  ack.match = offset(0);
  ASSERT_TRUE(n.c->step(msg(2, 1, 1, ack)).ok());  // now replicating
  n.flush();
  for (int i = 0; i < 10; ++i)
    ASSERT_TRUE(n.c->propose(batch_type::data, 1, bytes(4)).ok());
  int appends = 0;
  for (const message& m : n.flush())
    if (std::holds_alternative<append_request>(m.body)) ++appends;
  EXPECT_EQ(appends, 3);
  ack.match = offset(2);  // frees two slots
  ASSERT_TRUE(n.c->step(msg(2, 1, 1, ack)).ok());
  appends = 0;
  for (const message& m : n.flush())
    if (std::holds_alternative<append_request>(m.body)) ++appends;
  EXPECT_EQ(appends, 2);
}

TEST(Replication, LeaderCountsItselfOnlyOnceDurable) {
  test_node n;
  n.boot = voters({1});
  n.start(options_for(1));
  for (int i = 0; i < 10; ++i)
    n.c->tick();
  ASSERT_EQ(n.c->current_role(), role::leader);
  ready rd = n.c->take_ready();
  EXPECT_EQ(n.c->commit(), offset::none());  // its no-op is not durable yet
  for (const batch& b : rd.batches)
    n.log.append(b);
  n.c->advance();
  EXPECT_EQ(n.c->commit(), offset(0));
}

TEST(Replication, HeartbeatNeverCommitsPastWhatTheFollowerHolds) {
  cluster c(3);
  c.elect(1);
  c.isolate(3);
  c.propose(1);
  c.propose(1);
  c.reconnect(3);
  // 3's match is unknown: the heartbeat tells it a commit clamped to its match.
  c.at(1).tick();
  auto out = c.node(1).flush();
  int beats = 0;
  for (const message& m : out) {
    if (m.to != node_id(3)) continue;
    if (auto* h = std::get_if<heartbeat_request>(&m.body)) {
      ++beats;
      EXPECT_LT(h->commit, c.at(1).commit());
    }
  }
  EXPECT_EQ(beats, 1);
}

TEST(Restart, CommitIsClampedToTheSurvivingLog) {
  // A crash may keep a hard state whose commit index is ahead of the log that survived.
  test_node n;
  fill_log(n.log, {1, 1});
  n.hard = hard_state{term_id(1), node_id::none(), offset(9)};
  n.boot = voters({1, 2, 3});
  n.start(options_for(1));
  EXPECT_EQ(n.c->commit(), offset(1));
}

TEST(Restart, ConfigurationIsRecoveredFromTheLog) {
  test_node n;
  fill_log(n.log, {1});
  n.log.append(batch{batch_type::config, term_id(1), offset(1), offset(1),
                     codec::encode_membership(voters({1, 2}))});
  n.hard = hard_state{term_id(1), node_id::none(), offset(0)};
  n.boot = voters({1, 2, 3});
  n.start(options_for(1));
  EXPECT_EQ(n.c->config(), voters({1, 2}));
  // Truncating the uncommitted config entry reverts to the one before (effective-when-appended).
  ASSERT_TRUE(n.c->step(msg(2, 1, 2,
                            append_request{offset(0),
                                           term_id(1),
                                           offset::none(),
                                           {make_batch(batch_type::data, 2, 1, 1)}}))
                  .ok());
  EXPECT_EQ(n.c->config(), voters({1, 2, 3}));
}

TEST(Step, RejectsMisaddressedAndMalformedMessages) {
  test_node n;
  n.boot = voters({1, 2, 3});
  n.start(options_for(1));
  message wrong_group = msg(2, 1, 1, heartbeat_request{});
  wrong_group.group = group_id(99);
  EXPECT_FALSE(n.c->step(wrong_group).ok());
  EXPECT_FALSE(n.c->step(msg(2, 3, 1, heartbeat_request{})).ok());
  // Batches with a gap.
  auto gap = msg(2, 1, 1,
                 append_request{offset::none(),
                                term_id(0),
                                offset::none(),
                                {make_batch(batch_type::data, 1, 0, 0),
                                 make_batch(batch_type::data, 1, 2, 2)}});
  auto s = n.c->step(gap);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.err().code, errc::malformed);
  EXPECT_EQ(n.c->term(), term_id(0));  // state untouched
}

}  // namespace
}  // namespace keel::raft::testing
