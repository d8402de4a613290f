// keel group list | describe | delete | reset-offsets: consumer-group tools on
// keel::net::kafka::client, shaped after Kafka's kafka-consumer-groups.sh.
#include <algorithm>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>
#include <cstdio>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "keel/net/kafka/client.h"
#include "keel/net/kafka/errors.h"
#include "keel_kafka.h"

// GCC 12 reports asio's coroutine-frame operator new/delete pair (aligned_alloc, then asio's
// matching deallocate) as mismatched once a large coroutine lambda is inlined into
// std::function's invoker: a false positive.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif

namespace keel::cli {

namespace asio = boost::asio;
namespace kafka = net::kafka;
using asio::awaitable;

namespace {

std::string json_string(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", c);
          out += buf;
        } else {
          out += c;
        }
    }
  }
  return out + "\"";
}

std::string group_arg(const flags& f, const char* verb) {
  if (f.positional.size() < 3) die(std::string("group ") + verb + ": expected a group id", 2);
  return f.positional[2];
}

// A "topic[partitions]" summary of an assignment: orders[0,2] payments[1].
std::string assignment_text(const kafka::consumer_assignment& a) {
  std::string out;
  for (const auto& [topic, parts] : a.partitions) {
    std::vector<int32_t> sorted = parts;
    std::sort(sorted.begin(), sorted.end());
    out += (out.empty() ? "" : " ") + topic + "[";
    for (size_t i = 0; i < sorted.size(); ++i)
      out += (i ? "," : "") + std::to_string(sorted[i]);
    out += "]";
  }
  return out.empty() ? "-" : out;
}

// Describes one group (dies on a failure); members' assignments decoded when the protocol type
// is "consumer".
struct described {
  kafka::group_description d;
  std::vector<std::optional<kafka::consumer_assignment>> assignments;  // by member
};

