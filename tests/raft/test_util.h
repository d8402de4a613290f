// Helpers for raft unit tests: logs built from term lists, a core over an in-memory log, and a
// tiny synchronous cluster (every Ready persisted at once, messages delivered on demand).
#pragma once

#include <gtest/gtest.h>

#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <vector>

#include "keel/raft/codec.h"
#include "keel/raft/core.h"
#include "memory_log.h"

namespace keel::raft::testing {

// A fixed draw (0 by default): election timeouts are exactly election_ticks + value, so tests
// choose who campaigns first.
class zero_random final : public random_source {
 public:
  uint64_t value = 0;
  uint64_t next_below(uint64_t bound) override { return value % bound; }
};

inline membership voters(std::initializer_list<uint64_t> ids) {
  membership m;
  for (uint64_t id : ids)
    m.voters.push_back(node_id(id));
  m.normalize();
  return m;
}

inline batch make_batch(batch_type type, int64_t term, int64_t base, int64_t last,
                        uint8_t fill = 0) {
  std::vector<std::byte> p(type == batch_type::data ? 4 : 0, std::byte(fill));
  return batch{type, term_id(term), offset(base), offset(last), shared_bytes(std::move(p))};
}

// One single-offset data batch per term in `terms`, at offsets 0, 1, 2, ...
inline void fill_log(memory_log& log, const std::vector<int64_t>& terms) {
  for (int64_t t : terms) {
    const int64_t at = log.last_offset().value() + 1;
    log.append(make_batch(batch_type::data, t, at, at, uint8_t(t)));
  }
}

inline message msg(uint64_t from, uint64_t to, int64_t term, message_body body) {
  return message{group_id(1), node_id(from), node_id(to), term_id(term), std::move(body)};
}

// A node: its log, its durable hard state, its core. Readies are persisted synchronously.
struct test_node {
  memory_log log;
  hard_state hard;
  membership boot;
  zero_random random;
  std::unique_ptr<core> c;
  std::vector<message> sent;   // every message sent (immediately or after persist)
  std::vector<ready> readies;  // every Ready handed out
  offset committed = offset::none();

  void start(core_options o) {
    c = std::make_unique<core>(o, log, random, boot_state{hard, boot, offset::none()});
  }
  // Persists and sends everything pending. Returns the messages sent by this call.
  std::vector<message> flush() {
    std::vector<message> out;
    while (c->has_ready()) {
      ready rd = c->take_ready();
      if (rd.reset) log.reset(rd.reset->start, rd.reset->start_prev_term, 0);
      if (rd.truncate_from) log.truncate_suffix(*rd.truncate_from);
      for (const batch& b : rd.batches)
        log.append(b);
      if (rd.hard_state_to_persist) hard = *rd.hard_state_to_persist;
      for (auto* list : {&rd.messages, &rd.messages_after_persist})
        for (const message& m : *list)
          out.push_back(m);
      if (rd.committed_to) committed = *rd.committed_to;
      readies.push_back(rd);
      c->advance();
    }
    sent.insert(sent.end(), out.begin(), out.end());
    return out;
  }
};

inline core_options options_for(uint64_t id) {
  core_options o;
  o.group = group_id(1);
  o.self = node_id(id);
  o.election_ticks = 10;
  o.heartbeat_ticks = 1;
  return o;
}

// A synchronous cluster of nodes 1..n, all voters, with an in-order network that can cut nodes.
class cluster {
 public:
  explicit cluster(size_t n, bool pre_vote = true, bool check_quorum = true) {
    membership m;
    for (size_t i = 1; i <= n; ++i)
      m.voters.push_back(node_id(i));
    for (size_t i = 1; i <= n; ++i) {
      auto& t = nodes_[i];
      t = std::make_unique<test_node>();
      t->boot = m;
      t->random.value = i - 1;  // distinct timeouts: no endless split votes
      core_options o = options_for(i);
      o.pre_vote = pre_vote;
      o.check_quorum = check_quorum;
      options_[i] = o;
      t->start(o);
    }
  }
  test_node& node(uint64_t id) { return *nodes_.at(id); }
  core& at(uint64_t id) { return *nodes_.at(id)->c; }

  // Ticks one node until it campaigns, then runs the network until quiet.
  void elect(uint64_t id) {
    for (int i = 0; i < 2 * options_[id].election_ticks && at(id).current_role() != role::leader;
         ++i) {
      at(id).tick();
      run();
    }
  }
  void tick_all(int ticks) {
    for (int k = 0; k < ticks; ++k) {
      for (auto& [id, n] : nodes_)
        if (!down_.count(id)) n->c->tick();
      run();
    }
  }
  // Delivers messages until none are left; messages to or from isolated nodes are dropped.
  void run() {
    for (auto& [id, n] : nodes_)
      if (!down_.count(id))
        for (message& m : n->flush())
          queue_.push_back(std::move(m));
    while (!queue_.empty()) {
      message m = std::move(queue_.front());
      queue_.pop_front();
      const uint64_t to = m.to.value();
      if (down_.count(to) || down_.count(m.from.value()) || !nodes_.count(to)) continue;
      // Every message crosses the codec, as on a real wire.
      auto back = codec::decode(codec::encode(m));
      ASSERT_TRUE(back.ok());
      auto st = at(to).step(*back);
      ASSERT_TRUE(st.ok()) << st.err().describe() << " " << back->describe();
      for (message& out : node(to).flush())
        queue_.push_back(std::move(out));
    }
  }
  void isolate(uint64_t id) { down_.insert(id); }
  void reconnect(uint64_t id) { down_.erase(id); }
  std::optional<uint64_t> leader() {
    for (auto& [id, n] : nodes_)
      if (!down_.count(id) && n->c->current_role() == role::leader) return id;
    return std::nullopt;
  }
  batch propose(uint64_t id, uint8_t fill = 1) {
    auto r = at(id).propose(batch_type::data, 1,
                            shared_bytes(std::vector<std::byte>(4, std::byte(fill))));
    EXPECT_TRUE(r.ok());
    run();
    return r.ok() ? *r : batch{};
  }

 private:
  std::map<uint64_t, std::unique_ptr<test_node>> nodes_;
  std::map<uint64_t, core_options> options_;
  std::set<uint64_t> down_;
  std::deque<message> queue_;
};

}  // namespace keel::raft::testing
