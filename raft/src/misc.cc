// Small out-of-line pieces of the vocabulary types: names, descriptions, membership helpers.
#include <algorithm>
#include <string>

#include "keel/raft/config.h"
#include "keel/raft/core.h"
#include "keel/raft/log.h"
#include "keel/raft/message.h"
#include "keel/raft/types.h"

namespace keel::raft {

const char* to_string(errc code) {
  switch (code) {
    case errc::not_leader:
      return "not_leader";
    case errc::busy:
      return "busy";
    case errc::invalid_argument:
      return "invalid_argument";
    case errc::compacted:
      return "compacted";
    case errc::unavailable:
      return "unavailable";
    case errc::malformed:
      return "malformed";
    case errc::unsupported_version:
      return "unsupported_version";
  }
  return "?";
}

std::string error::describe() const {
  std::string s = std::string(to_string(code)) + ": " + message;
  if (!leader_hint.is_none()) s += " (leader " + std::to_string(leader_hint.value()) + ")";
  return s;
}

const char* to_string(batch_type type) {
  switch (type) {
    case batch_type::data:
      return "data";
    case batch_type::noop:
      return "noop";
    case batch_type::config:
      return "config";
  }
  return "?";
}

bool is_known(batch_type type) {
  return type == batch_type::data || type == batch_type::noop || type == batch_type::config;
}

std::vector<batch> log_reader::config_batches(offset from, offset to) const {
  std::vector<batch> out;
  while (from <= to) {
    auto r = read(from, to, 1 << 20);
    KEEL_RAFT_ASSERT(r.ok() && !r->empty(), "log_reader: the log must be readable in range");
    for (auto& b : *r) {
      if (b.type == batch_type::config && b.base >= from) out.push_back(b);
      from = b.last.next();
    }
  }
  return out;
}

std::vector<node_id> membership::members() const {
  std::vector<node_id> all = voters;
  all.insert(all.end(), learners.begin(), learners.end());
  return all;
}

bool membership::normalize() {
  for (auto* list : {&voters, &learners}) {
    std::sort(list->begin(), list->end());
    list->erase(std::unique(list->begin(), list->end()), list->end());
  }
  return valid();
}

bool membership::valid() const {
  for (const auto* list : {&voters, &learners}) {
    if (!std::is_sorted(list->begin(), list->end())) return false;
    if (std::adjacent_find(list->begin(), list->end()) != list->end()) return false;
    if (std::find(list->begin(), list->end(), node_id::none()) != list->end()) return false;
  }
  for (node_id n : learners)
    if (is_voter(n)) return false;
  return true;
}

std::string membership::describe() const {
  std::string s = "voters{";
  for (size_t i = 0; i < voters.size(); ++i)
    s += (i ? "," : "") + std::to_string(voters[i].value());
  s += "} learners{";
  for (size_t i = 0; i < learners.size(); ++i)
    s += (i ? "," : "") + std::to_string(learners[i].value());
  return s + "}";
}

size_t membership::voter_changes(const membership& a, const membership& b) {
  std::vector<node_id> diff;
  std::set_symmetric_difference(a.voters.begin(), a.voters.end(), b.voters.begin(), b.voters.end(),
                                std::back_inserter(diff));
  return diff.size();
}

const char* message_kind(const message_body& body) {
  static constexpr const char* names[] = {
      "vote_request",      "vote_response",      "append_request", "append_response",
      "heartbeat_request", "heartbeat_response", "reset_request",  "timeout_now"};
  return names[body.index()];
}

namespace {
std::string num(offset o) {
  return std::to_string(o.value());
}
std::string num(term_id t) {
  return std::to_string(t.value());
}
}  // namespace

std::string message::describe() const {
  std::string s = std::to_string(from.value()) + "->" + std::to_string(to.value()) + " t" +
                  num(term) + " " + message_kind(body);
  std::visit(
      [&](const auto& b) {
        using T = std::decay_t<decltype(b)>;
        if constexpr (std::is_same_v<T, vote_request>) {
          s += std::string(b.pre_vote ? " pre" : "") + (b.transfer ? " transfer" : "") +
               " last=" + num(b.last_offset) + "@t" + num(b.last_term);
        } else if constexpr (std::is_same_v<T, vote_response>) {
          s += std::string(b.pre_vote ? " pre" : "") + (b.granted ? " granted" : " rejected");
        } else if constexpr (std::is_same_v<T, append_request>) {
          s += " prev=" + num(b.prev_offset) + "@t" + num(b.prev_term) +
               " commit=" + num(b.leader_commit) + " batches=" + std::to_string(b.batches.size());
          if (!b.batches.empty())
            s += " [" + num(b.batches.front().base) + ".." + num(b.batches.back().last) + "]";
        } else if constexpr (std::is_same_v<T, append_response>) {
          if (b.reject)
            s += " reject prev=" + num(b.rejected_prev) + " hint=" + num(b.hint_offset) + "@t" +
                 num(b.hint_term);
          else
            s += " match=" + num(b.match);
        } else if constexpr (std::is_same_v<T, heartbeat_request>) {
          s += " commit=" + num(b.commit) + " read=" + std::to_string(b.read_seq);
        } else if constexpr (std::is_same_v<T, heartbeat_response>) {
          s += " read=" + std::to_string(b.read_seq);
        } else if constexpr (std::is_same_v<T, reset_request>) {
          s += " start=" + num(b.start) + " prev_term=" + num(b.start_prev_term) + " " +
               b.config.describe();
        }
      },
      body);
  return s;
}

const char* to_string(role r) {
  switch (r) {
    case role::follower:
      return "follower";
    case role::pre_candidate:
      return "pre_candidate";
    case role::candidate:
      return "candidate";
    case role::leader:
      return "leader";
  }
  return "?";
}

}  // namespace keel::raft
