// One test per rule of Figure 2 (and per property of Figure 3) of the Raft paper, "In Search of
// an Understandable Consensus Algorithm (Extended Version)", named by section. Each quotes the
// rule it checks.
#include <gtest/gtest.h>

#include "test_util.h"

namespace keel::raft::testing {
namespace {

// A lone core (node 1 of voters {1,2,3}) whose peers the test plays by hand.
struct solo {
  test_node n;
  explicit solo(std::vector<int64_t> terms = {}, int64_t term = 0, bool pre_vote = false) {
    fill_log(n.log, terms);
    n.hard.term = term_id(term);
    n.boot = voters({1, 2, 3});
    core_options o = options_for(1);
    o.pre_vote = pre_vote;
    n.start(o);
  }
  core& c() { return *n.c; }
  std::vector<message> step(message m) {
    EXPECT_TRUE(c().step(m).ok());
    return n.flush();
  }
  void timeout() {
    for (int i = 0; i < 10; ++i)
      c().tick();
  }
};

// Copies of the bodies of type T (values: the message list is often a temporary).
template <class T>
struct body_list : std::vector<T> {
  // Pointer-like access keeps the tests terse: list[0]->field.
  const T* operator[](size_t i) const { return &std::vector<T>::at(i); }
};
template <class T>
body_list<T> bodies(const std::vector<message>& ms) {
  body_list<T> out;
  for (const message& m : ms)
    if (auto* b = std::get_if<T>(&m.body)) out.push_back(*b);
  return out;
}

// --- Figure 2, rules for all servers -----------------------------------------------------------

TEST(Paper, Sec5_1_HigherTermInAnyRpcConvertsToFollower) {
  // "If RPC request or response contains term T > currentTerm: set currentTerm = T, convert to
  // follower (§5.1)"
  cluster c(3);
  c.elect(1);
  ASSERT_EQ(c.at(1).current_role(), role::leader);
  const term_id t = c.at(1).term();
  ASSERT_TRUE(c.at(1).step(msg(2, 1, t.value() + 5, append_response{})).ok());
  EXPECT_EQ(c.at(1).current_role(), role::follower);
  EXPECT_EQ(c.at(1).term(), term_id(t.value() + 5));
}

TEST(Paper, Sec5_3_CommittedEntriesAreHandedOutForApplying) {
  // "If commitIndex > lastApplied: increment lastApplied, apply log[lastApplied] to state
  // machine (§5.3)": the host learns the new commit index in a Ready.
  cluster c(3);
  c.elect(1);
  batch b = c.propose(1);
  c.tick_all(1);  // heartbeats carry the commit index to followers
  for (uint64_t id : {1, 2, 3})
    EXPECT_GE(c.node(id).committed, b.last) << "node " << id;
}

// --- Followers (§5.2) --------------------------------------------------------------------------

TEST(Paper, Sec5_2_FollowerBecomesCandidateWhenElectionTimeoutElapses) {
  // "If election timeout elapses without receiving AppendEntries RPC from current leader or
  // granting vote to candidate: convert to candidate"
  solo s;
  for (int i = 0; i < 9; ++i)
    s.c().tick();
  EXPECT_EQ(s.c().current_role(), role::follower);
  s.c().tick();
  EXPECT_EQ(s.c().current_role(), role::candidate);
}

TEST(Paper, Sec5_2_FollowerHearingFromLeaderStaysFollower) {
  // "Respond to RPCs from candidates and leaders": a leader's heartbeats reset the timer.
  solo s;
  for (int round = 0; round < 5; ++round) {
    for (int i = 0; i < 9; ++i)
      s.c().tick();
    s.step(msg(2, 1, 1, heartbeat_request{offset::none(), 0}));
  }
  EXPECT_EQ(s.c().current_role(), role::follower);
  EXPECT_EQ(s.c().leader(), node_id(2));
}

TEST(Paper, Sec5_2_GrantingAVoteResetsTheElectionTimer) {
  solo s;
  for (int i = 0; i < 9; ++i)
    s.c().tick();
  auto out = s.step(msg(2, 1, 1, vote_request{false, false, offset::none(), term_id(0)}));
  ASSERT_EQ(bodies<vote_response>(out).size(), 1u);
  EXPECT_TRUE(bodies<vote_response>(out)[0]->granted);
  for (int i = 0; i < 9; ++i)
    s.c().tick();
  EXPECT_EQ(s.c().current_role(), role::follower);
}

// --- Candidates (§5.2) -------------------------------------------------------------------------

TEST(Paper, Sec5_2_CandidateIncrementsTermVotesForSelfAndRequestsVotes) {
  // "On conversion to candidate, start election: increment currentTerm, vote for self, reset
  // election timer, send RequestVote RPCs to all other servers"
  solo s({1, 1, 2}, 2);
  s.timeout();
  auto out = s.n.flush();
  EXPECT_EQ(s.c().term(), term_id(3));
  EXPECT_EQ(s.c().vote(), node_id(1));
  EXPECT_EQ(s.n.hard.term, term_id(3));
  EXPECT_EQ(s.n.hard.vote, node_id(1));
  auto reqs = bodies<vote_request>(out);
  ASSERT_EQ(reqs.size(), 2u);
  for (const auto& r0 : reqs) {
    const auto* r = &r0;
    EXPECT_FALSE(r->pre_vote);
    EXPECT_EQ(r->last_offset, offset(2));
    EXPECT_EQ(r->last_term, term_id(2));
  }
}

TEST(Paper, Sec5_2_CandidateWithVotesFromMajorityBecomesLeader) {
  // "If votes received from majority of servers: become leader"
  solo s;
  s.timeout();
  s.n.flush();
  s.step(msg(2, 1, 1, vote_response{false, true}));
  EXPECT_EQ(s.c().current_role(), role::leader);
}

TEST(Paper, Sec5_2_CandidateReceivingAppendFromNewLeaderBecomesFollower) {
  // "If AppendEntries RPC received from new leader: convert to follower"
  solo s;
  s.timeout();
  s.n.flush();
  s.step(msg(3, 1, 1, append_request{offset::none(), term_id(0), offset::none(), {}}));
  EXPECT_EQ(s.c().current_role(), role::follower);
  EXPECT_EQ(s.c().leader(), node_id(3));
  EXPECT_EQ(s.c().term(), term_id(1));
}

TEST(Paper, Sec5_2_CandidateStartsNewElectionWhenTimeoutElapses) {
  // "If election timeout elapses: start new election" (a split vote)
  solo s;
  s.timeout();
  ASSERT_EQ(s.c().term(), term_id(1));
  s.timeout();
  EXPECT_EQ(s.c().current_role(), role::candidate);
  EXPECT_EQ(s.c().term(), term_id(2));
}

// --- Leaders -----------------------------------------------------------------------------------

TEST(Paper, Sec5_2_LeaderSendsAppendOnElectionAndHeartbeatsWhenIdle) {
  // "Upon election: send initial empty AppendEntries RPCs (heartbeat) to each server; repeat
  // during idle periods to prevent election timeouts (§5.2)". Keel's initial AppendEntries
  // carries the leader's no-op (§8).
  solo s;
  s.timeout();
  s.n.flush();
  auto out = s.step(msg(2, 1, 1, vote_response{false, true}));
  auto appends = bodies<append_request>(out);
  ASSERT_EQ(appends.size(), 2u);
  EXPECT_EQ(appends[0]->batches.at(0).type, batch_type::noop);
  s.c().tick();
  auto beats = bodies<heartbeat_request>(s.n.flush());
  EXPECT_EQ(beats.size(), 2u);
}

TEST(Paper, Sec5_3_LeaderAppendsProposalAndCommitsOnlyAfterMajorityStoredIt) {
  // "If command received from client: append entry to local log, respond after entry applied to
  // state machine (§5.3)"
  cluster c(3);
  c.elect(1);
  c.isolate(2);
  c.isolate(3);
  auto b = c.at(1).propose(batch_type::data, 3, shared_bytes(std::vector<std::byte>(4)));
  ASSERT_TRUE(b.ok());
  c.run();
  EXPECT_EQ(c.node(1).log.last_offset(), b->last);  // in the leader's log...
  EXPECT_LT(c.at(1).commit(), b->base);             // ...but not committed
  c.reconnect(2);
  c.tick_all(3);  // a heartbeat round shows the request to 2 was lost; it is sent again
  EXPECT_EQ(c.at(1).commit(), b->last);  // a majority (1, 2) holds it
}

TEST(Paper, Sec5_3_LeaderSendsFromNextIndexAndAdvancesMatchOnSuccess) {
  // "If last log index >= nextIndex for a follower: send AppendEntries RPC with log entries
  // starting at nextIndex. If successful: update nextIndex and matchIndex for follower (§5.3)"
  cluster c(3);
  c.elect(1);
  batch b = c.propose(1);
  const progress* p = c.at(1).progress_of(node_id(2));
  ASSERT_NE(p, nullptr);
  EXPECT_EQ(p->match, b.last);
  EXPECT_EQ(p->next, b.last.next());
  EXPECT_EQ(p->state, progress_state::replicate);
}

TEST(Paper, Sec5_3_LeaderBacksUpNextIndexOnInconsistencyAndRetries) {
  // "If AppendEntries fails because of log inconsistency: decrement nextIndex and retry (§5.3)";
  // with the follower's hint the leader skips a whole conflicting term at once.
  solo s({1, 1, 1, 4, 4, 5}, 5);  // leader-to-be
  s.timeout();
  s.n.flush();
  s.step(msg(2, 1, 6, vote_response{false, true}));
  ASSERT_EQ(s.c().current_role(), role::leader);
  // Follower 2 holds terms {1,1,1,2,2,2,2,3}: prev 5@5 does not match; its last entry with
  // term <= 5 at or before offset 5 is offset 5 itself (term 2).
  append_response rej;
  rej.reject = true;
  rej.rejected_prev = offset(5);
  rej.hint_offset = offset(5);
  rej.hint_term = term_id(2);
  auto out = s.step(msg(2, 1, 6, rej));
  body_list<append_request> to2;
  for (const message& m : out)
    if (m.to == node_id(2))
      if (auto* a = std::get_if<append_request>(&m.body)) to2.push_back(*a);
  ASSERT_EQ(to2.size(), 1u);
  // Our last entry with term <= 2 is offset 2 (term 1): retry right after it.
  EXPECT_EQ(to2[0]->prev_offset, offset(2));
  EXPECT_EQ(to2[0]->prev_term, term_id(1));
}

TEST(Paper, Sec5_4_2_LeaderCommitsByCountingReplicasOnlyInItsOwnTerm) {
  // "If there exists an N such that N > commitIndex, a majority of matchIndex[i] >= N, and
  // log[N].term == currentTerm: set commitIndex = N (§5.3, §5.4)"
  solo s({1, 2}, 2);
  s.timeout();
  s.n.flush();
  s.step(msg(2, 1, 3, vote_response{false, true}));
  ASSERT_EQ(s.c().current_role(), role::leader);  // no-op at offset 2, term 3
  // Node 2 acknowledges offset 1 (term 2) only: a majority holds it, but it is not of term 3.
  append_response ack;
  ack.match = offset(1);
  s.step(msg(2, 1, 3, ack));
  EXPECT_EQ(s.c().commit(), offset::none());
  // Once the no-op of term 3 is on a majority, it and everything before it commit.
  ack.match = offset(2);
  s.step(msg(2, 1, 3, ack));
  EXPECT_EQ(s.c().commit(), offset(2));
}

// --- AppendEntries receiver --------------------------------------------------------------------

TEST(Paper, Sec5_1_AppendEntriesFromStaleTermIsRejected) {
  // "1. Reply false if term < currentTerm (§5.1)": the stale leader learns our term.
  solo s({1, 2}, 3);
  auto out = s.step(msg(
      2, 1, 2,
      append_request{offset(1), term_id(2), offset(1), {make_batch(batch_type::data, 2, 2, 2)}}));
  EXPECT_EQ(s.n.log.last_offset(), offset(1));
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].term, term_id(3));
}

