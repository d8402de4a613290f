#include "keel/server/group_coordinator.h"

#include <algorithm>
#include <cstdio>
#include <random>

#include "keel/engine/assert.h"
#include "keel/net/kafka/errors.h"
#include "keel/net/kafka/protocol.h"
#include "keel/net/kafka/record_batch.h"
#include "keel/server/raft_log.h"

namespace keel::server {

namespace kafka = net::kafka;
namespace error_code = net::kafka::error_code;

namespace {

// Records per proposed batch of a checkpoint (each well under max.message.bytes).
constexpr size_t checkpoint_batch_records = 500;
// Bounds on what one member may put into its group's persisted record.
constexpr size_t max_member_metadata_bytes = 256 << 10;
constexpr size_t max_assignment_bytes = 2 << 20;

void log_line(const std::string& s) {
  std::fprintf(stderr, "keel: groups: %s\n", s.c_str());
  std::fflush(stderr);
}

int64_t system_now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string random_suffix() {
  static thread_local std::mt19937_64 rng(std::random_device{}());
  char out[40];
  std::snprintf(out, sizeof out, "%016llx%016llx", static_cast<unsigned long long>(rng()),
                static_cast<unsigned long long>(rng()));
  return out;
}

kafka::record make_record(std::string key, std::optional<std::string> value, int64_t ts) {
  kafka::record r;
  r.key = std::move(key);
  r.value = std::move(value);
  r.timestamp = ts;
  return r;
}

}  // namespace

group_coordinator::group_coordinator(partition_host& host, group_coordinator_options options)
    : host_(host), options_(std::move(options)) {
  if (!options_.now_ms) options_.now_ms = system_now_ms;
  applied_ = host_.log().log_start().value() - 1;
  // A restarted replica's high watermark starts at its persisted commit: apply up to it now,
  // since no commit listener fires until the commit moves again.
  on_commit();
}

group_coordinator::~group_coordinator() {
  *alive_ = false;
  drop_live_state(error_code::not_coordinator);
}

int64_t group_coordinator::now() const {
  return options_.now_ms();
}

// ---------------------------------------------------------------------------------------------
// Committed state: every replica applies the committed records in order.

void group_coordinator::on_commit() {
  const int64_t hw = host_.high_watermark().value();
  engine::log& log = host_.log();
  if (applied_ + 1 < log.log_start().value()) {
    // The log now starts past what this replica applied (a log-start reset after a checkpoint):
    // the state is rebuilt from the checkpoint the log starts with.
    committed_.clear();
    offsets_.clear();
    applied_ = log.log_start().value() - 1;
  }
  while (applied_ < hw) {
    auto read = log.read(engine::offset(applied_ + 1), 1 << 20, to_engine(host_.high_watermark()));
    if (!read || read->batches().empty()) {
      log_line("cannot read __consumer_offsets at " + std::to_string(applied_ + 1) +
               (read ? std::string(": nothing there") : ": " + read.err().describe()));
      return;
    }
    for (const auto& b : read->batches()) {
      if (b.header.last_offset.value() <= applied_) continue;
      if (b.header.type == static_cast<uint8_t>(raft::batch_type::data)) {
        kafka::record_reader records(b.payload(), applied_ + 1);
        kafka::record_view v;
        while (records.next(v)) {
          if (auto r = decode_group_record(v.key, v.value))
            apply(*r, v.offset);
          else
            log_line("skipped a record at offset " + std::to_string(v.offset) +
                     " that is not a group record");
        }
        if (!records.ok())
          log_line("skipped a batch at offset " + std::to_string(b.header.base_offset.value()) +
                   " that does not parse");
      }
      applied_ = b.header.last_offset.value();
    }
  }
}

void group_coordinator::apply(const group_record& r, int64_t offset) {
  ++records_since_checkpoint_;
  switch (r.kind) {
    case group_record_kind::offset:
      if (r.offset)
        offsets_[r.group][r.partition] = *r.offset;
      else if (auto it = offsets_.find(r.group); it != offsets_.end()) {
        it->second.erase(r.partition);
        if (it->second.empty()) offsets_.erase(it);
      }
      return;
    case group_record_kind::group:
      if (r.group_value)
        committed_[r.group] = *r.group_value;
      else
        committed_.erase(r.group);
      return;
    case group_record_kind::checkpoint_begin:
      return;
    case group_record_kind::checkpoint_end:
      // Everything before the checkpoint's begin is superseded by it.
      records_since_checkpoint_ = 0;
      last_checkpoint_end_ = offset;
      if (r.checkpoint_begin > host_.log().log_start().value() && r.checkpoint_begin <= offset) {
        host_.compact(raft::offset(r.checkpoint_begin), [](const std::string& error) {
          if (!error.empty()) log_line("compaction after a checkpoint failed: " + error);
        });
      }
      return;
  }
}

// ---------------------------------------------------------------------------------------------
// Leadership: the live state exists while this replica leads and has applied its term's start.

int16_t group_coordinator::status() {
  if (!host_.is_leader()) {
    if (loaded_term_ >= 0) drop_live_state(error_code::not_coordinator);
    return error_code::not_coordinator;
  }
  const int64_t term = host_.core().term().value();
  if (loaded_term_ == term) return error_code::none;
  if (loaded_term_ >= 0) drop_live_state(error_code::not_coordinator);
  // Loaded once this leader's own first entry is committed and applied: then the committed
  // state holds every acknowledged change of earlier leaders.
  const raft::offset hw = host_.high_watermark();
  if (hw.value() < 0 || applied_ < hw.value()) return error_code::coordinator_load_in_progress;
  auto t = host_.core().log().term_at(hw);
  if (!t || t->value() != term) return error_code::coordinator_load_in_progress;
  const int64_t t_now = now();
  for (const auto& [id, s] : committed_) {
    group g;
    g.id = id;
    g.protocol_type = s.protocol_type;
    g.protocol = s.protocol;
    g.generation = s.generation;
    g.leader = s.leader;
    g.state_time_ms = s.state_time_ms;
    g.state = s.members.empty() ? phase::empty : phase::stable;
    for (const stored_member& sm : s.members) {
      member m;
      m.id = sm.id;
      m.instance_id = sm.instance_id;
      m.client_id = sm.client_id;
      m.client_host = sm.client_host;
      m.session_timeout_ms = sm.session_timeout_ms;
      m.rebalance_timeout_ms = sm.rebalance_timeout_ms;
      m.protocol_type = s.protocol_type;
      if (s.protocol) m.protocols.emplace_back(*s.protocol, sm.subscription);
      m.assignment = sm.assignment;
      m.last_heard_ms = t_now;  // members get a full session to find the new coordinator
      g.members.emplace(m.id, std::move(m));
    }
    live_.emplace(id, std::move(g));
  }
  loaded_term_ = term;
  return error_code::none;
}

void group_coordinator::drop_live_state(int16_t error) {
  auto groups = std::move(live_);
  live_.clear();
  loaded_term_ = -1;
  for (auto& [id, g] : groups) {
    for (auto& [mid, m] : g.members) {
      if (m.awaiting_join) {
        kafka::join_group_response r;
        r.error_code = error;
        r.member_id = mid;
        m.awaiting_join(r);
      }
      if (m.awaiting_sync) {
        kafka::sync_group_response r;
        r.error_code = error;
        m.awaiting_sync(r);
      }
    }
  }
}

group_coordinator::group* group_coordinator::live_group(const std::string& id) {
  auto it = live_.find(id);
  return it == live_.end() ? nullptr : &it->second;
}

// ---------------------------------------------------------------------------------------------
// Join and sync

void group_coordinator::join(const kafka::join_group_request& m, int16_t version,
                             const std::string& client_id, const std::string& client_host,
                             join_done done) {
  kafka::join_group_response out;
  out.member_id = m.member_id;
  auto fail = [&](int16_t code) {
    out.error_code = code;
    done(out);
  };
  if (int16_t s = status()) return fail(s);
  if (m.group_id.empty()) return fail(error_code::invalid_group_id);
  if (m.session_timeout_ms < options_.min_session_timeout_ms ||
      m.session_timeout_ms > options_.max_session_timeout_ms)
    return fail(error_code::invalid_session_timeout);
  if (m.protocol_type.empty() || m.protocols.empty())
    return fail(error_code::inconsistent_group_protocol);
  size_t metadata_bytes = 0;
  for (const auto& p : m.protocols)
    metadata_bytes += p.metadata.size() + p.name.size();
  // Every member's metadata is persisted in one group record: keep it well under a batch.
  if (metadata_bytes > max_member_metadata_bytes) return fail(error_code::invalid_request);
  // Only the session timeout is bounded (as Kafka does): the rebalance timeout is the client's
  // max.poll.interval.ms, which may well exceed group.max.session.timeout.ms (Kafka Streams used
  // INT32_MAX); a member that stops heartbeating still leaves at its session timeout.
  const int32_t rebalance_timeout =
      version >= 1 && m.rebalance_timeout_ms > 0 ? m.rebalance_timeout_ms : m.session_timeout_ms;

  auto [it, created] = live_.try_emplace(m.group_id);
  group& g = it->second;
  if (created) {
    g.id = m.group_id;
    g.state_time_ms = now();
  }
  if (g.state != phase::empty || !g.members.empty()) {
    // Everyone must share the protocol type and at least one protocol.
    if (g.protocol_type != m.protocol_type) return fail(error_code::inconsistent_group_protocol);
    bool shared = false;
    for (const auto& p : m.protocols) {
      bool all = true;
      for (const auto& [id, other] : g.members) {
        if (id == m.member_id) continue;
        all = all && std::any_of(other.protocols.begin(), other.protocols.end(),
                                 [&](const auto& q) { return q.first == p.name; });
      }
      shared = shared || all;
    }
    if (!shared) return fail(error_code::inconsistent_group_protocol);
  }

  std::string member_id = m.member_id;
  const int64_t t = now();
  if (member_id.empty()) {
    if (m.group_instance_id) {
      // Static membership (KIP-345): a known instance takes a new id and fences the old one.
      member_id = *m.group_instance_id + "-" + random_suffix();
      for (auto mit = g.members.begin(); mit != g.members.end(); ++mit) {
        if (mit->second.instance_id != m.group_instance_id) continue;
        member old = std::move(mit->second);
        g.members.erase(mit);
        if (old.awaiting_join) {
          kafka::join_group_response r;
          r.error_code = error_code::fenced_instance_id;
          old.awaiting_join(r);
          old.awaiting_join = nullptr;
        }
        if (old.awaiting_sync) {
          kafka::sync_group_response r;
          r.error_code = error_code::fenced_instance_id;
          old.awaiting_sync(r);
          old.awaiting_sync = nullptr;
        }
        if (g.leader == old.id) g.leader = member_id;
        old.id = member_id;
        g.members.emplace(member_id, std::move(old));
        break;
      }
    } else if (version >= 4) {
      // KIP-394: the member learns its id first and joins again with it.
      member_id = (client_id.empty() ? std::string("member") : client_id) + "-" + random_suffix();
      g.pending_members[member_id] = t;
      out.member_id = member_id;
      if (g.members.empty() && g.state == phase::empty && created) g.state_time_ms = t;
      return fail(error_code::member_id_required);
    } else {
      member_id = (client_id.empty() ? std::string("member") : client_id) + "-" + random_suffix();
    }
  } else if (!g.members.count(member_id)) {
    if (!g.pending_members.erase(member_id)) {
      if (m.group_instance_id) {
        for (const auto& [id, other] : g.members)
          if (other.instance_id == m.group_instance_id) return fail(error_code::fenced_instance_id);
      }
      if (created) live_.erase(it);
      return fail(error_code::unknown_member_id);
    }
  } else if (m.group_instance_id && g.members[member_id].instance_id != m.group_instance_id) {
    return fail(error_code::fenced_instance_id);
  }

  member& mem = g.members[member_id];
  const bool changed = mem.protocols.size() != m.protocols.size() ||
                       !std::equal(mem.protocols.begin(), mem.protocols.end(), m.protocols.begin(),
                                   [](const auto& a, const auto& b) {
                                     return a.first == b.name && a.second == b.metadata;
                                   });
  mem.id = member_id;
  mem.instance_id = m.group_instance_id;
  mem.client_id = client_id;
  mem.client_host = client_host;
  mem.session_timeout_ms = m.session_timeout_ms;
  mem.rebalance_timeout_ms = rebalance_timeout;
  mem.protocol_type = m.protocol_type;
  mem.protocols.clear();
  for (const auto& p : m.protocols)
    mem.protocols.emplace_back(p.name, p.metadata);
  mem.last_heard_ms = t;
  mem.join_version = version;
  if (mem.awaiting_join) {
    // A duplicate join (a client retry): the older request is superseded.
    kafka::join_group_response r;
    r.error_code = error_code::unknown_member_id;
    r.member_id = member_id;
    mem.awaiting_join(r);
  }
  g.protocol_type = m.protocol_type;

  // A static member coming back unchanged to a stable group gets the current generation without
  // a rebalance (KIP-345).
  if (m.member_id.empty() && m.group_instance_id && g.state == phase::stable && !changed &&
      g.protocol) {
    out.error_code = error_code::none;
    out.generation_id = g.generation;
    out.protocol_type = g.protocol_type;
    out.protocol_name = g.protocol;
    out.leader = g.leader;
    out.member_id = member_id;
    if (g.leader == member_id) {
      for (const auto& [id, other] : g.members) {
        auto& x = out.members.emplace_back();
        x.member_id = id;
        x.group_instance_id = other.instance_id;
        for (const auto& [name, meta] : other.protocols)
          if (name == *g.protocol) x.metadata = meta;
      }
    }
    return done(out);
  }

  mem.awaiting_join = std::move(done);
  if (g.state != phase::preparing_rebalance) prepare_rebalance(g);
  maybe_complete_join(g);
}

void group_coordinator::prepare_rebalance(group& g) {
  const int64_t t = now();
  if (g.state == phase::completing_rebalance) {
    for (auto& [id, m] : g.members) {
      if (!m.awaiting_sync) continue;
      kafka::sync_group_response r;
      r.error_code = error_code::rebalance_in_progress;
      auto cb = std::move(m.awaiting_sync);
      m.awaiting_sync = nullptr;
      cb(r);
    }
  }
  int32_t timeout = 0;
  for (const auto& [id, m] : g.members)
    timeout = std::max(timeout, m.rebalance_timeout_ms);
  g.join_not_before_ms = g.state == phase::empty ? t + options_.initial_rebalance_delay_ms : 0;
  g.state = phase::preparing_rebalance;
  g.rebalance_deadline_ms = t + timeout;
  g.state_time_ms = t;
}

void group_coordinator::maybe_complete_join(group& g) {
  if (g.state != phase::preparing_rebalance) return;
  const int64_t t = now();
  const bool all_joined = std::all_of(g.members.begin(), g.members.end(),
                                      [](const auto& e) { return bool(e.second.awaiting_join); });
  const bool past_deadline = t >= g.rebalance_deadline_ms;
  if (!past_deadline && (!all_joined || t < g.join_not_before_ms)) return;
  // Members that did not rejoin in time leave the group.
  for (auto it = g.members.begin(); it != g.members.end();) {
    if (it->second.awaiting_join)
      ++it;
    else
      it = g.members.erase(it);
  }
  if (g.members.empty()) return became_empty(g);

  // The protocol: one every member supports, by the members' own preference votes.
  std::map<std::string, int> votes;
  for (const auto& [id, m] : g.members) {
    for (const auto& [name, meta] : m.protocols) {
      const bool everyone = std::all_of(g.members.begin(), g.members.end(), [&](const auto& e) {
        return std::any_of(e.second.protocols.begin(), e.second.protocols.end(),
                           [&](const auto& q) { return q.first == name; });
      });
      if (everyone) {
        ++votes[name];
        break;
      }
    }
  }
  if (votes.empty()) {
    // Join checks every member against the others, so this should not happen; if it does, the
    // members hear it rather than the broker stopping.
    for (auto& [id, m] : g.members) {
      kafka::join_group_response r;
      r.error_code = error_code::inconsistent_group_protocol;
      r.member_id = id;
      auto cb = std::move(m.awaiting_join);
      m.awaiting_join = nullptr;
      cb(r);
    }
    g.members.clear();
    return became_empty(g);
  }
  std::string chosen;
  int best = -1;
  for (const auto& [name, meta] : g.members.begin()->second.protocols) {
    auto v = votes.find(name);
    if (v != votes.end() && v->second > best) best = v->second, chosen = name;
  }
  ++g.generation;
  g.protocol = chosen;
  if (!g.members.count(g.leader)) g.leader = g.members.begin()->first;
  g.state = phase::completing_rebalance;
  g.state_time_ms = t;
  for (auto& [id, m] : g.members) {
    m.assignment.clear();
    kafka::join_group_response r;
    r.error_code = error_code::none;
    r.generation_id = g.generation;
    r.protocol_type = g.protocol_type;
    r.protocol_name = chosen;
    r.leader = g.leader;
    r.member_id = id;
    if (id == g.leader) {
      for (const auto& [oid, other] : g.members) {
        auto& x = r.members.emplace_back();
        x.member_id = oid;
        x.group_instance_id = other.instance_id;
        for (const auto& [name, meta] : other.protocols)
          if (name == chosen) x.metadata = meta;
      }
    }
    auto cb = std::move(m.awaiting_join);
    m.awaiting_join = nullptr;
    cb(r);
  }
}

void group_coordinator::sync(const kafka::sync_group_request& m, int16_t version, sync_done done) {
  kafka::sync_group_response out;
  auto fail = [&](int16_t code) {
    out.error_code = code;
    done(out);
  };
  if (int16_t s = status()) return fail(s);
  group* g = live_group(m.group_id);
  if (!g) return fail(error_code::unknown_member_id);
  auto mit = g->members.find(m.member_id);
  if (mit == g->members.end()) return fail(error_code::unknown_member_id);
  if (m.group_instance_id && mit->second.instance_id != m.group_instance_id)
    return fail(error_code::fenced_instance_id);
  if (m.generation_id != g->generation) return fail(error_code::illegal_generation);
  if (version >= 5 && ((m.protocol_type && *m.protocol_type != g->protocol_type) ||
                       (m.protocol_name && m.protocol_name != g->protocol)))
    return fail(error_code::inconsistent_group_protocol);
  if (g->state == phase::preparing_rebalance || g->state == phase::empty)
    return fail(error_code::rebalance_in_progress);
  member& mem = mit->second;
  mem.last_heard_ms = now();
  out.protocol_type = g->protocol_type;
  out.protocol_name = g->protocol;
  if (g->state == phase::stable) {
    out.assignment = mem.assignment;
    return done(out);
  }
  // Completing the rebalance: park until the leader's assignment is persisted.
  if (mem.awaiting_sync) {
    kafka::sync_group_response r;
    r.error_code = error_code::rebalance_in_progress;
    mem.awaiting_sync(r);
  }
  mem.awaiting_sync = std::move(done);
  if (m.member_id != g->leader) return;
  size_t assignment_bytes = 0;
  for (const auto& a : m.assignments)
    assignment_bytes += a.assignment.size();
  if (assignment_bytes > max_assignment_bytes) {
    // Too large to persist: nobody gets an assignment from it; the group rebalances.
    prepare_rebalance(*g);
    return;
  }
  for (auto& [id, other] : g->members)
    other.assignment.clear();
  for (const auto& a : m.assignments) {
    auto target = g->members.find(a.member_id);
    if (target != g->members.end()) target->second.assignment = a.assignment;
  }
  const int32_t generation = g->generation;
  const std::string group_id = g->id;
  persist_group(*g, [this, group_id, generation](bool ok) {
    group* g2 = live_group(group_id);
    if (!g2 || g2->generation != generation || g2->state != phase::completing_rebalance) return;
    if (ok) {
      g2->state = phase::stable;
      g2->state_time_ms = now();
    }
    for (auto& [id, other] : g2->members) {
      if (!other.awaiting_sync) continue;
      kafka::sync_group_response r;
      r.error_code = ok ? error_code::none : error_code::not_coordinator;
      r.protocol_type = g2->protocol_type;
      r.protocol_name = g2->protocol;
      if (ok) r.assignment = other.assignment;
      auto cb = std::move(other.awaiting_sync);
      other.awaiting_sync = nullptr;
      cb(r);
    }
    if (!ok) prepare_rebalance(*g2);
  });
}

// ---------------------------------------------------------------------------------------------
// Heartbeat and leave

kafka::heartbeat_response group_coordinator::heartbeat(const kafka::heartbeat_request& m) {
  kafka::heartbeat_response out;
  if (int16_t s = status()) {
    out.error_code = s;
    return out;
  }
  group* g = live_group(m.group_id);
  if (!g || !g->members.count(m.member_id)) {
    out.error_code = error_code::unknown_member_id;
    return out;
  }
  auto mit = g->members.find(m.member_id);
  if (m.group_instance_id && mit->second.instance_id != m.group_instance_id) {
    out.error_code = error_code::fenced_instance_id;
    return out;
  }
  if (m.generation_id != g->generation) {
    out.error_code = error_code::illegal_generation;
    return out;
  }
  mit->second.last_heard_ms = now();
  if (g->state == phase::preparing_rebalance) out.error_code = error_code::rebalance_in_progress;
  return out;
}

kafka::leave_group_response group_coordinator::leave(const kafka::leave_group_request& m,
                                                     int16_t version) {
  kafka::leave_group_response out;
  if (int16_t s = status()) {
    out.error_code = s;
    return out;
  }
  std::vector<std::pair<std::string, std::optional<std::string>>> leaving;
  if (version < 3)
    leaving.emplace_back(m.member_id, std::nullopt);
  else
    for (const auto& x : m.members)
      leaving.emplace_back(x.member_id, x.group_instance_id);
  group* g = live_group(m.group_id);
  bool any_left = false;
  for (const auto& [member_id, instance] : leaving) {
    int16_t error = error_code::none;
    std::string id = member_id;
    if (!g) {
      error = error_code::unknown_member_id;
    } else if (instance) {
      auto it = std::find_if(g->members.begin(), g->members.end(),
                             [&](const auto& e) { return e.second.instance_id == instance; });
      if (it == g->members.end())
        error = error_code::unknown_member_id;
      else if (!member_id.empty() && it->first != member_id)
        error = error_code::fenced_instance_id;
      else
        id = it->first;
    } else if (!g->members.count(member_id)) {
      error = error_code::unknown_member_id;
    }
    if (!error) {
      remove_member(*g, id);
      any_left = true;
    }
    if (version >= 3) {
      auto& r = out.members.emplace_back();
      r.member_id = member_id;
      r.group_instance_id = instance;
      r.error_code = error;
    } else {
      out.error_code = error;
    }
  }
  if (g && any_left) {
    if (g->members.empty())
      became_empty(*g);
    else if (g->state == phase::stable || g->state == phase::completing_rebalance)
      prepare_rebalance(*g);
    else
      maybe_complete_join(*g);
  }
  return out;
}

void group_coordinator::remove_member(group& g, const std::string& member_id) {
  auto it = g.members.find(member_id);
  if (it == g.members.end()) return;
  member m = std::move(it->second);
  g.members.erase(it);
  if (m.awaiting_join) {
    kafka::join_group_response r;
    r.error_code = error_code::unknown_member_id;
    r.member_id = member_id;
    m.awaiting_join(r);
  }
  if (m.awaiting_sync) {
    kafka::sync_group_response r;
    r.error_code = error_code::unknown_member_id;
    m.awaiting_sync(r);
  }
}

void group_coordinator::became_empty(group& g) {
  g.state = phase::empty;
  g.state_time_ms = now();
  ++g.generation;
  g.protocol.reset();
  g.leader.clear();
  persist_group(g, [](bool) {});
}

// ---------------------------------------------------------------------------------------------
// Persistence

stored_group group_coordinator::to_stored(const group& g) const {
  stored_group s;
  s.protocol_type = g.protocol_type;
  s.generation = g.generation;
  s.protocol = g.protocol;
  s.leader = g.leader;
  s.state_time_ms = g.state_time_ms;
  for (const auto& [id, m] : g.members) {
    stored_member sm;
    sm.id = id;
    sm.instance_id = m.instance_id;
    sm.client_id = m.client_id;
    sm.client_host = m.client_host;
    sm.session_timeout_ms = m.session_timeout_ms;
    sm.rebalance_timeout_ms = m.rebalance_timeout_ms;
    for (const auto& [name, meta] : m.protocols)
      if (g.protocol && name == *g.protocol) sm.subscription = meta;
    sm.assignment = m.assignment;
    s.members.push_back(std::move(sm));
  }
  return s;
}

void group_coordinator::persist_group(group& g, std::function<void(bool ok)> done) {
  std::vector<kafka::record> records;
  records.push_back(make_record(encode_group_key(g.id), encode_group_value(to_stored(g)), now()));
  if (!propose(std::move(records), done)) done(false);
}

bool group_coordinator::propose(std::vector<kafka::record> records,
                                std::function<void(bool ok)> done) {
  kafka::record_batch_builder b;
  for (auto& r : records)
    b.add(std::move(r));
  const raft::offset base = host_.next_offset();
  b.set_base_offset(base.value());
  b.set_leader_epoch(static_cast<int32_t>(host_.core().term().value()));
  auto bytes = b.build();
  const auto count = static_cast<int64_t>(b.records());
  auto proposed = host_.propose(raft::batch_type::data, count, raft::shared_bytes(std::move(bytes)),
                                [done, alive = alive_](const proposal_outcome& o) {
                                  if (*alive && done) done(o.committed);
                                });
  if (!proposed) {
    log_line("cannot write to __consumer_offsets: " + proposed.err().describe());
    return false;
  }
  return true;
}

// ---------------------------------------------------------------------------------------------
// Offsets

void group_coordinator::commit_offsets(const kafka::offset_commit_request& m,
                                       std::vector<topic_partition_key> partitions,
                                       std::function<void(std::vector<int16_t>)> done) {
  std::vector<int16_t> errors(partitions.size(), error_code::none);
  auto fail_all = [&](int16_t code) {
    std::fill(errors.begin(), errors.end(), code);
    done(errors);
  };
  if (int16_t s = status()) return fail_all(s);
  if (m.group_id.empty()) return fail_all(error_code::invalid_group_id);
  group* g = live_group(m.group_id);
  const bool simple = m.generation_id_or_member_epoch < 0 && m.member_id.empty();
  if (simple) {
    if (g && !g->members.empty()) return fail_all(error_code::unknown_member_id);
  } else {
    if (!g) return fail_all(error_code::illegal_generation);
    auto mit = g->members.find(m.member_id);
    if (g->state == phase::completing_rebalance) return fail_all(error_code::rebalance_in_progress);
    if (mit == g->members.end()) return fail_all(error_code::unknown_member_id);
    if (m.group_instance_id && mit->second.instance_id != m.group_instance_id)
      return fail_all(error_code::fenced_instance_id);
    if (m.generation_id_or_member_epoch != g->generation)
      return fail_all(error_code::illegal_generation);
    mit->second.last_heard_ms = now();
  }
  // The request's partitions, in request order, matched to `partitions`.
  std::map<topic_partition_key,
           const kafka::offset_commit_request::offset_commit_request_partition*>
      by_key;
  for (const auto& t : m.topics)
    for (const auto& p : t.partitions)
      by_key[{t.name, p.partition_index}] = &p;
  std::vector<kafka::record> records;
  const int64_t t_now = now();
  for (size_t i = 0; i < partitions.size(); ++i) {
    const auto* p = by_key.at(partitions[i]);
    if (p->committed_metadata &&
        p->committed_metadata->size() > static_cast<size_t>(options_.max_metadata_bytes)) {
      errors[i] = error_code::offset_metadata_too_large;
      continue;
    }
    committed_offset o;
    o.offset = p->committed_offset;
    o.leader_epoch = p->committed_leader_epoch;
    o.metadata = p->committed_metadata.value_or("");
    o.commit_time_ms = t_now;
    records.push_back(
        make_record(encode_offset_key(m.group_id, partitions[i]), encode_offset_value(o), t_now));
  }
  if (records.empty()) return done(errors);
  if (g && g->members.empty()) g->state_time_ms = t_now;
  auto shared = std::make_shared<std::vector<int16_t>>(std::move(errors));
  auto finish = [shared, done](bool ok) {
    for (auto& e : *shared)
      if (e == error_code::none && !ok) e = error_code::not_coordinator;
    done(*shared);
  };
  if (!propose(std::move(records), finish)) finish(false);
}

std::map<topic_partition_key, committed_offset> group_coordinator::offsets(
    const std::string& group, const std::optional<std::vector<topic_partition_key>>& only) const {
  std::map<topic_partition_key, committed_offset> out;
  auto it = offsets_.find(group);
  if (it == offsets_.end()) return out;
  if (!only) return it->second;
  for (const auto& tp : *only)
    if (auto o = it->second.find(tp); o != it->second.end()) out.emplace(tp, o->second);
  return out;
}

// ---------------------------------------------------------------------------------------------
// Describe, list, delete

const char* group_coordinator::state_name(phase p) {
  switch (p) {
    case phase::empty:
      return "Empty";
    case phase::preparing_rebalance:
      return "PreparingRebalance";
    case phase::completing_rebalance:
      return "CompletingRebalance";
    case phase::stable:
      return "Stable";
  }
  return "Dead";
}

kafka::describe_groups_response::described_group group_coordinator::describe(
    const std::string& id) {
  kafka::describe_groups_response::described_group out;
  out.group_id = id;
  if (int16_t s = status()) {
    out.error_code = s;
    return out;
  }
  group* g = live_group(id);
  if (!g) {
    out.group_state = offsets_.count(id) ? "Empty" : "Dead";
    return out;
  }
  out.group_state = state_name(g->state);
  out.protocol_type = g->protocol_type;
  out.protocol_data = g->state == phase::stable ? g->protocol.value_or("") : "";
  for (const auto& [mid, m] : g->members) {
    auto& x = out.members.emplace_back();
    x.member_id = mid;
    x.group_instance_id = m.instance_id;
    x.client_id = m.client_id;
    x.client_host = m.client_host;
    for (const auto& [name, meta] : m.protocols)
      if (g->protocol && name == *g->protocol) x.member_metadata = meta;
    if (g->state == phase::stable) x.member_assignment = m.assignment;
  }
  return out;
}

std::vector<group_coordinator::listed_group> group_coordinator::list() {
  std::vector<listed_group> out;
  if (status()) return out;
  for (const auto& [id, g] : live_)
    out.push_back({id, g.protocol_type, state_name(g.state)});
  for (const auto& [id, o] : offsets_)
    if (!live_.count(id)) out.push_back({id, "", "Empty"});
  return out;
}

void group_coordinator::delete_group(const std::string& id, std::function<void(int16_t)> done) {
  if (int16_t s = status()) return done(s);
  group* g = live_group(id);
  if (g && !g->members.empty()) return done(error_code::non_empty_group);
  if (!g && !offsets_.count(id) && !committed_.count(id))
    return done(error_code::group_id_not_found);
  std::vector<kafka::record> records;
  const int64_t t = now();
  records.push_back(make_record(encode_group_key(id), std::nullopt, t));
  if (auto it = offsets_.find(id); it != offsets_.end())
    for (const auto& [tp, o] : it->second)
      records.push_back(make_record(encode_offset_key(id, tp), std::nullopt, t));
  live_.erase(id);
  if (!propose(std::move(records),
               [done](bool ok) { done(ok ? error_code::none : error_code::not_coordinator); }))
    done(error_code::not_coordinator);
}

std::set<std::string> group_coordinator::subscribed_topics(const group& g) const {
  // The consumer protocol's Subscription: int16 version, array of topic names, ...
  std::set<std::string> out;
  if (g.protocol_type != "consumer") return out;
  for (const auto& [id, m] : g.members) {
    for (const auto& [name, meta] : m.protocols) {
      if (g.protocol && name != *g.protocol) continue;
      kafka::reader r(meta);
      (void)r.get_int16();
      const int32_t n = r.get_array_length(false);
      for (int32_t i = 0; i < n && r.ok(); ++i)
        out.insert(r.get_string(false));
    }
  }
  return out;
}

void group_coordinator::delete_offsets(const std::string& id,
                                       std::vector<topic_partition_key> partitions,
                                       std::function<void(int16_t, std::vector<int16_t>)> done) {
  std::vector<int16_t> errors(partitions.size(), error_code::none);
  if (int16_t s = status()) return done(s, errors);
  group* g = live_group(id);
  if (!g && !offsets_.count(id)) return done(error_code::group_id_not_found, errors);
  const auto subscribed =
      g && !g->members.empty() ? subscribed_topics(*g) : std::set<std::string>{};
  std::vector<kafka::record> records;
  const int64_t t = now();
  for (size_t i = 0; i < partitions.size(); ++i) {
    if (subscribed.count(partitions[i].topic)) {
      errors[i] = error_code::group_subscribed_to_topic;
      continue;
    }
    records.push_back(make_record(encode_offset_key(id, partitions[i]), std::nullopt, t));
  }
  if (records.empty()) return done(error_code::none, errors);
  auto shared = std::make_shared<std::vector<int16_t>>(std::move(errors));
  auto finish = [shared, done](bool ok) {
    done(ok ? error_code::none : error_code::not_coordinator, *shared);
  };
  if (!propose(std::move(records), finish)) finish(false);
}

// ---------------------------------------------------------------------------------------------
// Timers

void group_coordinator::tick() {
  if (status() != error_code::none) return;
  const int64_t t = now();
  for (auto it = live_.begin(); it != live_.end(); ++it) {
    group& g = it->second;
    std::erase_if(g.pending_members, [&](const auto& e) { return t - e.second > 60000; });
    bool removed = false;
    for (auto mit = g.members.begin(); mit != g.members.end();) {
      const member& m = mit->second;
      const bool waiting = g.state == phase::preparing_rebalance && m.awaiting_join;
      if (!waiting && t - m.last_heard_ms > m.session_timeout_ms) {
        const std::string id = mit->first;
        ++mit;
        remove_member(g, id);
        removed = true;
      } else {
        ++mit;
      }
    }
    if (removed) {
      if (g.members.empty())
        became_empty(g);
      else if (g.state == phase::stable || g.state == phase::completing_rebalance)
        prepare_rebalance(g);
    }
    maybe_complete_join(g);
  }
  if (t - last_expiry_check_ms_ > 10000) {
    last_expiry_check_ms_ = t;
    expire_empty_groups();
  }
  maybe_checkpoint();
}

void group_coordinator::expire_empty_groups() {
  const int64_t t = now();
  std::vector<std::string> expired;
  std::set<std::string> ids;
  for (const auto& [id, o] : offsets_)
    ids.insert(id);
  for (const auto& [id, g] : live_)
    ids.insert(id);
  for (const auto& id : ids) {
    group* g = live_group(id);
    if (g && !g->members.empty()) continue;
    int64_t newest = g ? g->state_time_ms : 0;
    if (auto it = offsets_.find(id); it != offsets_.end())
      for (const auto& [tp, o] : it->second)
        newest = std::max(newest, o.commit_time_ms);
    if (t - newest > options_.offsets_retention_ms) expired.push_back(id);
  }
  for (const auto& id : expired) {
    log_line("group " + id + " expired: empty for longer than the offsets retention");
    delete_group(id, [](int16_t) {});
  }
}

void group_coordinator::maybe_checkpoint() {
  if (records_since_checkpoint_ < options_.checkpoint_records) return;
  // Only at a quiet moment: everything proposed is committed and applied, so the committed
  // state is the whole log's state and nothing before the checkpoint is left out of it.
  const raft::offset last = host_.core().log().last();
  if (host_.high_watermark() != last || applied_ != last.value() || !host_.idle()) return;
  const int64_t t = now();
  std::vector<kafka::record> all;
  all.push_back(make_record(encode_checkpoint_key(group_record_kind::checkpoint_begin),
                            std::string("\0\0", 2), t));
  for (const auto& [id, g] : committed_)
    all.push_back(make_record(encode_group_key(id), encode_group_value(g), t));
  for (const auto& [id, parts] : offsets_)
    for (const auto& [tp, o] : parts)
      all.push_back(make_record(encode_offset_key(id, tp), encode_offset_value(o), t));
  const int64_t begin = host_.next_offset().value();
  all.push_back(make_record(encode_checkpoint_key(group_record_kind::checkpoint_end),
                            encode_checkpoint_end_value(begin), t));
  records_since_checkpoint_ = 0;
  // Consecutive proposals on this thread: nothing else lands between them.
  for (size_t i = 0; i < all.size(); i += checkpoint_batch_records) {
    std::vector<kafka::record> part(
        std::make_move_iterator(all.begin() + static_cast<ptrdiff_t>(i)),
        std::make_move_iterator(all.begin() + static_cast<ptrdiff_t>(std::min(
                                                  all.size(), i + checkpoint_batch_records))));
    if (!propose(std::move(part), {})) return;  // the next checkpoint tries again
  }
}

}  // namespace keel::server
