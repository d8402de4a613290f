// Kafka's consumer-group APIs. A group maps to one partition of __consumer_offsets (Kafka's
// hash: the group id's Java String.hashCode, made non-negative, modulo the partition count); the
// leader of that partition's Raft group is the group's coordinator. Shard 0 routes each request
// to the partition's shard, where its group_coordinator answers.
#include <algorithm>

#include "kafka_support.h"
#include "keel/server/broker.h"
#include "keel/server/group_coordinator.h"

namespace keel::server {

namespace kafka = net::kafka;
namespace error_code = net::kafka::error_code;

namespace {

constexpr const char* offsets_topic = "__consumer_offsets";
constexpr int8_t group_key_type = 0;

int32_t partition_for_group(const std::string& group, int32_t partitions) {
  int32_t h = 0;
  for (unsigned char c : group)
    h = static_cast<int32_t>(31u * static_cast<uint32_t>(h) + c);
  return (h & 0x7fffffff) % partitions;
}

}  // namespace

void kafka_frontend::with_coordinator(const std::string& group,
                                      std::function<void(group_coordinator*)> fn) {
  const topic_info* t = broker_.controller_->state().topic(offsets_topic);
  if (!t || t->partitions.empty()) return fn(nullptr);
  const int32_t p = partition_for_group(group, static_cast<int32_t>(t->partitions.size()));
  const partition_location at = locate(offsets_topic, p);
  if (at.error) return fn(nullptr);
  run_on(at.shard, [this, k = at.shard, g = at.group, fn = std::move(fn)] {
    auto& groups = broker_.shards_[k].groups;
    auto it = groups.find(g);
    fn(it == groups.end() ? nullptr : it->second.coordinator.get());
  });
}

void kafka_frontend::find_coordinator(const request& rq, kafka::find_coordinator_request m) {
  broker& b = broker_;
  const metadata_state& state = b.controller_->state();
  const topic_info* t = state.topic(offsets_topic);
  if (!t) {
    // Created on first use, as Kafka does; the client asks again.
    const int16_t rf = state.default_replication_factor(3);
    b.request_create_topic(offsets_topic, b.config_.offsets_topic_partitions, rf,
                           {{"segment.bytes", std::to_string(16 << 20)}},
                           [](bool, const std::string&) {});
  }
  struct answer_for {
    int16_t error = error_code::none;
    std::string message;
    int32_t node = -1;
    std::string host;
    int32_t port = -1;
  };
  auto lookup = [&](const std::string& key) {
    answer_for a;
    if (m.key_type != group_key_type) {
      a.error = error_code::coordinator_not_available;
      a.message = "transactions are not supported";
      return a;
    }
    if (!t) {
      a.error = error_code::coordinator_not_available;
      a.message = "the offsets topic is being created";
      return a;
    }
    const int32_t p = partition_for_group(key, static_cast<int32_t>(t->partitions.size()));
    const int32_t leader = b.leader_of(t->groups[static_cast<size_t>(p)]);
    auto info = state.brokers().find(leader);
    // A fenced broker is not in the Metadata broker list either: no coordinator until the
    // partition's leadership has moved.
    if (leader < 0 || info == state.brokers().end() || info->second.fenced) {
      a.error = error_code::coordinator_not_available;
      a.message = "the group's offsets partition has no leader yet";
      return a;
    }
    a.node = leader;
    a.host = info->second.kafka.host;
    a.port = info->second.kafka.port;
    return a;
  };
  kafka::find_coordinator_response out;
  if (rq.api_version < 4) {
    const answer_for a = lookup(m.key);
    out.error_code = a.error;
    if (!a.message.empty()) out.error_message = a.message;
    out.node_id = a.node;
    out.host = a.host;
    out.port = a.port;
  } else {
    for (const auto& key : m.coordinator_keys) {
      const answer_for a = lookup(key);
      auto& c = out.coordinators.emplace_back();
      c.key = key;
      c.error_code = a.error;
      if (!a.message.empty()) c.error_message = a.message;
      c.node_id = a.node;
      c.host = a.host;
      c.port = a.port;
    }
  }
  answer(rq, out);
}

void kafka_frontend::join_group(const request& rq, kafka::join_group_request m) {
  auto group = m.group_id;
  with_coordinator(group, [this, rq, m = std::move(m)](group_coordinator* c) {
    auto done = [this, rq](kafka::join_group_response r) { answer(rq, r); };
    if (!c) {
      kafka::join_group_response r;
      r.error_code = error_code::not_coordinator;
      r.member_id = m.member_id;
      return done(r);
    }
    const std::string host = rq.peer.substr(0, rq.peer.rfind(':'));
    c->join(m, rq.api_version, rq.client_id, "/" + host, done);
  });
}

void kafka_frontend::sync_group(const request& rq, kafka::sync_group_request m) {
  auto group = m.group_id;
  with_coordinator(group, [this, rq, m = std::move(m)](group_coordinator* c) {
    auto done = [this, rq](kafka::sync_group_response r) { answer(rq, r); };
    if (!c) {
      kafka::sync_group_response r;
      r.error_code = error_code::not_coordinator;
      return done(r);
    }
    c->sync(m, rq.api_version, done);
  });
}

void kafka_frontend::heartbeat(const request& rq, kafka::heartbeat_request m) {
  auto group = m.group_id;
  with_coordinator(group, [this, rq, m = std::move(m)](group_coordinator* c) {
    kafka::heartbeat_response r;
    if (c)
      r = c->heartbeat(m);
    else
      r.error_code = error_code::not_coordinator;
    answer(rq, r);
  });
}

void kafka_frontend::leave_group(const request& rq, kafka::leave_group_request m) {
  auto group = m.group_id;
  with_coordinator(group, [this, rq, m = std::move(m)](group_coordinator* c) {
    kafka::leave_group_response r;
    if (c)
      r = c->leave(m, rq.api_version);
    else
      r.error_code = error_code::not_coordinator;
    answer(rq, r);
  });
}

void kafka_frontend::offset_commit(const request& rq, kafka::offset_commit_request m) {
  // Partitions that do not exist are answered here; the others go to the coordinator.
  kafka::offset_commit_response out;
  std::vector<topic_partition_key> known;
  std::vector<std::pair<size_t, size_t>> known_at;  // (topic, partition) index in `out`
  const metadata_state& state = broker_.controller_->state();
  for (const auto& t : m.topics) {
    auto& rt = out.topics.emplace_back();
    rt.name = t.name;
    const topic_info* info = state.topic(t.name);
    for (const auto& p : t.partitions) {
      auto& rp = rt.partitions.emplace_back();
      rp.partition_index = p.partition_index;
      if (!info || p.partition_index < 0 ||
          static_cast<size_t>(p.partition_index) >= info->partitions.size()) {
        rp.error_code = error_code::unknown_topic_or_partition;
        continue;
      }
      known.push_back({t.name, p.partition_index});
      known_at.emplace_back(out.topics.size() - 1, rt.partitions.size() - 1);
    }
  }
  auto group = m.group_id;
  with_coordinator(
      group, [this, rq, m = std::move(m), out = std::move(out), known = std::move(known),
              known_at = std::move(known_at)](group_coordinator* c) mutable {
        auto finish = [this, rq, out, known_at](std::vector<int16_t> errors) mutable {
          for (size_t i = 0; i < known_at.size(); ++i)
            out.topics[known_at[i].first].partitions[known_at[i].second].error_code = errors[i];
          answer(rq, out);
        };
        if (!c) return finish(std::vector<int16_t>(known_at.size(), error_code::not_coordinator));
        if (known.empty()) return finish({});
        c->commit_offsets(m, std::move(known), finish);
      });
}

void kafka_frontend::offset_fetch(const request& rq, kafka::offset_fetch_request m) {
  // One group per request before v8, several from v8; each group is fetched from its own
  // coordinator and the answers are gathered on shard 0.
  struct wanted_group {
    std::string id;
    std::optional<std::vector<topic_partition_key>> partitions;
  };
  std::vector<wanted_group> wanted;
  if (rq.api_version < 8) {
    wanted_group w{m.group_id, std::nullopt};
    if (m.topics) {
      w.partitions.emplace();
      for (const auto& t : *m.topics)
        for (int32_t p : t.partition_indexes)
          w.partitions->push_back({t.name, p});
    }
    wanted.push_back(std::move(w));
  } else {
    for (const auto& g : m.groups) {
      wanted_group w{g.group_id, std::nullopt};
      if (g.topics) {
        w.partitions.emplace();
        for (const auto& t : *g.topics)
          for (int32_t p : t.partition_indexes)
            w.partitions->push_back({t.name, p});
      }
      wanted.push_back(std::move(w));
    }
  }
  struct result {
    int16_t error = error_code::none;
    std::map<topic_partition_key, committed_offset> offsets;
  };
  struct gather {
    std::vector<wanted_group> wanted;
    std::vector<result> results;
    int outstanding = 0;
  };
  auto state = std::make_shared<gather>();
  state->wanted = std::move(wanted);
  state->results.resize(state->wanted.size());
  state->outstanding = static_cast<int>(state->wanted.size());
  const int16_t version = rq.api_version;
  auto finish = [this, rq, state, version] {
    kafka::offset_fetch_response out;
    for (size_t i = 0; i < state->wanted.size(); ++i) {
      const wanted_group& w = state->wanted[i];
      const result& r = state->results[i];
      // The partitions to report: those asked for, or every one with an offset.
      std::map<std::string, std::vector<std::pair<int32_t, const committed_offset*>>> by_topic;
      static const committed_offset none;
      if (w.partitions) {
        for (const auto& tp : *w.partitions) {
          auto it = r.offsets.find(tp);
          by_topic[tp.topic].emplace_back(tp.partition,
                                          it == r.offsets.end() ? &none : &it->second);
        }
      } else {
        for (const auto& [tp, o] : r.offsets)
          by_topic[tp.topic].emplace_back(tp.partition, &o);
      }
      if (version < 8) {
        out.error_code = r.error;
        for (const auto& [topic, parts] : by_topic) {
          auto& rt = out.topics.emplace_back();
          rt.name = topic;
          for (const auto& [p, o] : parts) {
            auto& rp = rt.partitions.emplace_back();
            rp.partition_index = p;
            rp.committed_offset = o->offset;
            rp.committed_leader_epoch = o->leader_epoch;
            rp.metadata = o->metadata.value_or("");
            rp.error_code = version < 2 ? r.error : error_code::none;
          }
        }
      } else {
        auto& g = out.groups.emplace_back();
        g.group_id = w.id;
        g.error_code = r.error;
        for (const auto& [topic, parts] : by_topic) {
          auto& rt = g.topics.emplace_back();
          rt.name = topic;
          for (const auto& [p, o] : parts) {
            auto& rp = rt.partitions.emplace_back();
            rp.partition_index = p;
            rp.committed_offset = o->offset;
            rp.committed_leader_epoch = o->leader_epoch;
            rp.metadata = o->metadata.value_or("");
          }
        }
      }
    }
    answer(rq, out);
  };
  if (state->wanted.empty()) return finish();
  for (size_t i = 0; i < state->wanted.size(); ++i) {
    with_coordinator(state->wanted[i].id, [this, state, i, finish](group_coordinator* c) {
      result r;
      if (!c)
        r.error = error_code::not_coordinator;
      else if (int16_t s = c->status())
        r.error = s;
      else
        r.offsets = c->offsets(state->wanted[i].id, state->wanted[i].partitions);
      run_on_shard0([state, i, finish, r = std::move(r)]() mutable {
        state->results[i] = std::move(r);
        if (--state->outstanding == 0) finish();
      });
    });
  }
}

void kafka_frontend::list_groups(const request& rq, kafka::list_groups_request m) {
  // Every coordinator this broker runs answers for its groups (Kafka's ListGroups is per broker).
  auto state = std::make_shared<gathered_response<kafka::list_groups_response>>();
  auto finish_one = [this, rq, state] {
    if (--state->outstanding == 0) answer(rq, state->response);
  };
  const std::vector<std::string> states = m.states_filter;
  for (unsigned k = 0; k < broker_.shards_.size(); ++k) {
    ++state->outstanding;
    run_on(k, [this, k, state, states, finish_one] {
      std::vector<group_coordinator::listed_group> found;
      for (auto& [g, r] : broker_.shards_[k].groups)
        if (r.coordinator && r.coordinator->status() == error_code::none)
          for (auto& x : r.coordinator->list())
            found.push_back(std::move(x));
      run_on_shard0([state, states, finish_one, found = std::move(found)] {
        for (const auto& x : found) {
          if (!states.empty() && std::find(states.begin(), states.end(), x.state) == states.end())
            continue;
          auto& g = state->response.groups.emplace_back();
          g.group_id = x.id;
          g.protocol_type = x.protocol_type;
          g.group_state = x.state;
        }
        finish_one();
      });
    });
  }
  finish_one();
}

void kafka_frontend::describe_groups(const request& rq, kafka::describe_groups_request m) {
  auto state = std::make_shared<gathered_response<kafka::describe_groups_response>>();
  auto finish_one = [this, rq, state] {
    if (--state->outstanding == 0) answer(rq, state->response);
  };
  state->response.groups.resize(m.groups.size());
  for (size_t i = 0; i < m.groups.size(); ++i) {
    ++state->outstanding;
    const std::string id = m.groups[i];
    with_coordinator(id, [this, state, i, id, finish_one](group_coordinator* c) {
      kafka::describe_groups_response::described_group d;
      if (c) {
        d = c->describe(id);
      } else {
        d.group_id = id;
        d.error_code = error_code::not_coordinator;
      }
      run_on_shard0([state, i, finish_one, d = std::move(d)]() mutable {
        state->response.groups[i] = std::move(d);
        finish_one();
      });
    });
  }
  finish_one();
}

void kafka_frontend::delete_groups(const request& rq, kafka::delete_groups_request m) {
  auto state = std::make_shared<gathered_response<kafka::delete_groups_response>>();
  auto finish_one = [this, rq, state] {
    if (--state->outstanding == 0) answer(rq, state->response);
  };
  state->response.results.resize(m.groups_names.size());
  for (size_t i = 0; i < m.groups_names.size(); ++i) {
    ++state->outstanding;
    const std::string id = m.groups_names[i];
    state->response.results[i].group_id = id;
    with_coordinator(id, [this, state, i, id, finish_one](group_coordinator* c) {
      auto done = [this, state, i, finish_one](int16_t error) {
        run_on_shard0([state, i, finish_one, error] {
          state->response.results[i].error_code = error;
          finish_one();
        });
      };
      if (!c) return done(error_code::not_coordinator);
      c->delete_group(id, done);
    });
  }
  finish_one();
}

void kafka_frontend::offset_delete(const request& rq, kafka::offset_delete_request m) {
  kafka::offset_delete_response out;
  std::vector<topic_partition_key> partitions;
  for (const auto& t : m.topics) {
    auto& rt = out.topics.emplace_back();
    rt.name = t.name;
    for (const auto& p : t.partitions) {
      rt.partitions.emplace_back().partition_index = p.partition_index;
      partitions.push_back({t.name, p.partition_index});
    }
  }
  auto group = m.group_id;
  with_coordinator(group, [this, rq, group, out = std::move(out),
                           partitions = std::move(partitions)](group_coordinator* c) mutable {
    auto done = [this, rq, out](int16_t group_error, std::vector<int16_t> errors) mutable {
      out.error_code = group_error;
      size_t i = 0;
      for (auto& t : out.topics)
        for (auto& p : t.partitions)
          p.error_code = i < errors.size() ? errors[i++] : error_code::none;
      answer(rq, out);
    };
    if (!c) return done(error_code::not_coordinator, {});
    c->delete_offsets(group, std::move(partitions), done);
  });
}

}  // namespace keel::server