TEST(Paper, Sec5_3_AppendRejectedWhenPrevEntryDoesNotMatch) {
  // "2. Reply false if log doesn't contain an entry at prevLogIndex whose term matches
  // prevLogTerm (§5.3)"
  solo s({1, 1, 2}, 3);
  auto out = s.step(
      msg(2, 1, 3,
          append_request{
              offset(2), term_id(3), offset::none(), {make_batch(batch_type::data, 3, 3, 3)}}));
  auto r = bodies<append_response>(out);
  ASSERT_EQ(r.size(), 1u);
  EXPECT_TRUE(r[0]->reject);
  EXPECT_EQ(r[0]->rejected_prev, offset(2));
  EXPECT_EQ(r[0]->hint_offset, offset(2));  // last entry with term <= 3
  EXPECT_EQ(r[0]->hint_term, term_id(2));
  EXPECT_EQ(s.n.log.last_offset(), offset(2));
  // Missing entries: the hint is our last offset.
  out = s.step(msg(2, 1, 3, append_request{offset(7), term_id(3), offset::none(), {}}));
  r = bodies<append_response>(out);
  ASSERT_EQ(r.size(), 1u);
  EXPECT_TRUE(r[0]->reject);
  EXPECT_EQ(r[0]->hint_offset, offset(2));
}

