#include "keel/raft/core.h"

#include <algorithm>

#include "keel/raft/codec.h"
#include "keel/raft/quorum.h"

namespace keel::raft {

core::core(core_options options, const log_reader& storage, random_source& random, boot_state boot,
           snapshot_hook* snapshots)
    : options_(options), random_(random), snapshots_(snapshots), log_(storage) {
  KEEL_RAFT_ASSERT(!options_.self.is_none(), "a core needs a node id");
  KEEL_RAFT_ASSERT(
      options_.election_ticks > options_.heartbeat_ticks && options_.heartbeat_ticks > 0,
      "election timeout must exceed the heartbeat interval");
  KEEL_RAFT_ASSERT(boot.config.valid(), "boot membership must be valid");
  term_ = boot.hard.term;
  vote_ = boot.hard.vote;
  // A crash may lose the commit index or entries written after it (only fsynced bytes survive):
  // the commit index is a hint, clamped to what the log holds. Everything before the log start
  // is committed by definition (only a committed prefix is ever truncated).
  commit_ = max(min(boot.hard.commit, log_.last()), log_.first().prev());
  commit_reported_ = commit_;
  hard_handed_ = hard_state{term_, vote_, commit_};
  KEEL_RAFT_ASSERT(log_.last_term() <= term_,
                   "host contract: term must be durable before entries of that term (ready.h)");
  configs_.emplace_back(boot.config_offset, boot.config);
  if (log_.first() <= log_.last()) {
    for (const batch& b : storage.config_batches(log_.first(), log_.last())) {
      auto c = codec::decode_membership(std::span(b.payload.data(), b.payload.size()));
      KEEL_RAFT_ASSERT(c.ok(), "a configuration entry in the log must decode");
      apply_config_entry(b.base, std::move(*c));
    }
  }
  on_commit_advanced();
  reset_timers();
}

// ---------------------------------------------------------------------------------------------
// Roles and timers

void core::reset_timers() {
  election_elapsed_ = 0;
  heartbeat_elapsed_ = 0;
  // §5.2: randomized election timeouts in [T, 2T) make split votes rare.
  randomized_election_ticks_ =
      options_.election_ticks + int(random_.next_below(uint64_t(options_.election_ticks)));
}

bool core::in_lease() const {
  // Ongaro §4.2.3 / §6.2: a voter that heard from a leader within the minimum election timeout
  // ignores vote requests, so a removed or partitioned node cannot depose a working leader.
  return options_.check_quorum && !leader_.is_none() && election_elapsed_ < options_.election_ticks;
}

void core::become_follower(term_id t, node_id leader) {
  KEEL_RAFT_ASSERT(t >= term_, "terms never decrease (Figure 2: currentTerm increases)");
  if (t > term_) {
    term_ = t;
    vote_ = node_id::none();
  }
  role_ = role::follower;
  leader_ = leader;
  votes_.clear();
  progress_.clear();
  uncommitted_.clear();
  uncommitted_bytes_ = 0;
  broadcast_pending_ = false;
  pending_reads_.clear();
  reads_awaiting_term_commit_.clear();
  abort_transfer();
  reset_timers();
}

void core::become_pre_candidate() {
  KEEL_RAFT_ASSERT(role_ != role::leader, "a leader does not pre-campaign");
  // PreVote (Ongaro §9.6): neither term nor vote changes until a majority says it would vote.
  role_ = role::pre_candidate;
  leader_ = node_id::none();
  votes_.clear();
  reset_timers();
}

void core::become_candidate() {
  KEEL_RAFT_ASSERT(role_ != role::leader, "a leader does not campaign");
  // §5.2: increment currentTerm, vote for self.
  term_ = term_.next();
  vote_ = options_.self;
  role_ = role::candidate;
  leader_ = node_id::none();
  votes_.clear();
  reset_timers();
}

void core::become_leader() {
  KEEL_RAFT_ASSERT(role_ == role::candidate, "only a candidate becomes leader");
  role_ = role::leader;
  leader_ = options_.self;
  abort_transfer();
  reset_timers();
  progress_.clear();
  sync_progress_with_config();
  // §5.4.2 / §8: a leader cannot know which earlier-term entries are committed until it commits
  // one of its own; the no-op forces that at once.
  batch noop{batch_type::noop, term_, log_.last().next(), log_.last().next(), {}};
  noop_offset_ = noop.base;
  append_own(std::move(noop));
}

void core::campaign(campaign_kind kind) {
  if (!promotable()) return;
  if (kind == campaign_kind::pre_vote) {
    become_pre_candidate();
  } else {
    become_candidate();
  }
  votes_[options_.self] = true;
  const bool pre = kind == campaign_kind::pre_vote;
  const term_id t = pre ? term_.next() : term_;
  if (quorum::tally(config().voters, votes_) == quorum::vote_outcome::won) {
    // A single voter wins at once.
    if (pre) {
      campaign(campaign_kind::election);
    } else {
      become_leader();
    }
    return;
  }
  for (node_id n : config().voters) {
    if (n == options_.self) continue;
    vote_request r{pre, kind == campaign_kind::transfer, log_.last(), log_.last_term()};
    // A real vote request goes after the candidate's own vote is durable: otherwise a crash
    // could let it vote twice in this term.
    send_with_term(n, t, r, /*after_persist=*/!pre);
  }
}

void core::tick() {
  if (role_ == role::leader) {
    ++heartbeat_elapsed_;
    ++election_elapsed_;
    if (election_elapsed_ >= options_.election_ticks) {
      election_elapsed_ = 0;
      if (options_.check_quorum) {
        // CheckQuorum (Ongaro §6.2): step down unless a quorum was heard from this round.
        size_t active = 0;
        for (node_id n : config().voters) {
          if (n == options_.self) {
            ++active;
          } else if (auto it = progress_.find(n);
                     it != progress_.end() && it->second.recent_active) {
            ++active;
          }
        }
        if (active < config().quorum()) {
          become_follower(term_, node_id::none());
          return;
        }
        for (auto& [n, pr] : progress_)
          pr.recent_active = false;
      }
      // A transfer that did not finish within an election timeout is abandoned (§3.10).
      abort_transfer();
    }
    if (heartbeat_elapsed_ >= options_.heartbeat_ticks) {
      heartbeat_elapsed_ = 0;
      broadcast_heartbeats();
    }
    return;
  }
  ++election_elapsed_;
  if (promotable() && election_elapsed_ >= randomized_election_ticks_) {
    campaign(options_.pre_vote ? campaign_kind::pre_vote : campaign_kind::election);
  }
}

// ---------------------------------------------------------------------------------------------
// Messages

void core::send(node_id to, message_body body, bool after_persist) {
  send_with_term(to, term_, std::move(body), after_persist);
}

void core::send_with_term(node_id to, term_id t, message_body body, bool after_persist) {
  KEEL_RAFT_ASSERT(to != options_.self, "a node never messages itself");
  outbox_.push_back(
      outgoing{message{options_.group, options_.self, to, t, std::move(body)}, after_persist});
}

status core::step(const message& m) {
  if (m.group != options_.group) return make_error(errc::invalid_argument, "wrong group");
  if (m.to != options_.self) return make_error(errc::invalid_argument, "wrong recipient");
  if (m.from == options_.self) return make_error(errc::invalid_argument, "message from self");
  if (auto v = codec::validate(m); !v.ok()) return v;

  const auto* vreq = std::get_if<vote_request>(&m.body);
  const auto* vresp = std::get_if<vote_response>(&m.body);
  const bool from_leader = std::holds_alternative<append_request>(m.body) ||
                           std::holds_alternative<heartbeat_request>(m.body) ||
                           std::holds_alternative<reset_request>(m.body);

  if (m.term > term_) {
    if (vreq && !vreq->transfer && in_lease()) return ok_status();
    if (vreq && vreq->pre_vote) {
      // A pre-vote never changes our term.
    } else if (vresp && vresp->pre_vote && vresp->granted) {
      // Granted pre-votes carry the term we would campaign in; handled below.
    } else {
      // Figure 2, all servers: "If RPC request or response contains term T > currentTerm: set
      // currentTerm = T, convert to follower."
      become_follower(m.term, from_leader ? m.from : node_id::none());
    }
  } else if (m.term < term_) {
    if (from_leader && (options_.check_quorum || options_.pre_vote)) {
      // A stale leader (e.g. one that was partitioned) learns the newer term and steps down;
      // with PreVote/CheckQuorum it could otherwise never find out, since we will not vote.
      send(m.from, heartbeat_response{0}, false);
    } else if (vreq && vreq->pre_vote) {
      send(m.from, vote_response{true, false}, false);
    }
    // Figure 2: requests and responses from older terms are otherwise ignored.
    return ok_status();
  }

  std::visit(
      [&](const auto& body) {
        using T = std::decay_t<decltype(body)>;
        if constexpr (std::is_same_v<T, vote_request>) {
          on_vote_request(m, body);
        } else if constexpr (std::is_same_v<T, vote_response>) {
          on_vote_response(m, body);
        } else if constexpr (std::is_same_v<T, append_request>) {
          on_append_request(m, body);
        } else if constexpr (std::is_same_v<T, append_response>) {
          on_append_response(m, body);
        } else if constexpr (std::is_same_v<T, heartbeat_request>) {
          on_heartbeat_request(m, body);
        } else if constexpr (std::is_same_v<T, heartbeat_response>) {
          on_heartbeat_response(m, body);
        } else if constexpr (std::is_same_v<T, reset_request>) {
          on_reset_request(m, body);
        } else if constexpr (std::is_same_v<T, timeout_now>) {
          on_timeout_now(m);
        }
      },
      m.body);
  return ok_status();
}

void core::on_vote_request(const message& m, const vote_request& r) {
  // §5.2: one vote per term, first come first served; a pre-vote for a later term is free.
  const bool can_vote =
      vote_ == m.from || (vote_.is_none() && leader_.is_none()) || (r.pre_vote && m.term > term_);
  // §5.4.1: grant only if the candidate's log is at least as up-to-date as ours: compare the
  // last terms, then the lengths.
  const term_id my_last_term = log_.last_term();
  const bool up_to_date =
      r.last_term > my_last_term || (r.last_term == my_last_term && r.last_offset >= log_.last());
  if (can_vote && up_to_date) {
    if (!r.pre_vote) {
      vote_ = m.from;
      election_elapsed_ = 0;
    }
    // The grant carries the candidate's term so a pre-candidate can count it. A real grant waits
    // for our vote to be durable (Figure 2: persistent state updated before responding).
    send_with_term(m.from, m.term, vote_response{r.pre_vote, true}, !r.pre_vote);
  } else {
    send(m.from, vote_response{r.pre_vote, false}, false);
  }
}

void core::on_vote_response(const message& m, const vote_response& r) {
  if (role_ == role::pre_candidate && r.pre_vote) {
    if (m.term != term_.next() && !(m.term == term_ && !r.granted)) return;
  } else if (role_ == role::candidate && !r.pre_vote) {
    if (m.term != term_) return;
  } else {
    return;
  }
  votes_.emplace(m.from, r.granted);
  switch (quorum::tally(config().voters, votes_)) {
    case quorum::vote_outcome::won:
      if (role_ == role::pre_candidate) {
        campaign(campaign_kind::election);
      } else {
        become_leader();
      }
      break;
    case quorum::vote_outcome::lost:
      become_follower(term_, node_id::none());
      break;
    case quorum::vote_outcome::pending:
      break;
  }
}

void core::on_append_request(const message& m, const append_request& r) {
  if (role_ != role::follower) become_follower(term_, m.from);  // §5.2: a candidate yields
  KEEL_RAFT_ASSERT(leader_.is_none() || leader_ == m.from, "two leaders in one term (§5.2)");
  leader_ = m.from;
  election_elapsed_ = 0;

  // Everything up to our commit index is committed, so it matches the leader's log (Leader
  // Completeness, §5.4): skip what the leader sends there and treat commit as the match point.
  offset prev = r.prev_offset;
  size_t first = 0;
  if (prev < commit_) {
    while (first < r.batches.size() && r.batches[first].last <= commit_)
      ++first;
    prev = first < r.batches.size() ? r.batches[first].base.prev() : commit_;
    if (prev < commit_) prev = commit_;
  } else if (!log_.matches(prev, r.prev_term)) {
    // §5.3: "Reply false if log doesn't contain an entry at prevLogIndex whose term matches
    // prevLogTerm", with a hint for fast backtracking.
    append_response resp;
    resp.reject = true;
    resp.rejected_prev = r.prev_offset;
    if (prev > log_.last()) {
      resp.hint_offset = log_.last();
    } else {
      resp.hint_offset = log_.last_at_or_below_term(prev, r.prev_term);
    }
    auto ht = log_.term_at(resp.hint_offset);
    resp.hint_term = ht.ok() ? *ht : term_id(0);
    resp.match = offset::none();
    send(m.from, resp, false);
    return;
  }

  offset match = prev;
  for (size_t i = first; i < r.batches.size(); ++i) {
    const batch& b = r.batches[i];
    if (b.last <= commit_) continue;
    if (b.base <= log_.last()) {
      if (b.last <= log_.last() && log_.matches(b.base, b.term) && log_.matches(b.last, b.term)) {
        match = b.last;  // §5.3: an existing entry that matches stays
        continue;
      }
      // §5.3: "If an existing entry conflicts with a new one (same index but different terms),
      // delete the existing entry and all that follow it."
      KEEL_RAFT_ASSERT(b.base > commit_, "a committed entry conflicts with the leader (§5.4)");
      log_.truncate_suffix(b.base);
      on_truncated(b.base);
    }
    KEEL_RAFT_ASSERT(b.base == log_.last().next(), "appended batches must continue the log");
    log_.append(b);
    if (b.type == batch_type::config) {
      auto c = codec::decode_membership(std::span(b.payload.data(), b.payload.size()));
      // A config entry that does not decode came from a leader of another version or a bug; the
      // entry is still stored (the log must match the leader's) but not applied.
      if (c.ok()) apply_config_entry(b.base, std::move(*c));
    }
    match = b.last;
  }
  // Figure 2: "If leaderCommit > commitIndex, set commitIndex = min(leaderCommit, index of last
  // new entry)": only entries verified to match the leader in this request.
  const offset new_commit = min(r.leader_commit, match);
  if (new_commit > commit_) commit_to(new_commit);

  append_response resp;
  resp.match = match;
  resp.rejected_prev = offset::none();
  resp.hint_offset = offset::none();
  send(m.from, resp, /*after_persist=*/true);
}

void core::on_append_response(const message& m, const append_response& r) {
  if (role_ != role::leader) return;
  auto it = progress_.find(m.from);
  if (it == progress_.end()) return;
  progress& pr = it->second;
  pr.recent_active = true;
  if (r.reject) {
    // Fast backtracking: jump to the last offset where our log has a term <= the follower's hint.
    offset hint = log_.last_at_or_below_term(r.hint_offset, r.hint_term);
    if (pr.on_reject(r.rejected_prev, hint)) {
      if (pr.state == progress_state::replicate) pr.become_probe();
      send_appends(m.from, false);
    }
    return;
  }
  KEEL_RAFT_ASSERT(r.match <= log_.last(), "a follower acked offsets the leader never had");
  const bool was_reset = pr.state == progress_state::reset;
  const bool updated = pr.on_accept(r.match);
  if (pr.state == progress_state::probe || (was_reset && pr.match >= pr.reset_offset)) {
    pr.become_replicate();
  }
  if (updated) maybe_commit();
  if (role_ != role::leader) return;  // a commit may have removed us
  if (m.from == transferee_ && pr.match == log_.last()) {
    send(m.from, timeout_now{}, false);  // §3.10: the target is caught up
  }
  send_appends(m.from, false);
}

void core::on_heartbeat_request(const message& m, const heartbeat_request& r) {
  if (role_ != role::follower) become_follower(term_, m.from);
  KEEL_RAFT_ASSERT(leader_.is_none() || leader_ == m.from, "two leaders in one term (§5.2)");
  leader_ = m.from;
  election_elapsed_ = 0;
  // The leader clamps the commit to what it knows we hold; clamp to our log as well.
  const offset c = min(r.commit, log_.last());
  if (c > commit_) commit_to(c);
  send(m.from, heartbeat_response{r.read_seq}, false);
}

void core::on_heartbeat_response(const message& m, const heartbeat_response& r) {
  if (role_ != role::leader) return;
  auto it = progress_.find(m.from);
  if (it == progress_.end()) return;
  progress& pr = it->second;
  pr.recent_active = true;
  pr.read_ack_seq = std::max(pr.read_ack_seq, r.read_seq);
  // A heartbeat reply shows the follower is reachable: retry whatever may have been lost.
  if (pr.state == progress_state::reset) {
    pr.become_probe();
  } else if (pr.state == progress_state::probe) {
    pr.probe_sent = false;
  } else {
    // Pipelined requests can be lost, or rejected after a later one was accepted (the
    // rejection is then stale and ignored). Either way acks stop: fall back to probing.
    if (pr.inflight.count() > 0 && pr.match == pr.stall_mark) {
      if (++pr.stalled_rounds >= options_.stall_rounds) pr.become_probe();
    } else {
      pr.stalled_rounds = 0;
    }
    pr.stall_mark = pr.match;
  }
  if (pr.match < log_.last()) send_appends(m.from, false);
  if (r.read_seq != 0) release_reads();
}

void core::on_reset_request(const message& m, const reset_request& r) {
  if (role_ != role::follower) become_follower(term_, m.from);
  KEEL_RAFT_ASSERT(leader_.is_none() || leader_ == m.from, "two leaders in one term (§5.2)");
  leader_ = m.from;
  election_elapsed_ = 0;
  const offset through = r.start.prev();
  append_response resp;
  resp.rejected_prev = offset::none();
  resp.hint_offset = offset::none();
  if (through <= commit_) {
    resp.match = commit_;  // nothing to do: we already hold (and committed) that prefix
  } else if (log_.matches(through, r.start_prev_term)) {
    // §7: "If existing log entry has same index and term as snapshot's last included entry,
    // retain log entries following it."
    commit_to(through);
    resp.match = through;
  } else {
    // §7: "Discard the entire log", restart it at the leader's log start.
    log_.reset(r.start, r.start_prev_term);
    configs_.clear();
    configs_.emplace_back(r.config_offset, r.config);
    reset_to_hand_ = log_reset{r.start, r.start_prev_term, r.config, r.config_offset, r.snapshot};
    commit_ = through;
    on_commit_advanced();
    resp.match = through;
  }
  send(m.from, resp, /*after_persist=*/true);
}

void core::on_timeout_now(const message& m) {
  if (role_ != role::follower || m.from != leader_) return;
  // §3.10: start an election now, skipping PreVote; voters skip their lease check.
  campaign(campaign_kind::transfer);
}

// ---------------------------------------------------------------------------------------------
// Log and configuration

void core::append_own(batch b) {
  KEEL_RAFT_ASSERT(role_ == role::leader, "only a leader appends its own batches");
  const uint64_t cost = batch_cost_bytes(b);
  const offset last = b.last;
  const bool is_config = b.type == batch_type::config;
  membership config;
  if (is_config) {
    auto c = codec::decode_membership(std::span(b.payload.data(), b.payload.size()));
    KEEL_RAFT_ASSERT(c.ok(), "own config entry must decode");
    config = std::move(*c);
  }
  const offset base = b.base;
  log_.append(std::move(b));
  uncommitted_.emplace_back(last, cost);
  uncommitted_bytes_ += cost;
  if (is_config) apply_config_entry(base, std::move(config));
  broadcast_pending_ = true;
  // A single voter commits on its own durability alone; maybe_commit runs again in advance().
}

void core::apply_config_entry(offset at, membership config) {
  // A newer committed configuration is already known (after a log-start reset): older entries
  // replayed from the leader's log change nothing.
  if (!configs_.empty() && configs_.back().first >= at) return;
  configs_.emplace_back(at, std::move(config));
  if (role_ == role::leader) sync_progress_with_config();
}

void core::on_truncated(offset from) {
  // Configuration entries take effect when appended, so removing them reverts to the one before.
  while (configs_.size() > 1 && configs_.back().first >= from)
    configs_.pop_back();
}

void core::sync_progress_with_config() {
  const membership& c = config();
  for (node_id n : c.members()) {
    if (n == options_.self || progress_.count(n)) continue;
    progress_.emplace(
        n, progress(log_.last(), options_.max_inflight_messages, options_.max_inflight_bytes));
  }
  for (auto it = progress_.begin(); it != progress_.end();) {
    it = c.contains(it->first) ? std::next(it) : progress_.erase(it);
  }
  if (!transferee_.is_none() && !c.is_voter(transferee_)) abort_transfer();
}

const progress* core::progress_of(node_id n) const {
  auto it = progress_.find(n);
  return it == progress_.end() ? nullptr : &it->second;
}

const membership& core::committed_config() const {
  const membership* c = &configs_.front().second;
  for (const auto& [at, m] : configs_)
    if (at <= commit_) c = &m;
  return *c;
}

void core::maybe_commit() {
  if (role_ != role::leader) return;
  // §5.3/§5.4.2: N is committed once a majority of voters hold it durably (the leader counts
  // itself only once its own write is durable) and log[N].term == currentTerm.
  const int64_t n = quorum::majority_value(
      config().voters,
      [&](node_id id) -> int64_t {
        if (id == options_.self) return own_match().value();
        auto it = progress_.find(id);
        return it == progress_.end() ? offset::none().value() : it->second.match.value();
      },
      offset::none().value());
  const offset candidate(n);
  if (candidate <= commit_) return;
  auto t = log_.term_at(candidate);
  KEEL_RAFT_ASSERT(t.ok(), "a quorum-matched offset must be in the leader's log");
  if (*t != term_) return;  // §5.4.2: never commit an older term's entry by counting replicas
  commit_to(candidate);
}

void core::commit_to(offset c) {
  KEEL_RAFT_ASSERT(c > commit_, "commit index only moves forward");
  KEEL_RAFT_ASSERT(c <= log_.last(), "commit index beyond the log end");
  commit_ = c;
  on_commit_advanced();
}

void core::on_commit_advanced() {
  // Keep only the latest committed configuration and those after it.
  size_t keep_from = 0;
  for (size_t i = 0; i < configs_.size(); ++i)
    if (configs_[i].first <= commit_) keep_from = i;
  configs_.erase(configs_.begin(), configs_.begin() + long(keep_from));
  if (role_ != role::leader) return;
  while (!uncommitted_.empty() && uncommitted_.front().first <= commit_) {
    uncommitted_bytes_ -= uncommitted_.front().second;
    uncommitted_.pop_front();
  }
  broadcast_pending_ = true;  // followers learn the new commit index
  if (commit_ >= noop_offset_ && !reads_awaiting_term_commit_.empty()) {
    auto waiting = std::move(reads_awaiting_term_commit_);
    reads_awaiting_term_commit_.clear();
    for (uint64_t id : waiting) {
      auto s = read_index(id);
      KEEL_RAFT_ASSERT(s.ok(), "a leader with a committed term entry accepts reads");
    }
  }
  // Ongaro §4.2.2: a leader removed from the configuration steps down once the removal commits.
  if (!config().is_voter(options_.self) && config_offset() <= commit_) {
    become_follower(term_, node_id::none());
  }
}

// ---------------------------------------------------------------------------------------------
// Replication

void core::broadcast_appends() {
  for (auto& [n, pr] : progress_)
    send_appends(n, false);
}

void core::send_appends(node_id to, bool allow_empty) {
  if (!send_one_append(to, allow_empty)) return;
  // Pipelining (replicate state): keep sending while the window allows and entries remain.
  while (true) {
    const progress& pr = progress_.at(to);
    if (pr.state != progress_state::replicate || pr.next > log_.last()) break;
    if (!send_one_append(to, false)) break;
  }
}

bool core::send_one_append(node_id to, bool allow_empty) {
  progress& pr = progress_.at(to);
  if (pr.paused()) return false;
  if (pr.next < log_.first()) {
    send_reset(to);
    return false;
  }
  offset prev = pr.next.prev();
  std::vector<batch> batches;
  if (pr.next <= log_.last()) {
    auto r = log_.read(pr.next, log_.last(), options_.max_append_bytes);
    if (!r.ok()) {
      send_reset(to);  // retention moved the start since we looked
      return false;
    }
    batches = std::move(*r);
    if (batches.front().base < pr.next) {
      // Backtracking can land inside a batch; batches are sent whole, so start at its base and
      // keep next == prev + 1, which is how the reply is matched to this request.
      pr.next = batches.front().base;
      prev = pr.next.prev();
    }
  }
  if (batches.empty() && !allow_empty && pr.state == progress_state::replicate) return false;
  auto prev_term = log_.term_at(prev);
  if (!prev_term.ok()) {
    send_reset(to);
    return false;
  }
  uint64_t bytes = 0;
  for (const batch& b : batches)
    bytes += batch_cost_bytes(b);
  const offset last = batches.empty() ? prev : batches.back().last;
  const bool carried = !batches.empty();
  append_request req{prev, *prev_term, commit_, std::move(batches)};
  pr.sent(last, bytes, carried);
  send(to, std::move(req), false);
  return true;
}

void core::send_reset(node_id to) {
  progress& pr = progress_.at(to);
  const offset start = log_.first();
  auto prev_term = log_.term_at(start.prev());
  KEEL_RAFT_ASSERT(prev_term.ok(), "the term before the log start is always known");
  KEEL_RAFT_ASSERT(start.prev() <= commit_, "host contract: only a committed prefix is truncated");
  reset_request r;
  r.start = start;
  r.start_prev_term = *prev_term;
  // The latest committed configuration: committed, so safe to adopt ahead of its entry.
  r.config = committed_config();
  r.config_offset = configs_.front().first;
  for (const auto& [at, c] : configs_)
    if (at <= commit_) r.config_offset = at;
  if (snapshots_ != nullptr) r.snapshot = snapshots_->snapshot_at(start.prev());
  pr.become_reset(start.prev());
  send(to, std::move(r), false);
}

void core::broadcast_heartbeats() {
  for (auto& [n, pr] : progress_) {
    // Never tell a follower a commit index beyond what it is known to hold (§5.3 safety: it
    // might hold a conflicting suffix there).
    send(n, heartbeat_request{min(commit_, pr.match), read_seq_}, false);
  }
}

// ---------------------------------------------------------------------------------------------
// Client-facing operations

result<batch> core::propose(batch_type type, int64_t offset_count, shared_bytes payload) {
  if (role_ != role::leader) {
    error e = make_error(errc::not_leader, "propose on a non-leader");
    e.leader_hint = leader_;
    return e;
  }
  if (type == batch_type::config) return make_error(errc::invalid_argument, "use propose_config");
  if (offset_count < 1) return make_error(errc::invalid_argument, "a batch spans >= 1 offset");
  if (!transferee_.is_none()) return make_error(errc::busy, "leadership transfer in progress");
  if (uncommitted_bytes_ >= options_.max_uncommitted_bytes)
    return make_error(errc::busy, "too many uncommitted bytes");
  batch b{type, term_, log_.last().next(), log_.last().plus(offset_count), std::move(payload)};
  append_own(b);
  return b;
}

result<batch> core::propose_config(membership next) {
  if (role_ != role::leader) {
    error e = make_error(errc::not_leader, "propose_config on a non-leader");
    e.leader_hint = leader_;
    return e;
  }
  if (!next.normalize() || next.voters.empty())
    return make_error(errc::invalid_argument, "membership is invalid or has no voter");
  if (!transferee_.is_none()) return make_error(errc::busy, "leadership transfer in progress");
  if (config_offset() > commit_)
    return make_error(errc::busy, "a configuration change is still uncommitted");
  if (commit_ < noop_offset_)
    return make_error(errc::busy, "the leader has not yet committed an entry of its term");
  if (membership::voter_changes(config(), next) > 1)
    return make_error(errc::invalid_argument, "change at most one voter at a time");
  batch b{batch_type::config, term_, log_.last().next(), log_.last().next(),
          codec::encode_membership(next)};
  append_own(b);
  return b;
}

status core::transfer_leadership(node_id target) {
  if (role_ != role::leader) {
    error e = make_error(errc::not_leader, "transfer on a non-leader");
    e.leader_hint = leader_;
    return e;
  }
  if (target == options_.self) return ok_status();
  if (!config().is_voter(target)) return make_error(errc::invalid_argument, "target not a voter");
  transferee_ = target;
  election_elapsed_ = 0;  // the transfer must finish within one election timeout
  const progress& pr = progress_.at(target);
  if (pr.match == log_.last()) {
    send(target, timeout_now{}, false);
  } else {
    send_appends(target, false);
  }
  return ok_status();
}

status core::read_index(uint64_t request_id) {
  if (role_ != role::leader) {
    error e = make_error(errc::not_leader, "read_index on a non-leader");
    e.leader_hint = leader_;
    return e;
  }
  if (pending_reads_.size() + reads_awaiting_term_commit_.size() >= options_.max_pending_reads)
    return make_error(errc::busy, "too many pending reads");
  if (commit_ < noop_offset_) {
    // §8: the leader's commit index is only known current once an entry of its term commits.
    reads_awaiting_term_commit_.push_back(request_id);
    return ok_status();
  }
  if (config().voters.size() == 1 && config().is_voter(options_.self)) {
    read_states_.push_back(read_state{request_id, commit_});
    return ok_status();
  }
  // §8: confirm leadership with a heartbeat round to a majority before answering.
  ++read_seq_;
  pending_reads_.push_back(pending_read{request_id, commit_, read_seq_});
  broadcast_heartbeats();
  heartbeat_elapsed_ = 0;
  return ok_status();
}

void core::release_reads() {
  const int64_t acked = quorum::majority_value(
      config().voters,
      [&](node_id id) -> int64_t {
        if (id == options_.self) return int64_t(read_seq_);
        auto it = progress_.find(id);
        return it == progress_.end() ? 0 : int64_t(it->second.read_ack_seq);
      },
      0);
  while (!pending_reads_.empty() && pending_reads_.front().seq <= uint64_t(acked)) {
    read_states_.push_back(read_state{pending_reads_.front().id, pending_reads_.front().index});
    pending_reads_.pop_front();
  }
}

result<log_start_record> core::log_start_for(offset start) const {
  if (start.prev() > commit_)
    return make_error(errc::invalid_argument, "only a committed prefix may be truncated");
  if (start.prev() > log_.last()) return make_error(errc::unavailable, "start beyond the log");
  auto t = log_.term_at(start.prev());
  if (!t.ok()) return t.err();
  offset at = configs_.front().first;
  for (const auto& [o, c] : configs_)
    if (o <= commit_) at = o;
  return log_start_record{start, *t, committed_config(), at};
}

// ---------------------------------------------------------------------------------------------
// Ready / advance

bool core::has_ready() const {
  if (ready_outstanding_) return false;
  return !outbox_.empty() || log_.has_unhanded() || reset_to_hand_.has_value() ||
         hard_state{term_, vote_, commit_} != hard_handed_ || commit_ > commit_reported_ ||
         !read_states_.empty() || (role_ == role::leader && broadcast_pending_);
}

ready core::take_ready() {
  KEEL_RAFT_ASSERT(!ready_outstanding_, "advance() the previous Ready first");
  if (role_ == role::leader && broadcast_pending_) {
    // Batching: all proposals queued since the last Ready go out in one append per follower.
    broadcast_pending_ = false;
    broadcast_appends();
  }
  ready rd;
  rd.reset = std::move(reset_to_hand_);
  reset_to_hand_.reset();
  if (!rd.reset)
    rd.truncate_from = log_.take_truncation();
  else
    (void)log_.take_truncation();
  rd.batches = log_.take_unhanded();
  const hard_state hs{term_, vote_, commit_};
  if (hs != hard_handed_) {
    rd.hard_state_changes_term_or_vote =
        hs.term != hard_handed_.term || hs.vote != hard_handed_.vote;
    rd.hard_state_to_persist = hs;
    hard_handed_ = hs;
  }
  for (auto& o : outbox_) {
    // While our term or vote is not durable nothing may leave: a crash would forget them.
    if (o.after_persist || rd.hard_state_changes_term_or_vote) {
      rd.messages_after_persist.push_back(std::move(o.m));
    } else {
      rd.messages.push_back(std::move(o.m));
    }
  }
  outbox_.clear();
  if (commit_ > commit_reported_) {
    rd.committed_to = commit_;
    commit_reported_ = commit_;
  }
  rd.reads = std::move(read_states_);
  read_states_.clear();
  ready_outstanding_ = true;
  outstanding_has_reset_ = rd.reset.has_value();
  outstanding_changes_term_or_vote_ = rd.hard_state_changes_term_or_vote;
  return rd;
}

std::vector<message> core::take_messages() {
  std::vector<message> out;
  const bool term_or_vote_unpersisted =
      outstanding_changes_term_or_vote_ || term_ != hard_handed_.term || vote_ != hard_handed_.vote;
  if (term_or_vote_unpersisted) return out;
  // Stable: what stays keeps its order for the next Ready.
  auto kept = std::stable_partition(outbox_.begin(), outbox_.end(),
                                    [](const outgoing& o) { return o.after_persist; });
  for (auto it = kept; it != outbox_.end(); ++it)
    out.push_back(std::move(it->m));
  outbox_.erase(kept, outbox_.end());
  return out;
}

void core::advance() {
  KEEL_RAFT_ASSERT(ready_outstanding_, "advance() without an outstanding Ready");
  ready_outstanding_ = false;
  outstanding_changes_term_or_vote_ = false;
  log_.on_persisted();
  if (outstanding_has_reset_) log_.on_reset_persisted();
  outstanding_has_reset_ = false;
  if (role_ == role::leader) maybe_commit();
}

std::string core::describe() const {
  std::string s = "n" + std::to_string(options_.self.value()) + " " + to_string(role_) + " t" +
                  std::to_string(term_.value()) + " vote=" + std::to_string(vote_.value()) +
                  " leader=" + std::to_string(leader_.value()) + " log=[" +
                  std::to_string(log_.first().value()) + ".." +
                  std::to_string(log_.last().value()) +
                  "] durable=" + std::to_string(log_.durable_last().value()) +
                  " commit=" + std::to_string(commit_.value()) + " " + config().describe();
  return s;
}

}  // namespace keel::raft