awaitable<described> describe_one(kafka::client& c, const std::string& group) {
  // (A named vector: GCC 12 rejects a braced list inside a co_await expression.)
  const std::vector<std::string> groups(1, group);
  auto r = co_await c.describe_groups(groups);
  if (r.err) die("describe group " + group + ": " + r.err.message);
  if (r.groups.empty()) die("describe group " + group + ": empty answer");
  described out;
  out.d = std::move(r.groups.front());
  if (out.d.err) die("describe group " + group + ": " + out.d.err.message);
  for (const auto& m : out.d.members) {
    if (out.d.protocol_type == "consumer")
      out.assignments.push_back(kafka::decode_consumer_assignment(m.assignment));
    else
      out.assignments.push_back(std::nullopt);
  }
  co_return out;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// keel group list

int group_list(const flags& f) {
  const bool json = f.has("json");
  return run([&](asio::io_context& io) -> awaitable<int> {
    kafka::client c(io, config_from(f));
    if (auto e = co_await c.connect()) die(e.message);
    auto r = co_await c.list_groups();
    if (json) {
      std::printf("{\"groups\": [");
      for (size_t i = 0; i < r.groups.size(); ++i) {
        const auto& g = r.groups[i];
        std::printf("%s{\"group\": %s, \"state\": %s, \"protocol_type\": %s, \"coordinator\": %d}",
                    i ? ", " : "", json_string(g.group_id).c_str(), json_string(g.state).c_str(),
                    json_string(g.protocol_type).c_str(), g.coordinator);
      }
      std::printf("]%s}\n", r.err ? (", \"error\": " + json_string(r.err.message)).c_str() : "");
    } else {
      std::printf("%-32s %-20s %-14s %s\n", "GROUP", "STATE", "PROTOCOL-TYPE", "COORDINATOR");
      for (const auto& g : r.groups)
        std::printf("%-32s %-20s %-14s %d\n", g.group_id.c_str(),
                    g.state.empty() ? "-" : g.state.c_str(),
                    g.protocol_type.empty() ? "-" : g.protocol_type.c_str(), g.coordinator);
    }
    if (r.err) {
      std::fprintf(stderr, "keel: group list is incomplete: %s\n", r.err.message.c_str());
      co_return 1;
    }
    co_return 0;
  });
}

// ---------------------------------------------------------------------------------------------
// keel group describe GROUP: state, members and their assignments, offsets and lag.

int group_describe(const flags& f) {
  const std::string group = group_arg(f, "describe");
  const bool json = f.has("json");
  return run([&](asio::io_context& io) -> awaitable<int> {
    kafka::client c(io, config_from(f));
    if (auto e = co_await c.connect()) die(e.message);
    described gd = co_await describe_one(c, group);
    const auto& d = gd.d;
    auto committed = co_await c.offset_fetch(group);
    if (committed.err && committed.offsets.empty())
      die("fetch offsets of group " + group + ": " + committed.err.message);

    // Rows: every committed partition and every assigned one.
    struct row {
      int64_t committed = -1;
      int64_t high_watermark = -1;
      std::string member;
    };
    std::map<kafka::topic_partition, row> rows;
    for (const auto& o : committed.offsets)
      if (o.error_code == 0) rows[{o.topic, o.partition}].committed = o.offset;
    for (size_t i = 0; i < d.members.size(); ++i) {
      if (!gd.assignments[i]) continue;
      for (const auto& [topic, parts] : gd.assignments[i]->partitions)
        for (int32_t p : parts)
          rows[{topic, p}].member = d.members[i].member_id;
    }
    for (auto& [tp, r] : rows) {
      auto hw = co_await c.list_offsets(tp.topic, tp.partition, kafka::offset_spec::latest);
      if (!hw.err) r.high_watermark = hw.offset;
    }
    auto lag_of = [](const row& r) -> int64_t {
      if (r.committed < 0 || r.high_watermark < 0) return -1;
      return std::max<int64_t>(0, r.high_watermark - r.committed);
    };

    if (json) {
      std::printf(
          "{\"group\": %s, \"coordinator\": %d, \"state\": %s, \"protocol_type\": %s, "
          "\"protocol\": %s, \"members\": [",
          json_string(group).c_str(), d.coordinator, json_string(d.state).c_str(),
          json_string(d.protocol_type).c_str(), json_string(d.protocol).c_str());
      for (size_t i = 0; i < d.members.size(); ++i) {
        const auto& m = d.members[i];
        std::printf("%s{\"member_id\": %s, \"client_id\": %s, \"host\": %s, \"assignment\": [",
                    i ? ", " : "", json_string(m.member_id).c_str(),
                    json_string(m.client_id).c_str(), json_string(m.client_host).c_str());
        if (gd.assignments[i]) {
          bool first = true;
          for (const auto& [topic, parts] : gd.assignments[i]->partitions) {
            std::printf("%s{\"topic\": %s, \"partitions\": [", first ? "" : ", ",
                        json_string(topic).c_str());
            first = false;
            std::vector<int32_t> sorted = parts;
            std::sort(sorted.begin(), sorted.end());
            for (size_t k = 0; k < sorted.size(); ++k)
              std::printf("%s%d", k ? ", " : "", sorted[k]);
            std::printf("]}");
          }
        }
        std::printf("]}");
      }
      std::printf("], \"offsets\": [");
      bool first = true;
      for (const auto& [tp, r] : rows) {
        std::printf(
            "%s{\"topic\": %s, \"partition\": %d, \"committed\": %lld, \"high_watermark\": %lld, "
            "\"lag\": %lld, \"member\": %s}",
            first ? "" : ", ", json_string(tp.topic).c_str(), tp.partition,
            static_cast<long long>(r.committed), static_cast<long long>(r.high_watermark),
            static_cast<long long>(lag_of(r)), json_string(r.member).c_str());
        first = false;
      }
      std::printf("]}\n");
      co_return 0;
    }

    std::printf("group %s  coordinator %d  state %s  protocol %s%s%s  members %zu\n", group.c_str(),
                d.coordinator, d.state.c_str(),
                d.protocol_type.empty() ? "-" : d.protocol_type.c_str(),
                d.protocol.empty() ? "" : "/", d.protocol.c_str(), d.members.size());
    if (!d.members.empty()) {
      std::printf("\n%-44s %-20s %-16s %s\n", "MEMBER", "CLIENT-ID", "HOST", "ASSIGNMENT");
      for (size_t i = 0; i < d.members.size(); ++i) {
        const auto& m = d.members[i];
        std::string assigned = "-";
        if (gd.assignments[i])
          assigned = assignment_text(*gd.assignments[i]);
        else if (d.protocol_type == "consumer")
          assigned = "(undecodable assignment, " + std::to_string(m.assignment.size()) + " bytes)";
        std::printf("%-44s %-20s %-16s %s\n", m.member_id.c_str(), m.client_id.c_str(),
                    m.client_host.c_str(), assigned.c_str());
      }
    }
    std::printf("\n%-24s %9s %12s %14s %10s  %s\n", "TOPIC", "PARTITION", "COMMITTED",
                "HIGH-WATERMARK", "LAG", "MEMBER");
    for (const auto& [tp, r] : rows) {
      const int64_t lag = lag_of(r);
      std::printf("%-24s %9d %12s %14s %10s  %s\n", tp.topic.c_str(), tp.partition,
                  r.committed < 0 ? "-" : std::to_string(r.committed).c_str(),
                  r.high_watermark < 0 ? "-" : std::to_string(r.high_watermark).c_str(),
                  lag < 0 ? "-" : std::to_string(lag).c_str(),
                  r.member.empty() ? "-" : r.member.c_str());
    }
    if (rows.empty()) std::printf("(no committed offsets, no assigned partitions)\n");
    co_return 0;
  });
}

// ---------------------------------------------------------------------------------------------
// keel group delete GROUP

int group_delete(const flags& f) {
  const std::string group = group_arg(f, "delete");
  return run([&](asio::io_context& io) -> awaitable<int> {
    kafka::client c(io, config_from(f));
    if (auto e = co_await c.connect()) die(e.message);
    const std::vector<std::string> groups(1, group);
    auto r = co_await c.delete_groups(groups);
    if (r.err.code == kafka::error_code::non_empty_group)
      die("group " + group + " has active members; stop its consumers first");
    if (r.err.code == kafka::error_code::group_id_not_found)
      die("group " + group + " does not exist");
    if (r.err) die("delete group " + group + ": " + r.err.message);
    std::printf("deleted group %s\n", group.c_str());
    co_return 0;
  });
}

// ---------------------------------------------------------------------------------------------
// keel group reset-offsets GROUP --topic T (--to-earliest | --to-latest | --to-offset N |
// --to-timestamp MS) [--execute]

int group_reset_offsets(const flags& f) {
  const std::string group = group_arg(f, "reset-offsets");
  const std::string topic = f.get("topic", "");
  if (topic.empty()) die("group reset-offsets: --topic is required", 2);
  enum class to { earliest, latest, offset, timestamp };
  int chosen = 0;
  to target = to::earliest;
  int64_t value = 0;
  if (f.has("to-earliest")) ++chosen, target = to::earliest;
  if (f.has("to-latest")) ++chosen, target = to::latest;
  if (f.has("to-offset")) ++chosen, target = to::offset, value = f.get_int("to-offset", 0);
  if (f.has("to-timestamp")) ++chosen, target = to::timestamp, value = f.get_int("to-timestamp", 0);
  if (chosen != 1)
    die("group reset-offsets: give exactly one of --to-earliest, --to-latest, --to-offset N, "
        "--to-timestamp MS",
        2);
  const bool execute = f.has("execute");
  return run([&](asio::io_context& io) -> awaitable<int> {
    kafka::client c(io, config_from(f));
    if (auto e = co_await c.connect()) die(e.message);
    described gd = co_await describe_one(c, group);
    if (!gd.d.members.empty())
      die("group " + group + " has " + std::to_string(gd.d.members.size()) +
          " active member(s) (state " + gd.d.state +
          "); offsets can only be reset while the group is inactive: stop its consumers first");
    const std::vector<std::string> topics(1, topic);
    auto m = co_await c.metadata(topics);
    if (m.err) die("metadata: " + m.err.message);
    const int32_t partitions = c.partition_count(topic);
    const kafka::topic_info* info = nullptr;
    for (const auto& t : m.cluster.topics)
      if (t.name == topic) info = &t;
    if (!info || info->error_code != 0 || partitions <= 0) die("unknown topic " + topic);

    std::vector<kafka::topic_partition> wanted;
    for (int32_t p = 0; p < partitions; ++p)
      wanted.push_back({topic, p});
    auto current = co_await c.offset_fetch(group, wanted);
    if (current.err && current.offsets.empty())
      die("fetch offsets of group " + group + ": " + current.err.message);
    std::map<int32_t, int64_t> now_at;
    for (const auto& o : current.offsets)
      if (o.error_code == 0) now_at[o.partition] = o.offset;

    std::vector<kafka::partition_offset> plan;
    for (int32_t p = 0; p < partitions; ++p) {
      auto earliest = co_await c.list_offsets(topic, p, kafka::offset_spec::earliest);
      auto latest = co_await c.list_offsets(topic, p, kafka::offset_spec::latest);
      if (earliest.err || latest.err)
        die("list offsets of " + topic + "/" + std::to_string(p) + ": " +
            (earliest.err ? earliest.err : latest.err).message);
      int64_t next = 0;
      switch (target) {
        case to::earliest:
          next = earliest.offset;
          break;
        case to::latest:
          next = latest.offset;
          break;
        case to::offset:
          // Kafka's tool clamps into the partition's range.
          next = std::clamp(value, earliest.offset, latest.offset);
          break;
        case to::timestamp: {
          auto at = co_await c.offset_for_time(topic, p, value);
          if (at.err)
            die("offset for time in " + topic + "/" + std::to_string(p) + ": " + at.err.message);
          next = at.offset < 0 ? latest.offset : at.offset;
          break;
        }
      }
      kafka::partition_offset o;
      o.topic = topic;
      o.partition = p;
      o.offset = next;
      plan.push_back(std::move(o));
    }

    std::printf("%-24s %9s %16s %14s\n", "TOPIC", "PARTITION", "CURRENT-OFFSET", "NEW-OFFSET");
    for (const auto& o : plan) {
      auto it = now_at.find(o.partition);
      const bool has = it != now_at.end() && it->second >= 0;
      std::printf("%-24s %9d %16s %14lld\n", o.topic.c_str(), o.partition,
                  has ? std::to_string(it->second).c_str() : "-", static_cast<long long>(o.offset));
    }
    if (!execute) {
      std::printf("dry run: nothing committed; add --execute to commit these offsets\n");
      co_return 0;
    }
    auto r = co_await c.offset_commit(group, plan);
    if (r.err.code == kafka::error_code::unknown_member_id)
      die("group " + group + " gained members meanwhile; stop its consumers first");
    if (r.err) die("commit offsets for group " + group + ": " + r.err.message);
    std::printf("committed new offsets of %zu partition(s) of %s for group %s\n", plan.size(),
                topic.c_str(), group.c_str());
    co_return 0;
  });
}

}  // namespace keel::cli