TEST(Paper, Sec5_3_ConflictingEntryIsDeletedWithAllThatFollowIt) {
  // "3. If an existing entry conflicts with a new one (same index but different terms), delete
  // the existing entry and all that follow it (§5.3)"
  solo s({1, 1, 2, 2, 2}, 3);
  s.step(msg(2, 1, 3,
             append_request{
                 offset(1), term_id(1), offset::none(), {make_batch(batch_type::data, 3, 2, 2)}}));
  ASSERT_FALSE(s.n.readies.empty());
  EXPECT_EQ(s.n.readies.back().truncate_from, offset(2));
  EXPECT_EQ(s.n.log.last_offset(), offset(2));
  EXPECT_EQ(*s.n.log.term_at(offset(2)), term_id(3));
}

TEST(Paper, Sec5_3_NewEntriesAreAppendedAndExistingOnesKept) {
  // "4. Append any new entries not already in the log"
  solo s({1, 1}, 1);
  const std::vector<batch> bs = {make_batch(batch_type::data, 1, 1, 1, 1),
                                 make_batch(batch_type::data, 1, 2, 4, 1)};
  s.step(msg(2, 1, 1, append_request{offset(0), term_id(1), offset::none(), bs}));
  EXPECT_EQ(s.n.log.last_offset(), offset(4));
  const size_t readies = s.n.readies.size();
  // A duplicate (retransmitted) request changes nothing and truncates nothing.
  auto out = s.step(msg(2, 1, 1, append_request{offset(0), term_id(1), offset::none(), bs}));
  EXPECT_EQ(s.n.log.last_offset(), offset(4));
  for (size_t i = readies; i < s.n.readies.size(); ++i) {
    EXPECT_FALSE(s.n.readies[i].truncate_from.has_value());
    EXPECT_TRUE(s.n.readies[i].batches.empty());
  }
  EXPECT_EQ(bodies<append_response>(out).at(0).match, offset(4));
}

