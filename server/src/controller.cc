#include "keel/server/controller.h"

#include <cstdio>
#include <random>

namespace keel::server {

engine::result<std::unique_ptr<controller>> controller::open(
    engine::log& log, engine::io_ring& ring, raft::core_options core, raft::membership voters,
    partition_host::message_sink sink, raft::random_source& random) {
  std::unique_ptr<controller> c(new controller());
  c->log_ = &log;
  partition_host_options o;
  o.core = core;
  o.initial_config = std::move(voters);
  auto h = partition_host::open(log, ring, std::move(o), std::move(sink), random);
  if (!h) return std::move(h).err();
  c->host_ = std::move(h).value();
  controller* self = c.get();
  c->host_->on_commit([self](raft::offset hw) { self->apply_committed(hw); });
  // What was committed before a restart applies again, from the log start.
  c->apply_committed(c->host_->high_watermark());
  return c;
}

int32_t controller::leader() const {
  const raft::node_id l = host_->core().leader();
  return l.is_none() ? -1 : static_cast<int32_t>(l.value());
}

void controller::apply_committed(raft::offset high_watermark) {
  bool changed = false;
  while (applied_ < high_watermark) {
    const engine::offset from = to_engine(applied_.next());
    if (from < log_->log_start()) {
      applied_ = to_raft(log_->log_start()).prev();
      continue;
    }
    auto r = log_->read(from, 4 << 20, to_engine(high_watermark));
    if (!r || r->batches.empty()) {
      std::fprintf(stderr, "keel: controller: cannot read committed metadata at %lld: %s\n",
                   static_cast<long long>(from.value()),
                   r ? "nothing written yet" : r.err().describe().c_str());
      return;  // retried at the next commit
    }
    for (const engine::batch_view& b : r->batches) {
      apply_result result;
      if (b.header.type == static_cast<uint8_t>(raft::batch_type::data)) {
        result = state_.apply(b.payload());
        changed = changed || result.ok;
        if (!result.ok)
          std::fprintf(stderr, "keel: controller: command at offset %lld rejected: %s\n",
                       static_cast<long long>(b.header.base_offset.value()), result.error.c_str());
      }
      applied_ = to_raft(b.header.last_offset);
      // Only the command this controller proposed (same offset and term) answers its requester.
      auto range = waiting_.equal_range(to_raft(b.header.base_offset));
      std::vector<reply> replies;
      for (auto it = range.first; it != range.second; ++it)
        if (it->second.first.value() == b.header.term.value())
          replies.push_back(std::move(it->second.second));
      waiting_.erase(range.first, range.second);
      for (auto& rep : replies)
        rep(result);
    }
  }
  if (changed && on_change_) on_change_();
}

void controller::submit(std::vector<std::byte> command, reply done) {
  auto payload = raft::shared_bytes(std::move(command));
  auto b = host_->propose(raft::batch_type::data, 1, payload, [this](const proposal_outcome& o) {
    if (o.committed) return;  // answered when it applies
    // Not committed in our term: it may never apply, or apply later under another leader; the
    // requester hears the failure now and no one waits for it any more.
    auto range = waiting_.equal_range(o.base);
    std::vector<reply> failed;
    for (auto it = range.first; it != range.second; ++it)
      failed.push_back(std::move(it->second.second));
    waiting_.erase(range.first, range.second);
    for (auto& f : failed)
      f(apply_result{false, "not committed: " + o.error, {}});
  });
  if (!b) {
    if (done) done(apply_result{false, "not the controller: " + b.err().describe(), {}});
    return;
  }
  if (done) waiting_.emplace(b->base, std::make_pair(b->term, std::move(done)));
}

void controller::create_topic(const std::string& name, int32_t partitions,
                              int16_t replication_factor,
                              const std::map<std::string, std::string>& configs,
                              const std::vector<int32_t>& live, reply done) {
  if (!valid_topic_name(name))
    return done(apply_result{false, "invalid topic name '" + name + "'", {}});
  if (state_.topic(name)) return done(apply_result{false, "topic " + name + " already exists", {}});
  std::string error;
  auto plan = state_.plan_partitions(partitions, replication_factor, live, error);
  if (!plan) return done(apply_result{false, error, {}});
  topic_info t;
  t.name = name;
  std::random_device rd;
  for (auto& b : t.id)
    b = static_cast<uint8_t>(rd());
  t.replication_factor = replication_factor;
  t.configs = configs;
  t.partitions = std::move(*plan);
  submit(encode_create_topic(t), std::move(done));
}

}  // namespace keel::server
