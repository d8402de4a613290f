// Kafka APIs answered from the cluster metadata on shard 0: Metadata, DescribeCluster,
// DescribeConfigs, and the topic administration that goes through the controller (CreateTopics,
// DeleteTopics, CreatePartitions).
#include <algorithm>
#include <charconv>
#include <set>

#include "kafka_support.h"
#include "keel/server/broker.h"

namespace keel::server {

namespace kafka = net::kafka;
namespace error_code = net::kafka::error_code;

namespace {

// The topic configs Keel honours, with where their broker-wide default comes from.
struct topic_config_key {
  const char* name;
  const char* broker_name;  // the broker setting that gives the default
};
constexpr topic_config_key topic_config_keys[] = {
    {"cleanup.policy", "log.cleanup.policy"},
    {"retention.ms", "log.retention.ms"},
    {"retention.bytes", "log.retention.bytes"},
    {"segment.bytes", "log.segment.bytes"},
    {"segment.ms", "log.roll.ms"},
    {"max.message.bytes", "message.max.bytes"},
};

std::string topic_config_default(const broker_config& c, const std::string& key) {
  if (key == "cleanup.policy") return "delete";
  if (key == "retention.ms") return std::to_string(c.retention_ms);
  if (key == "retention.bytes") return std::to_string(c.retention_bytes);
  if (key == "segment.bytes") return std::to_string(c.segment_bytes);
  if (key == "segment.ms") return std::to_string(c.segment_ms);
  if (key == "max.message.bytes") return std::to_string(c.message_max_bytes);
  return {};
}

bool known_topic_config(const std::string& key) {
  return std::any_of(std::begin(topic_config_keys), std::end(topic_config_keys),
                     [&](const topic_config_key& k) { return key == k.name; });
}

// Empty when `value` is acceptable for `key`, else why not.
std::string check_topic_config(const std::string& key, const std::optional<std::string>& value) {
  if (!known_topic_config(key)) return "unknown or unsupported topic config " + key;
  if (!value) return "config " + key + " needs a value";
  if (key == "cleanup.policy") {
    if (*value == "delete") return {};
    return "cleanup.policy=" + *value + " is not supported (only delete; compaction is not built)";
  }
  int64_t v = 0;
  auto [p, ec] = std::from_chars(value->data(), value->data() + value->size(), v);
  if (ec != std::errc() || p != value->data() + value->size())
    return "config " + key + " must be an integer, not '" + *value + "'";
  const int64_t min = key == "segment.bytes"       ? 1 << 20
                      : key == "max.message.bytes" ? 0
                      : key == "segment.ms"        ? 1000
                                                   : -1;
  if (v < min) return "config " + key + " must be at least " + std::to_string(min);
  return {};
}

// A controller refusal, as the Kafka error a client understands.
int16_t controller_error(const std::string& e) {
  if (e.find("already exists") != std::string::npos) return error_code::topic_already_exists;
  if (e.find("invalid topic name") != std::string::npos) return error_code::invalid_topic_exception;
  if (e.find("alive brokers") != std::string::npos ||
      e.find("replication factor") != std::string::npos)
    return error_code::invalid_replication_factor;
  if (e.find("no topic") != std::string::npos) return error_code::unknown_topic_or_partition;
  if (e.find("invalid partitions") != std::string::npos) return error_code::invalid_partitions;
  if (e.rfind("not_controller", 0) == 0 || e.find("not the controller") != std::string::npos ||
      e.find("not committed") != std::string::npos)
    return error_code::not_controller;
  if (e.rfind("timed_out", 0) == 0) return error_code::request_timed_out;
  return error_code::invalid_request;
}

}  // namespace

int32_t kafka_frontend::controller_for_clients() const {
  // As Kafka in KRaft mode: any broker takes admin requests and forwards them to the controller
  // (frame 18), so clients are pointed at this broker, alive since it answers, and not at the
  // metadata group's leader: a client keeps its cached controller, and one that had the
  // leader's id waited out its whole timeout after that broker died (librdkafka: "Failed while
  // waiting for controller"). Only listed (unfenced) brokers are named.
  const metadata_state& state = broker_.controller_->state();
  const int32_t self = broker_.config_.node_id;
  if (state.broker_unfenced(self)) return self;
  if (const int32_t l = broker_.controller_->leader(); l >= 0 && state.broker_unfenced(l)) return l;
  const auto alive = state.unfenced_brokers();
  return alive.empty() ? -1 : alive.front();
}

void kafka_frontend::metadata(const request& rq, kafka::metadata_request m) {
  broker& b = broker_;
  const metadata_state& state = b.controller_->state();
  kafka::metadata_response out;
  // As Kafka (KRaft): only unfenced brokers are listed, so every broker gives clients the same
  // list, taken from the replicated metadata rather than its own links.
  for (const auto& [id, info] : state.brokers()) {
    if (info.fenced) continue;
    auto& x = out.brokers.emplace_back();
    x.node_id = id;
    x.host = info.kafka.host;
    x.port = info.kafka.port;
  }
  out.cluster_id = b.cluster_id();
  out.controller_id = controller_for_clients();

  auto describe = [&](const topic_info& t) {
    auto& x = out.topics.emplace_back();
    x.name = t.name;
    x.topic_id = t.id;
    x.is_internal = t.name.rfind("__", 0) == 0;
    for (size_t p = 0; p < t.partitions.size(); ++p) {
      auto& y = x.partitions.emplace_back();
      y.partition_index = static_cast<int32_t>(p);
      for (const replica& r : t.partitions[p]) {
        y.replica_nodes.push_back(r.broker);
        if (!b.broker_alive(r.broker)) y.offline_replicas.push_back(r.broker);
      }
      const uint64_t group = t.groups[p];
      int32_t leader = b.leader_of(group);
      // A leader must be one of the listed brokers, or clients cannot resolve it. A fenced
      // broker's leaderships have normally moved (elections take a few hundred ms, fencing a
      // session timeout); a stale report of one is answered as no leader yet, and clients retry.
      if (leader >= 0 && !state.broker_unfenced(leader)) leader = -1;
      y.leader_id = leader;
      if (leader < 0) {
        y.error_code = error_code::leader_not_available;
        continue;
      }
      const broker::leader_entry& e = b.leaders_.at(group);
      y.leader_epoch = static_cast<int32_t>(e.term);
      y.isr_nodes = e.isr.empty() ? std::vector<int32_t>{leader} : e.isr;
    }
  };

  // Null (v1+) or an empty list at v0 means every topic.
  const bool all = !m.topics || (rq.api_version == 0 && m.topics->empty());
  if (all) {
    for (const auto& [name, t] : state.topics())
      describe(t);
    return answer(rq, out);
  }
  const bool may_create =
      b.config_.auto_create_topics && (rq.api_version < 4 || m.allow_auto_topic_creation);
  for (const auto& want : *m.topics) {
    const topic_info* t = nullptr;
    if (want.name) {
      t = state.topic(*want.name);
    } else {
      for (const auto& [name, info] : state.topics())
        if (info.id == want.topic_id) t = &info;
    }
    if (t) {
      describe(*t);
      continue;
    }
    auto& x = out.topics.emplace_back();
    x.name = want.name;
    x.topic_id = want.topic_id;
    if (!want.name) {
      x.error_code = error_code::unknown_topic_or_partition;
    } else if (!valid_topic_name(*want.name)) {
      x.error_code = error_code::invalid_topic_exception;
    } else if (may_create) {
      // As Kafka does: the topic is being created; the client asks again.
      x.error_code = error_code::leader_not_available;
      request_auto_create(*want.name);
    } else {
      x.error_code = error_code::unknown_topic_or_partition;
    }
  }
  answer(rq, out);
}

void kafka_frontend::request_auto_create(const std::string& topic) {
  broker& b = broker_;
  const int16_t rf =
      b.controller_->state().default_replication_factor(b.config_.default_replication_factor);
  b.request_create_topic(topic, b.config_.default_partitions, rf, {},
                         [](bool, const std::string&) {});
}

void kafka_frontend::describe_cluster(const request& rq, kafka::describe_cluster_request) {
  broker& b = broker_;
  kafka::describe_cluster_response out;
  out.cluster_id = b.cluster_id();
  out.controller_id = controller_for_clients();
  for (const auto& [id, info] : b.controller_->state().brokers()) {
    if (info.fenced) continue;  // as Metadata: the unfenced brokers only
    auto& x = out.brokers.emplace_back();
    x.broker_id = id;
    x.host = info.kafka.host;
    x.port = info.kafka.port;
  }
  answer(rq, out);
}

void kafka_frontend::describe_configs(const request& rq, kafka::describe_configs_request m) {
  constexpr int8_t topic_resource = 2, broker_resource = 4;
  constexpr int8_t source_topic = 1, source_static_broker = 4, source_default = 5;
  broker& b = broker_;
  const broker_config& c = b.config_;
  kafka::describe_configs_response out;
  for (const auto& res : m.resources) {
    auto& r = out.results.emplace_back();
    r.resource_type = res.resource_type;
    r.resource_name = res.resource_name;
    auto wanted = [&](const std::string& key) {
      return !res.configuration_keys ||
             std::find(res.configuration_keys->begin(), res.configuration_keys->end(), key) !=
                 res.configuration_keys->end();
    };
    auto add = [&](const std::string& key, const std::string& value, bool is_default, int8_t source,
                   bool read_only) {
      if (!wanted(key)) return;
      auto& x = r.configs.emplace_back();
      x.name = key;
      x.value = value;
      x.read_only = read_only;
      x.is_default = is_default;
      x.config_source = source;
    };
    if (res.resource_type == topic_resource) {
      const topic_info* t = b.controller_->state().topic(res.resource_name);
      if (!t) {
        r.error_code = error_code::unknown_topic_or_partition;
        r.error_message = "no topic " + res.resource_name;
        continue;
      }
      for (const auto& k : topic_config_keys) {
        auto it = t->configs.find(k.name);
        if (it != t->configs.end())
          add(k.name, it->second, false, source_topic, false);
        else
          add(k.name, topic_config_default(c, k.name), true, source_default, false);
      }
    } else if (res.resource_type == broker_resource) {
      if (!res.resource_name.empty() && res.resource_name != std::to_string(c.node_id)) {
        r.error_code = error_code::invalid_request;
        r.error_message = "ask broker " + res.resource_name + " for its own configs";
        continue;
      }
      const std::pair<std::string, std::string> settings[] = {
          {"broker.id", std::to_string(c.node_id)},
          {"num.partitions", std::to_string(c.default_partitions)},
          {"default.replication.factor", std::to_string(c.default_replication_factor)},
          {"auto.create.topics.enable", c.auto_create_topics ? "true" : "false"},
          {"log.cleanup.policy", "delete"},
          {"log.retention.ms", std::to_string(c.retention_ms)},
          {"log.retention.bytes", std::to_string(c.retention_bytes)},
          {"log.segment.bytes", std::to_string(c.segment_bytes)},
          {"log.roll.ms", std::to_string(c.segment_ms)},
          {"message.max.bytes", std::to_string(c.message_max_bytes)},
          {"socket.request.max.bytes", std::to_string(c.max_request_bytes)},
      };
      for (const auto& [k, v] : settings)
        add(k, v, false, source_static_broker, true);
    } else {
      r.error_code = error_code::invalid_request;
      r.error_message = "resource type " + std::to_string(res.resource_type) + " has no configs";
    }
  }
  answer(rq, out);
}

void kafka_frontend::create_topics(const request& rq, kafka::create_topics_request m) {
  broker& b = broker_;
  auto state = std::make_shared<gathered_response<kafka::create_topics_response>>();
  std::set<std::string> seen;
  auto finish_one = [this, rq, state] {
    if (--state->outstanding == 0) answer(rq, state->response);
  };
  for (const auto& t : m.topics) {
    const size_t index = state->response.topics.size();
    auto& x = state->response.topics.emplace_back();
    x.name = t.name;
    auto fail = [&](int16_t code, std::string why) {
      x.error_code = code;
      x.error_message = std::move(why);
    };
    const int32_t partitions =
        t.num_partitions == -1 ? b.config_.default_partitions : t.num_partitions;
    const metadata_state& md = b.controller_->state();
    const int16_t rf = t.replication_factor == -1
                           ? md.default_replication_factor(b.config_.default_replication_factor)
                           : t.replication_factor;
    x.num_partitions = partitions;
    x.replication_factor = rf;
    if (!seen.insert(t.name).second) {
      fail(error_code::invalid_request, "topic " + t.name + " appears twice in the request");
      continue;
    }
    if (!valid_topic_name(t.name)) {
      fail(error_code::invalid_topic_exception, "invalid topic name '" + t.name + "'");
      continue;
    }
    if (!t.assignments.empty()) {
      fail(error_code::invalid_replica_assignment,
           "manual replica assignments are not supported; Keel places replicas itself");
      continue;
    }
    if (partitions < 1) {
      fail(error_code::invalid_partitions, "partitions must be at least 1");
      continue;
    }
    // The alive brokers, as the controller places replicas (so validate_only answers as a
    // creation would): a default factor is refused like an explicit one.
    if (auto e = md.check_replication_factor(rf, b.live_brokers()); !e.empty()) {
      fail(error_code::invalid_replication_factor, e);
      continue;
    }
    std::map<std::string, std::string> configs;
    std::string bad;
    for (const auto& cfg : t.configs) {
      if (auto e = check_topic_config(cfg.name, cfg.value); !e.empty()) {
        bad = e;
        break;
      }
      configs[cfg.name] = *cfg.value;
    }
    if (!bad.empty()) {
      fail(error_code::invalid_config, bad);
      continue;
    }
    // This broker's metadata may lag the controller's (a topic just created or deleted through
    // another broker): only a validation answers from it; a creation is the controller's call.
    if (m.validate_only) {
      if (md.topic(t.name))
        fail(error_code::topic_already_exists, "topic " + t.name + " already exists");
      continue;
    }
    ++state->outstanding;
    b.request_create_topic(
        t.name, partitions, rf, configs,
        [this, state, index, finish_one, name = t.name](bool ok, const std::string& error) {
          auto& r = state->response.topics[index];
          if (!ok) {
            r.error_code = controller_error(error);
            r.error_message = error;
          } else if (const topic_info* info = broker_.controller_->state().topic(name)) {
            r.topic_id = info->id;
          }
          finish_one();
        });
  }
  finish_one();
}

void kafka_frontend::delete_topics(const request& rq, kafka::delete_topics_request m) {
  broker& b = broker_;
  auto state = std::make_shared<gathered_response<kafka::delete_topics_response>>();
  auto finish_one = [this, rq, state] {
    if (--state->outstanding == 0) answer(rq, state->response);
  };
  std::vector<std::pair<std::optional<std::string>, kafka::uuid>> wanted;
  for (const auto& name : m.topic_names)
    wanted.emplace_back(name, kafka::uuid{});
  for (const auto& t : m.topics)
    wanted.emplace_back(t.name, t.topic_id);
  for (const auto& [name, id] : wanted) {
    const size_t index = state->response.responses.size();
    auto& x = state->response.responses.emplace_back();
    x.name = name;
    x.topic_id = id;
    const topic_info* t = nullptr;
    if (name) {
      t = b.controller_->state().topic(*name);
    } else {
      for (const auto& [n, info] : b.controller_->state().topics())
        if (info.id == id) t = &info;
    }
    // A name goes to the controller even when this broker's metadata (which may lag) does not
    // know it: the controller answers "no topic" if it does not either. An id must be known here.
    if (!t && !name) {
      x.error_code = error_code::unknown_topic_or_partition;
      x.error_message = "no such topic";
      continue;
    }
    if (t) {
      x.name = t->name;
      x.topic_id = t->id;
    }
    ++state->outstanding;
    b.request_delete_topic(*x.name, [state, index, finish_one](bool ok, const std::string& error) {
      auto& r = state->response.responses[index];
      if (!ok) {
        r.error_code = controller_error(error);
        r.error_message = error;
      }
      finish_one();
    });
  }
  finish_one();
}

void kafka_frontend::create_partitions(const request& rq, kafka::create_partitions_request m) {
  broker& b = broker_;
  auto state = std::make_shared<gathered_response<kafka::create_partitions_response>>();
  auto finish_one = [this, rq, state] {
    if (--state->outstanding == 0) answer(rq, state->response);
  };
  for (const auto& t : m.topics) {
    const size_t index = state->response.results.size();
    auto& x = state->response.results.emplace_back();
    x.name = t.name;
    if (t.assignments) {
      x.error_code = error_code::invalid_replica_assignment;
      x.error_message = "manual replica assignments are not supported";
      continue;
    }
    // As in create_topics: only a validation answers from this broker's metadata.
    if (m.validate_only) {
      const topic_info* info = b.controller_->state().topic(t.name);
      if (!info) {
        x.error_code = error_code::unknown_topic_or_partition;
        x.error_message = "no topic " + t.name;
      } else if (t.count <= static_cast<int32_t>(info->partitions.size())) {
        x.error_code = error_code::invalid_partitions;
        x.error_message = "topic " + t.name + " already has " +
                          std::to_string(info->partitions.size()) + " partitions";
      }
      continue;
    }
    ++state->outstanding;
    b.request_create_partitions(t.name, t.count,
                                [state, index, finish_one](bool ok, const std::string& error) {
                                  auto& r = state->response.results[index];
                                  if (!ok) {
                                    r.error_code = controller_error(error);
                                    r.error_message = error;
                                  }
                                  finish_one();
                                });
  }
  finish_one();
}

}  // namespace keel::server