TEST(Paper, Sec5_3_FollowerCommitIsMinOfLeaderCommitAndLastNewEntry) {
  // "5. If leaderCommit > commitIndex, set commitIndex = min(leaderCommit, index of last new
  // entry)"; entries past what this request verified (a stale suffix) are not committed.
  solo s({1, 1, 1, 1, 1}, 2);
  s.step(msg(2, 1, 2, append_request{offset(0), term_id(1), offset(4), {}}));
  EXPECT_EQ(s.c().commit(), offset(0));
  s.step(msg(
      2, 1, 2,
      append_request{offset(0), term_id(1), offset(4), {make_batch(batch_type::data, 1, 1, 1)}}));
  EXPECT_EQ(s.c().commit(), offset(1));
}

// --- RequestVote receiver ----------------------------------------------------------------------

TEST(Paper, Sec5_1_VoteRequestFromStaleTermIsRejected) {
  // "1. Reply false if term < currentTerm (§5.1)"
  solo s({}, 5);
  auto out = s.step(msg(2, 1, 4, vote_request{false, false, offset(10), term_id(4)}));
  EXPECT_EQ(s.c().vote(), node_id::none());
  for (const auto& r : bodies<vote_response>(out))
    EXPECT_FALSE(r.granted);
}

TEST(Paper, Sec5_2_AtMostOneVotePerTermFirstComeFirstServed) {
  // "2. If votedFor is null or candidateId, and candidate's log is at least as up-to-date as
  // receiver's log, grant vote (§5.2, §5.4)"
  solo s;
  auto a = bodies<vote_response>(
      s.step(msg(2, 1, 1, vote_request{false, false, offset::none(), term_id(0)})));
  auto b = bodies<vote_response>(
      s.step(msg(3, 1, 1, vote_request{false, false, offset::none(), term_id(0)})));
  auto again = bodies<vote_response>(
      s.step(msg(2, 1, 1, vote_request{false, false, offset::none(), term_id(0)})));
  ASSERT_EQ(a.size(), 1u);
  ASSERT_EQ(b.size(), 1u);
  ASSERT_EQ(again.size(), 1u);
  EXPECT_TRUE(a[0]->granted);
  EXPECT_FALSE(b[0]->granted);
  EXPECT_TRUE(again[0]->granted);  // votedFor == candidateId
  EXPECT_EQ(s.c().vote(), node_id(2));
}

