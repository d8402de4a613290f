#include "sim.h"

#include <algorithm>
#include <cstdio>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <set>

#include "keel/raft/codec.h"
#include "keel/raft/core.h"
#include "memory_log.h"

namespace keel::raft::sim {
namespace {

using testing::memory_log;

// splitmix64: tiny, fast, and identical on every platform (std distributions are not).
class prng {
 public:
  explicit prng(uint64_t seed) : state_(seed * 0x9e3779b97f4a7c15ull + 0x632be59bd9b4e019ull) {}
  uint64_t next() {
    uint64_t z = (state_ += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  uint64_t below(uint64_t bound) {
    KEEL_RAFT_ASSERT(bound > 0, "prng::below(0)");
    return next() % bound;
  }
  int64_t range(int64_t lo, int64_t hi) { return lo + int64_t(below(uint64_t(hi - lo + 1))); }
  bool chance(uint64_t num, uint64_t den) { return below(den) < num; }

 private:
  uint64_t state_;
};

class core_random final : public random_source {
 public:
  explicit core_random(prng& p) : p_(p) {}
  uint64_t next_below(uint64_t bound) override { return p_.below(bound); }

 private:
  prng& p_;
};

constexpr int64_t tick_interval = 10;  // simulated time units per tick
constexpr int election_ticks = 10;
constexpr int heartbeat_ticks = 2;
constexpr group_id the_group(7);

struct node {
  node_id id;
  bool up = true;
  uint64_t epoch = 0;
  memory_log log;  // the host's log as written (durable prefix + possibly an unsynced tail)
  hard_state hs;   // as written
  membership start_config;
  offset start_config_offset = offset::none();
  bool hash_known =
      true;  // prefix hashes are meaningful (false after a reset from an unknown point)

  // Durable state, for crashes. While a write is outstanding: what was durable before it.
  hard_state durable_hs;
  membership durable_start_config;
  offset durable_start_config_offset = offset::none();
  size_t durable_batch_count = 0;
  std::optional<memory_log> durable_log_copy;  // only when the write changed the log structure
  bool durable_hash_known = true;

  std::unique_ptr<core> c;
  bool writing = false;
  ready pending;
  offset reported_commit = offset::none();
  role last_role = role::follower;
  term_id last_term;
};

struct event {
  enum kind_t { tick, deliver, sync } kind;
  size_t node = 0;
  uint64_t epoch = 0;
  size_t from = 0;
  bool heartbeat_frame = false;
  std::vector<std::byte> bytes;
};

struct proposal {
  uint64_t id;
  term_id term;
  offset base;
  offset last;
  shared_bytes payload;
  size_t leader;
};

struct committed_entry {
  term_id term;
  uint64_t hash;
  bool hash_known;
};

class simulation {
 public:
  explicit simulation(const options& o) : opts_(o), rng_(o.seed), random_(rng_) {
    KEEL_RAFT_ASSERT(o.nodes >= 1 && o.nodes <= 7, "1..7 nodes");
    membership boot;
    for (int i = 0; i < o.nodes; ++i)
      boot.voters.push_back(node_id(uint64_t(i + 1)));
    nodes_.resize(size_t(o.nodes));
    for (size_t i = 0; i < nodes_.size(); ++i) {
      node& n = nodes_[i];
      n.id = node_id(uint64_t(i + 1));
      n.start_config = boot;
      n.durable_start_config = boot;
      start_core(i);
      schedule(int64_t(rng_.range(1, tick_interval)), event{event::tick, i, 0, 0, false, {}});
    }
    blocked_.assign(nodes_.size(), std::vector<bool>(nodes_.size(), false));
  }

  outcome run() {
    for (int step = 0; step < opts_.steps && !failed(); ++step) {
      inject_faults();
      if (failed()) break;
      process_next();
      check_step();
    }
    if (!failed()) liveness();
    if (!failed()) final_checks();
    result_.passed = !failed();
    result_.trace.assign(trace_.begin(), trace_.end());
    result_.elections = leader_of_term_.size();
    return result_;
  }

 private:
  bool failed() const { return !result_.failure.empty(); }
  void fail(const std::string& why) {
    if (failed()) return;
    result_.failure = "t=" + std::to_string(now_) + ": " + why;
    log_event("FAILURE " + why);
  }
  void log_event(const std::string& line) {
    std::string s = "t=" + std::to_string(now_) + " " + line;
    if (opts_.trace) std::printf("%s\n", s.c_str());
    trace_.push_back(std::move(s));
    if (trace_.size() > 400) trace_.pop_front();
  }

  // ------------------------------------------------------------------------------------------
  // Nodes and their hosts

  void start_core(size_t i) {
    node& n = nodes_[i];
    core_options co;
    co.group = the_group;
    co.self = n.id;
    co.election_ticks = election_ticks;
    co.heartbeat_ticks = heartbeat_ticks;
    co.max_inflight_messages = flow_.inflight_messages;
    co.max_inflight_bytes = flow_.inflight_bytes;
    co.max_append_bytes = flow_.append_bytes;
    co.stall_rounds = flow_.stall_rounds;
    co.max_uncommitted_bytes = 16 << 10;
    boot_state b{n.hs, n.start_config, n.start_config_offset};
    n.c = std::make_unique<core>(co, n.log, random_, b);
    n.up = true;
    n.writing = false;
    n.reported_commit = n.c->commit();
    n.last_role = n.c->current_role();
    n.last_term = n.c->term();
    n.durable_hs = n.hs;
    n.durable_batch_count = n.log.batches().size();
    n.durable_start_config = n.start_config;
    n.durable_start_config_offset = n.start_config_offset;
  }

  void drive(size_t i) {
    node& n = nodes_[i];
    if (n.up && n.writing && !failed()) {
      // As partition_host does: what needs no durability leaves while the write is in flight.
      std::vector<message> early = n.c->take_messages();
      transmit(i, early);
    }
    while (n.up && !n.writing && n.c->has_ready() && !failed()) {
      ready rd = n.c->take_ready();
      write(i, rd);
      transmit(i, rd.messages);
      n.pending = std::move(rd);
      n.writing = true;
      if (n.pending.must_sync()) {
        schedule(now_ + rng_.range(1, 12), event{event::sync, i, n.epoch, 0, false, {}});
        return;
      }
      complete_write(i);
    }
  }

  void write(size_t i, const ready& rd) {
    node& n = nodes_[i];
    n.durable_hs = n.hs;
    n.durable_start_config = n.start_config;
    n.durable_start_config_offset = n.start_config_offset;
    n.durable_batch_count = n.log.batches().size();
    n.durable_log_copy.reset();
    n.durable_hash_known = n.hash_known;
    if (rd.reset || rd.truncate_from) n.durable_log_copy = n.log;
    if (rd.reset) {
      const log_reset& r = *rd.reset;
      auto it = committed_.find(r.start.prev());
      const bool known =
          r.start.prev() == offset::none() || (it != committed_.end() && it->second.hash_known);
      n.log.reset(r.start, r.start_prev_term,
                  known && it != committed_.end() ? it->second.hash : 0);
      n.hash_known = known;
      n.start_config = r.config;
      n.start_config_offset = r.config_offset;
      ++result_.resets;
      log_event("n" + std::to_string(i + 1) + " log reset to start " +
                std::to_string(r.start.value()));
    }
    if (rd.truncate_from) {
      for (const auto& s : n.log.truncate_suffix(*rd.truncate_from)) {
        auto it = committed_.find(s.b.last);
        if (it != committed_.end() && it->second.term == s.b.term && n.hash_known &&
            it->second.hash_known && it->second.hash == s.prefix_hash) {
          fail("n" + std::to_string(i + 1) + " truncated committed batch ending at " +
               std::to_string(s.b.last.value()));
        }
      }
      log_event("n" + std::to_string(i + 1) + " truncate from " +
                std::to_string(rd.truncate_from->value()));
    }
    for (const batch& b : rd.batches) {
      if (b.base != n.log.last_offset().next()) {
        fail("n" + std::to_string(i + 1) + " Ready batch does not continue the log");
        return;
      }
      n.log.append(b);
      // Log Matching (§5.3): same offset and term => identical prefixes.
      if (n.hash_known) {
        const uint64_t h = n.log.batches().back().prefix_hash;
        auto [it, inserted] = entries_.try_emplace({b.last.value(), b.term.value()}, h);
        if (!inserted && it->second != h) {
          fail("log matching: n" + std::to_string(i + 1) + " batch ending " +
               std::to_string(b.last.value()) + " term " + std::to_string(b.term.value()) +
               " has a different prefix than another node's");
        }
      }
    }
    if (rd.hard_state_to_persist) n.hs = *rd.hard_state_to_persist;
  }

  void complete_write(size_t i) {
    node& n = nodes_[i];
    n.writing = false;
    n.durable_log_copy.reset();
    n.durable_hs = n.hs;
    n.durable_batch_count = n.log.batches().size();
    n.durable_start_config = n.start_config;
    n.durable_start_config_offset = n.start_config_offset;
    ready rd = std::move(n.pending);
    n.pending = ready{};
    transmit(i, rd.messages_after_persist);
    if (rd.committed_to) on_committed(i, *rd.committed_to);
    for (const read_state& r : rd.reads)
      on_read(i, r);
    n.c->advance();
  }

  void on_committed(size_t i, offset to) {
    node& n = nodes_[i];
    const offset from = n.reported_commit;
    n.reported_commit = to;
    if (to > n.log.last_offset()) {
      fail("n" + std::to_string(i + 1) + " reported commit " + std::to_string(to.value()) +
           " beyond its written log " + std::to_string(n.log.last_offset().value()));
      return;
    }
    const offset lo = max(from.next(), n.log.first_offset());
    if (lo <= to) {
      for (size_t k = n.log.index_of(lo); k < n.log.batches().size(); ++k) {
        const auto& s = n.log.batches()[k];
        if (s.b.last > to) break;
        auto [it, inserted] = committed_.try_emplace(
            s.b.last, committed_entry{s.b.term, s.prefix_hash, n.hash_known});
        if (inserted) {
          auto& m = max_commit_by_term_[n.c->term().value()];
          m = max(m, s.b.last);
          if (s.b.last > global_commit_) global_commit_ = s.b.last;
        } else if (it->second.term != s.b.term ||
                   (n.hash_known && it->second.hash_known && it->second.hash != s.prefix_hash)) {
          fail("two nodes committed different entries at offset " +
               std::to_string(s.b.last.value()) + " (n" + std::to_string(i + 1) + ")");
          return;
        }
      }
    }
    // Acknowledge proposals this leader committed.
    if (n.c->current_role() == role::leader) {
      for (auto it = open_proposals_.begin(); it != open_proposals_.end();) {
        const proposal& p = it->second;
        if (p.leader == i && p.last <= to) {
          auto t = n.c->log().term_at(p.last);
          if (t.ok() && *t == p.term) {
            acked_.push_back(p);
            ++result_.acknowledged;
          }
          it = open_proposals_.erase(it);
        } else {
          ++it;
        }
      }
    }
  }

  void on_read(size_t i, const read_state& r) {
    auto it = read_floor_.find(r.request_id);
    if (it == read_floor_.end()) {
      fail("unknown ReadIndex answer");
      return;
    }
    // Linearizable read: the read point covers everything committed before the read began.
    if (r.index < it->second) {
      fail("n" + std::to_string(i + 1) + " ReadIndex " + std::to_string(r.request_id) +
           " answered " + std::to_string(r.index.value()) + " below committed " +
           std::to_string(it->second.value()));
    }
    read_floor_.erase(it);
    ++result_.reads;
  }

  void crash(size_t i) {
    node& n = nodes_[i];
    n.c.reset();
    n.up = false;
    ++n.epoch;
    ++result_.crashes;
    std::string what = "clean";
    if (n.writing) {
      // Only fsynced state survives. An unsynced append may survive in part (a torn tail is cut
      // at a batch boundary by recovery); a new term/vote is written before entries, so entries
      // of the pending write survive only together with it.
      if (n.durable_log_copy) {
        n.log = *n.durable_log_copy;
        n.hs = n.durable_hs;
        n.start_config = n.durable_start_config;
        n.start_config_offset = n.durable_start_config_offset;
        n.hash_known = n.durable_hash_known;
        what = "lost unsynced truncation";
      } else {
        const bool hs_survives = rng_.chance(1, 2);
        const size_t appended = n.log.batches().size() - n.durable_batch_count;
        size_t keep = rng_.below(appended + 1);
        if (n.pending.hard_state_changes_term_or_vote && !hs_survives) keep = 0;
        n.log.truncate_suffix(n.log.batches().size() == n.durable_batch_count + keep
                                  ? n.log.last_offset().next()
                                  : n.log.batches()[n.durable_batch_count + keep].b.base);
        if (!hs_survives) n.hs = n.durable_hs;
        what = "kept " + std::to_string(keep) + "/" + std::to_string(appended) +
               " unsynced batches, hard state " + (hs_survives ? "kept" : "lost");
      }
    }
    n.writing = false;
    n.pending = ready{};
    n.durable_log_copy.reset();
    log_event("n" + std::to_string(i + 1) + " CRASH (" + what + ")");
  }

  void restart(size_t i) {
    start_core(i);
    log_event("n" + std::to_string(i + 1) + " restart " + nodes_[i].c->describe());
    drive(i);
  }

  // ------------------------------------------------------------------------------------------
  // Network

  void transmit(size_t from, std::vector<message>& msgs) {
    // Coalesce heartbeats (and heartbeat responses) per recipient into one frame, as a host
    // multiplexing many groups would.
    std::map<std::pair<uint64_t, size_t>, std::vector<message>> frames;
    for (message& m : msgs) {
      const size_t to = size_t(m.to.value() - 1);
      const bool hb = std::holds_alternative<heartbeat_request>(m.body) ||
                      std::holds_alternative<heartbeat_response>(m.body);
      if (hb) {
        frames[{to, m.body.index()}].push_back(m);
        continue;
      }
      auto bytes = codec::encode(m);
      auto back = codec::decode(bytes);
      if (!back.ok() || !(*back == m)) {
        fail("codec round trip changed " + m.describe());
        return;
      }
      send_bytes(from, to, false, std::move(bytes), m.describe());
    }
    for (auto& [k, list] : frames) {
      auto bytes = codec::encode_heartbeat_frame(list);
      auto back = codec::decode_heartbeat_frame(bytes);
      if (!back.ok() || !(*back == list)) {
        fail("heartbeat frame round trip failed");
        return;
      }
      send_bytes(from, k.first, true, std::move(bytes), list.front().describe());
    }
  }

  void send_bytes(size_t from, size_t to, bool hb, std::vector<std::byte> bytes,
                  const std::string& what) {
    if (to >= nodes_.size()) return;
    if (blocked_[from][to] || rng_.chance(loss_per_mille_, 1000)) {
      if (opts_.trace) log_event("drop " + what);
      return;
    }
    const int copies = rng_.chance(dup_per_mille_, 1000) ? 2 : 1;
    for (int c = 0; c < copies; ++c) {
      // Mostly short delays; sometimes long ones, which reorder messages.
      const int64_t delay = rng_.chance(1, 10) ? rng_.range(15, 80) : rng_.range(1, 15);
      schedule(now_ + delay, event{event::deliver, to, 0, from, hb, bytes});
    }
  }

  void deliver(const event& e) {
    node& n = nodes_[e.node];
    if (!n.up || blocked_[e.from][e.node]) return;
    std::vector<message> msgs;
    if (e.heartbeat_frame) {
      auto r = codec::decode_heartbeat_frame(e.bytes);
      if (!r.ok()) return fail("undecodable heartbeat frame");
      msgs = std::move(*r);
    } else {
      auto r = codec::decode(e.bytes);
      if (!r.ok()) return fail("undecodable message");
      msgs.push_back(std::move(*r));
    }
    for (const message& m : msgs) {
      log_event("deliver " + m.describe());
      auto s = n.c->step(m);
      if (!s.ok()) return fail("step refused " + m.describe() + ": " + s.err().describe());
    }
    drive(e.node);
  }

  // ------------------------------------------------------------------------------------------
  // Events

  void schedule(int64_t at, event e) { queue_.emplace(std::make_pair(at, seq_++), std::move(e)); }

  void process_next() {
    if (queue_.empty()) return;
    auto it = queue_.begin();
    now_ = it->first.first;
    event e = std::move(it->second);
    queue_.erase(it);
    switch (e.kind) {
      case event::tick: {
        schedule(now_ + tick_interval, event{event::tick, e.node, 0, 0, false, {}});
        node& n = nodes_[e.node];
        if (!n.up) break;
        n.c->tick();
        drive(e.node);
        break;
      }
      case event::deliver:
        deliver(e);
        break;
      case event::sync: {
        node& n = nodes_[e.node];
        if (!n.up || n.epoch != e.epoch || !n.writing) break;
        complete_write(e.node);
        drive(e.node);
        break;
      }
    }
    for (size_t i = 0; i < nodes_.size(); ++i) {
      node& n = nodes_[i];
      if (!n.up) continue;
      if (n.c->current_role() != n.last_role || n.c->term() != n.last_term) {
        n.last_role = n.c->current_role();
        n.last_term = n.c->term();
        log_event("n" + std::to_string(i + 1) + " is " + to_string(n.last_role) + " in t" +
                  std::to_string(n.last_term.value()));
      }
    }
  }

  std::optional<size_t> a_leader() {
    std::vector<size_t> leaders;
    for (size_t i = 0; i < nodes_.size(); ++i)
      if (nodes_[i].up && nodes_[i].c->current_role() == role::leader) leaders.push_back(i);
    if (leaders.empty()) return std::nullopt;
    return leaders[rng_.below(leaders.size())];
  }

  void propose(size_t i) {
    node& n = nodes_[i];
    const uint64_t id = ++proposal_seq_;
    std::vector<std::byte> payload(8 + rng_.below(200));
    for (size_t k = 0; k < payload.size(); ++k)
      payload[k] = std::byte(rng_.next() & 0xff);
    for (int k = 0; k < 8; ++k)
      payload[size_t(k)] = std::byte((id >> (8 * k)) & 0xff);
    auto r =
        n.c->propose(batch_type::data, int64_t(rng_.range(1, 5)), shared_bytes(std::move(payload)));
    if (!r.ok()) return;
    ++result_.proposals;
    open_proposals_.emplace(id, proposal{id, r->term, r->base, r->last, r->payload, i});
    log_event("n" + std::to_string(i + 1) + " propose #" + std::to_string(id) + " [" +
              std::to_string(r->base.value()) + ".." + std::to_string(r->last.value()) + "] t" +
              std::to_string(r->term.value()));
    drive(i);
  }

  void change_config(size_t i) {
    node& n = nodes_[i];
    membership next = n.c->config();
    std::vector<node_id> outside;
    for (const node& m : nodes_)
      if (!next.contains(m.id)) outside.push_back(m.id);
    switch (rng_.below(4)) {
      case 0:  // remove a voter (possibly the leader itself)
        if (next.voters.size() <= 2) return;
        next.voters.erase(next.voters.begin() + long(rng_.below(next.voters.size())));
        break;
      case 1:  // add a learner
        if (outside.empty()) return;
        next.learners.push_back(outside[rng_.below(outside.size())]);
        break;
      case 2: {  // promote a learner
        if (next.learners.empty()) return;
        const size_t k = rng_.below(next.learners.size());
        next.voters.push_back(next.learners[k]);
        next.learners.erase(next.learners.begin() + long(k));
        break;
      }
      case 3:  // add a voter directly
        if (outside.empty()) return;
        next.voters.push_back(outside[rng_.below(outside.size())]);
        break;
    }
    next.normalize();
    auto r = n.c->propose_config(next);
    if (!r.ok()) return;
    ++result_.config_changes;
    log_event("n" + std::to_string(i + 1) + " propose config " + next.describe() + " at " +
              std::to_string(r->base.value()));
    drive(i);
  }

  void compact(size_t i) {
    node& n = nodes_[i];
    if (!n.up || n.writing || n.log.batches().size() < 4) return;
    // Retention: drop a committed, applied prefix (never past what the host was told is
    // committed, so never past what is durable).
    const offset limit = min(n.reported_commit, n.log.last_offset());
    if (limit < n.log.first_offset()) return;
    const size_t hi = n.log.index_of(limit);
    const size_t k = rng_.below(hi + 1);
    const offset start = n.log.batches()[k].b.last.next();
    auto rec = n.c->log_start_for(start);
    if (!rec.ok()) return fail("log_start_for refused a committed prefix: " + rec.err().describe());
    n.log.truncate_prefix(start);
    n.start_config = rec->config;
    n.start_config_offset = rec->config_offset;
    n.durable_batch_count = n.log.batches().size();
    n.durable_start_config = n.start_config;
    n.durable_start_config_offset = n.start_config_offset;
    log_event("n" + std::to_string(i + 1) + " retention: log starts at " +
              std::to_string(start.value()));
  }

  void partition() {
    for (auto& row : blocked_)
      row.assign(nodes_.size(), false);
    if (rng_.chance(1, 2)) {
      // Symmetric: two sides that cannot talk.
      std::vector<int> side(nodes_.size());
      for (auto& s : side)
        s = int(rng_.below(2));
      for (size_t a = 0; a < nodes_.size(); ++a)
        for (size_t b = 0; b < nodes_.size(); ++b)
          blocked_[a][b] = side[a] != side[b];
      std::string d;
      for (size_t a = 0; a < nodes_.size(); ++a)
        d += side[a] ? "B" : "A";
      log_event("partition " + d);
    } else {
      // Asymmetric: some links drop in one direction only.
      std::string d;
      for (size_t a = 0; a < nodes_.size(); ++a)
        for (size_t b = 0; b < nodes_.size(); ++b)
          if (a != b && rng_.chance(1, 3)) {
            blocked_[a][b] = true;
            d += " " + std::to_string(a + 1) + "-x>" + std::to_string(b + 1);
          }
      log_event("asymmetric partition" + d);
    }
  }

  void heal() {
    for (auto& row : blocked_)
      row.assign(nodes_.size(), false);
    log_event("heal network");
  }

  void inject_faults() {
    if (rng_.chance(1, 12)) {
      if (auto l = a_leader()) propose(*l);
    }
    if (rng_.chance(1, 40)) {
      if (auto l = a_leader()) {
        const uint64_t id = ++read_seq_;
        read_floor_[id] = global_commit_;
        if (nodes_[*l].c->read_index(id).ok()) {
          drive(*l);
        } else {
          read_floor_.erase(id);
        }
      }
    }
    const size_t i = rng_.below(nodes_.size());
    if (rng_.chance(1, profile_.crash_one_in) && nodes_[i].up) crash(i);
    if (rng_.chance(1, profile_.restart_one_in) && !nodes_[i].up) restart(i);
    if (rng_.chance(1, profile_.crash_one_in * 2)) {
      if (auto l = a_leader()) crash(*l);  // leaders die at the worst moments too
    }
    if (rng_.chance(1, profile_.partition_one_in)) partition();
    if (rng_.chance(1, profile_.heal_one_in)) heal();
    if (rng_.chance(1, 400)) {
      if (auto l = a_leader()) change_config(*l);
    }
    if (rng_.chance(1, 800)) {
      if (auto l = a_leader()) {
        const auto& voters = nodes_[*l].c->config().voters;
        node_id target = voters[rng_.below(voters.size())];
        if (nodes_[*l].c->transfer_leadership(target).ok()) {
          log_event("n" + std::to_string(*l + 1) + " transfer leadership to n" +
                    std::to_string(target.value()));
          drive(*l);
        }
      }
    }
    if (rng_.chance(1, 250)) compact(i);
  }

  // ------------------------------------------------------------------------------------------
  // Checkers

  void check_step() {
    if (failed()) return;
    for (size_t i = 0; i < nodes_.size(); ++i) {
      node& n = nodes_[i];
      if (!n.up || n.c->current_role() != role::leader) continue;
      const term_id t = n.c->term();
      // Election Safety (§5.2): at most one leader per term.
      auto [it, inserted] = leader_of_term_.try_emplace(t.value(), i);
      if (!inserted && it->second != i) {
        return fail("two leaders in term " + std::to_string(t.value()) + ": n" +
                    std::to_string(it->second + 1) + " and n" + std::to_string(i + 1));
      }
      // Leader Completeness (§5.4): entries committed in earlier terms are in this leader's log.
      offset must = offset::none();
      for (const auto& [term, at] : max_commit_by_term_) {
        if (term >= t.value()) break;
        must = max(must, at);
      }
      if (must >= n.c->log().first()) {
        auto have = n.c->log().term_at(must);
        if (!have.ok() || *have != committed_.at(must).term) {
          return fail("leader completeness: n" + std::to_string(i + 1) + " leader of t" +
                      std::to_string(t.value()) + " lacks committed offset " +
                      std::to_string(must.value()));
        }
      }
      // The leader's own invariants.
      if (n.c->commit() > n.c->log().last()) return fail("leader commit beyond its log");
    }
    for (size_t i = 0; i < nodes_.size(); ++i) {
      node& n = nodes_[i];
      if (!n.up) continue;
      if (n.c->log().last_term() > n.c->term())
        return fail("n" + std::to_string(i + 1) + " holds entries of a future term");
    }
  }

  void liveness() {
    heal();
    loss_per_mille_ = 0;
    dup_per_mille_ = 0;
    for (size_t i = 0; i < nodes_.size(); ++i)
      if (!nodes_[i].up) restart(i);
    log_event("liveness phase: faults stop");
    const int64_t bound_ticks = std::max<int64_t>(opts_.liveness_ticks, opts_.steps / 4);
    const int64_t deadline = now_ + bound_ticks * tick_interval;
    log_event("liveness bound: " + std::to_string(bound_ticks) + " ticks");
    bool proposed = false;
    while (now_ < deadline && !failed()) {
      process_next();
      check_step();
      if (failed()) return;
      auto l = a_leader();
      if (!l) continue;
      node& L = nodes_[*l];
      if (!proposed && L.c->commit() >= L.c->log().last()) {
        // A fresh entry must commit too: progress, not just a quiet log.
        propose(*l);
        proposed = true;
        continue;
      }
      if (proposed && converged(*l)) {
        final_leader_ = *l;
        return;
      }
    }
    if (!failed()) fail("liveness: no leader committed everything within the bound");
  }

  bool converged(size_t l) {
    node& L = nodes_[l];
    if (L.writing || L.c->commit() < L.c->log().last() || L.reported_commit < L.c->commit())
      return false;
    if (!open_proposals_.empty()) {
      for (const auto& [id, p] : open_proposals_)
        if (p.leader == l && p.term == L.c->term()) return false;
    }
    for (node_id v : L.c->config().voters) {
      const node& n = nodes_[size_t(v.value() - 1)];
      if (!n.up || n.c->commit() < L.c->commit() || n.reported_commit < L.c->commit()) return false;
    }
    return true;
  }

  void final_checks() {
    const node& L = nodes_[final_leader_];
    result_.final_commit = L.c->commit().value();
    // Every acknowledged proposal is in the final log, unchanged.
    for (const proposal& p : acked_) {
      if (p.last < L.c->log().first()) continue;  // retained away after commit (checked then)
      auto b = L.c->log().batch_at(p.base);
      if (!b.ok() || b->base != p.base || b->last != p.last || b->term != p.term ||
          !(b->payload == p.payload)) {
        return fail("acknowledged proposal #" + std::to_string(p.id) + " at [" +
                    std::to_string(p.base.value()) + ".." + std::to_string(p.last.value()) +
                    "] missing or changed in the final log of n" +
                    std::to_string(final_leader_ + 1));
      }
    }
    // Every committed entry is still there (State Machine Safety, §5.4.3).
    for (const auto& [at, e] : committed_) {
      if (at < L.c->log().first()) continue;
      auto t = L.c->log().term_at(at);
      if (!t.ok() || *t != e.term)
        return fail("committed offset " + std::to_string(at.value()) + " lost from final log");
    }
  }

  options opts_;
  prng rng_;
  core_random random_;
  std::vector<node> nodes_;
  std::map<std::pair<int64_t, uint64_t>, event> queue_;
  uint64_t seq_ = 0;
  int64_t now_ = 0;
  std::vector<std::vector<bool>> blocked_;
  // Fault rates, drawn per seed: most seeds run a moderate mix; one in three runs "chaos" (frequent
  // crashes, partitions and loss), which is where leaders die with entries on a minority.
  struct fault_profile {
    uint64_t crash_one_in;
    uint64_t restart_one_in;
    uint64_t partition_one_in;
    uint64_t heal_one_in;
    uint64_t loss_per_mille;
    uint64_t dup_per_mille;
  };
  fault_profile profile_ = rng_.chance(1, 3) ? fault_profile{120, 30, 200, 120, 150, 30}
                                             : fault_profile{700, 120, 900, 350, 50, 20};
  // Flow-control limits, drawn per seed: tiny appends (one batch each) expose orderings that
  // big ones hide, e.g. an old-term entry acked by a majority before the new leader's no-op.
  struct flow_limits {
    size_t inflight_messages;
    uint64_t inflight_bytes;
    uint64_t append_bytes;
    int stall_rounds;
  };
  flow_limits flow_ =
      flow_limits{size_t(2) << rng_.below(3), uint64_t(512) << rng_.below(4),
                  rng_.chance(1, 2) ? 1 : uint64_t(1024), 1 + static_cast<int>(rng_.below(3))};
  uint64_t loss_per_mille_ = profile_.loss_per_mille;
  uint64_t dup_per_mille_ = profile_.dup_per_mille;

  std::map<int64_t, size_t> leader_of_term_;
  std::map<offset, committed_entry> committed_;
  std::map<int64_t, offset> max_commit_by_term_;  // reporter's term -> highest offset committed
  offset global_commit_ = offset::none();
  std::map<std::pair<int64_t, int64_t>, uint64_t> entries_;  // (last, term) -> prefix hash
  std::map<uint64_t, proposal> open_proposals_;
  std::vector<proposal> acked_;
  uint64_t proposal_seq_ = 0;
  std::map<uint64_t, offset> read_floor_;
  uint64_t read_seq_ = 0;
  size_t final_leader_ = 0;

  std::deque<std::string> trace_;
  outcome result_;
};

}  // namespace

outcome run(const options& o) {
  simulation s(o);
  return s.run();
}

std::string replay_command(const options& o) {
  return "raft_sim --seeds " + std::to_string(o.seed) + "-" + std::to_string(o.seed) + " --steps " +
         std::to_string(o.steps) + " --nodes " + std::to_string(o.nodes) + " --trace";
}

}  // namespace keel::raft::sim