TEST(Paper, Sec5_4_1_VoteDeniedToCandidateWithLessUpToDateLog) {
  // §5.4.1: "If the logs have last entries with different terms, then the log with the later
  // term is more up-to-date. If the logs end with the same term, then whichever log is longer is
  // more up-to-date."
  struct tcase {
    int64_t last, last_term;
    bool granted;
  } cases[] = {{2, 2, true}, {5, 2, true}, {1, 2, false}, {9, 1, false}, {0, 3, true}};
  for (const auto& tc : cases) {
    solo s({1, 1, 2}, 2);
    auto r = bodies<vote_response>(
        s.step(msg(2, 1, 3, vote_request{false, false, offset(tc.last), term_id(tc.last_term)})));
    ASSERT_EQ(r.size(), 1u);
    EXPECT_EQ(r[0]->granted, tc.granted) << tc.last << "@" << tc.last_term;
  }
}

// --- Persistent state --------------------------------------------------------------------------

TEST(Paper, Fig2_VoteAndTermAreDurableBeforeTheGrantIsSent) {
  // "Persistent state on all servers: (Updated on stable storage before responding to RPCs)"
  solo s;
  ASSERT_TRUE(
      s.c().step(msg(2, 1, 4, vote_request{false, false, offset::none(), term_id(0)})).ok());
  ready rd = s.c().take_ready();
  ASSERT_TRUE(rd.hard_state_to_persist.has_value());
  EXPECT_EQ(rd.hard_state_to_persist->term, term_id(4));
  EXPECT_EQ(rd.hard_state_to_persist->vote, node_id(2));
  EXPECT_TRUE(rd.hard_state_changes_term_or_vote);
  EXPECT_TRUE(rd.messages.empty());
  ASSERT_EQ(rd.messages_after_persist.size(), 1u);
  EXPECT_TRUE(std::get<vote_response>(rd.messages_after_persist[0].body).granted);
  s.c().advance();
}

TEST(Paper, Fig2_AppendIsAcknowledgedOnlyAfterEntriesAreDurable) {
  solo s({1}, 1);
  ASSERT_TRUE(
      s.c()
          .step(msg(
              2, 1, 1,
              append_request{
                  offset(0), term_id(1), offset::none(), {make_batch(batch_type::data, 1, 1, 2)}}))
          .ok());
  ready rd = s.c().take_ready();
  ASSERT_EQ(rd.batches.size(), 1u);
  EXPECT_TRUE(bodies<append_response>(rd.messages).empty());
  auto acks = bodies<append_response>(rd.messages_after_persist);
  ASSERT_EQ(acks.size(), 1u);
  EXPECT_EQ(acks[0]->match, offset(2));
  s.c().advance();
}

// --- Figure 3 properties -----------------------------------------------------------------------

TEST(Paper, Fig3_ElectionSafety_AtMostOneLeaderPerTerm) {
  // "Election Safety: at most one leader can be elected in a given term. §5.2"
  cluster c(5, /*pre_vote=*/false, /*check_quorum=*/false);
  std::map<int64_t, uint64_t> leader_of;
  for (int round = 0; round < 30; ++round) {
    c.isolate(uint64_t(round % 5 + 1));
    c.tick_all(3 + round % 7);
    c.reconnect(uint64_t(round % 5 + 1));
    c.tick_all(2);
    for (uint64_t id = 1; id <= 5; ++id) {
      if (c.at(id).current_role() != role::leader) continue;
      auto [it, fresh] = leader_of.try_emplace(c.at(id).term().value(), id);
      EXPECT_EQ(it->second, id) << "two leaders in term " << it->first;
    }
  }
  EXPECT_FALSE(leader_of.empty());
}

TEST(Paper, Fig3_LeaderAppendOnly_LeaderNeverTruncatesItsLog) {
  // "Leader Append-Only: a leader never overwrites or deletes entries in its log; it only appends
  // new entries. §5.3"
  cluster c(3);
  c.elect(1);
  for (int i = 0; i < 5; ++i)
    c.propose(1);
  c.isolate(3);
  for (int i = 0; i < 5; ++i)
    c.propose(1);
  c.reconnect(3);
  c.tick_all(3);
  for (const ready& rd : c.node(1).readies) {
    EXPECT_FALSE(rd.truncate_from.has_value());
    EXPECT_FALSE(rd.reset.has_value());
  }
}

TEST(Paper, Fig3_LogMatching_SameOffsetAndTermMeansSamePrefix) {
  // "Log Matching: if two logs contain an entry with the same index and term, then the logs are
  // identical in all entries up through the given index. §5.3"
  cluster c(3, /*pre_vote=*/true, /*check_quorum=*/false);
  c.elect(1);
  for (int i = 0; i < 3; ++i)
    c.propose(1, 1);
  c.isolate(1);  // leader 1 keeps appending alone; 2 takes over and writes other entries
  for (int i = 0; i < 3; ++i)
    ASSERT_TRUE(c.at(1).propose(batch_type::data, 1, shared_bytes()).ok());
  c.node(1).flush();
  c.elect(2);
  for (int i = 0; i < 4; ++i)
    c.propose(2, 2);
  c.reconnect(1);
  c.tick_all(3);
  const auto& a = c.node(1).log;
  const auto& b = c.node(2).log;
  ASSERT_EQ(a.last_offset(), b.last_offset());
  for (size_t i = 0; i < a.batches().size(); ++i) {
    EXPECT_EQ(a.batches()[i].b, b.batches()[i].b);
    EXPECT_EQ(a.batches()[i].prefix_hash, b.batches()[i].prefix_hash);
  }
}

TEST(Paper, Fig3_LeaderCompleteness_StaleNodeCannotBeElected) {
  // "Leader Completeness: if a log entry is committed in a given term, then that entry will be
  // present in the logs of the leaders for all higher-numbered terms. §5.4"
  cluster c(3, /*pre_vote=*/false, /*check_quorum=*/false);
  c.elect(1);
  c.isolate(3);
  batch b = c.propose(1);
  ASSERT_GE(c.at(1).commit(), b.last);
  c.isolate(1);
  c.reconnect(3);
  // 3 lacks the committed entry: 2 refuses it; it can never win.
  for (int i = 0; i < 60; ++i) {
    c.at(3).tick();
    c.run();
    EXPECT_NE(c.at(3).current_role(), role::leader);
  }
  c.elect(2);
  ASSERT_EQ(c.at(2).current_role(), role::leader);
  EXPECT_EQ(*c.at(2).log().term_at(b.last), b.term);
}

TEST(Paper, Fig3_StateMachineSafety_CommittedEntriesAgreeEverywhere) {
  // "State Machine Safety: if a server has applied a log entry at a given index to its state
  // machine, no other server will ever apply a different log entry for the same index. §5.4.3"
  cluster c(5, /*pre_vote=*/true, /*check_quorum=*/false);
  c.elect(1);
  for (int i = 0; i < 4; ++i)
    c.propose(1, uint8_t(i));
  c.isolate(1);
  c.isolate(2);
  c.elect(3);
  for (int i = 0; i < 4; ++i)
    c.propose(3, uint8_t(10 + i));
  c.reconnect(1);
  c.reconnect(2);
  c.tick_all(3);
  const offset common = c.node(3).committed;
  for (uint64_t id = 1; id <= 5; ++id) {
    ASSERT_GE(c.node(id).committed, common);
    for (int64_t o = 0; o <= common.value(); ++o)
      EXPECT_EQ(*c.node(id).log.term_at(offset(o)), *c.node(3).log.term_at(offset(o)));
  }
}

}  // namespace
}  // namespace keel::raft::testing
