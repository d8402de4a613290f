#include "keel/server/partition_host.h"

#include <cstdio>

namespace keel::server {

engine::result<std::unique_ptr<partition_host>> partition_host::open(engine::log& log,
                                                                     engine::io_ring& ring,
                                                                     partition_host_options options,
                                                                     message_sink sink,
                                                                     raft::random_source& random) {
  std::unique_ptr<partition_host> h(
      new partition_host(log, ring, std::move(options), std::move(sink)));
  raft_persistent_state initial;
  initial.log_start = to_raft(log.log_start());
  initial.start_config = h->options_.initial_config;
  initial.group = h->options_.core.group.value();
  auto store = raft_state_store::open(log.dir(), ring, initial);
  if (!store) return std::move(store).err();
  h->state_ = std::move(store).value();
  const raft_persistent_state& s = h->state_->state();
  if (s.log_start != to_raft(log.log_start()) && s.log_start > to_raft(log.log_start())) {
    // The state names a later start than the log (a crash between the two writes of a reset):
    // the state is authoritative, so the log catches up.
    if (auto t = log.truncate_prefix(to_engine(s.log_start)); !t) return t.err();
  }
  h->reader_ = std::make_unique<raft_log>(log, *h->state_);
  raft::boot_state boot;
  boot.hard = s.hard;
  // A commit index beyond what the log holds (the log lost an unsynced tail) is clamped.
  if (boot.hard.commit > h->reader_->last_offset()) boot.hard.commit = h->reader_->last_offset();
  boot.config = s.start_config;
  boot.config_offset = s.start_config_offset;
  h->core_ = std::make_unique<raft::core>(h->options_.core, *h->reader_, random, boot,
                                          h->options_.snapshots);
  h->high_watermark_ = h->core_->commit();
  h->proposals_term_ = h->core_->term();
  return h;
}

partition_host::partition_host(engine::log& log, engine::io_ring& ring,
                               partition_host_options options, message_sink sink)
    : log_(log),
      ring_(ring),
      options_(std::move(options)),
      sink_(std::move(sink)),
      leader_cached_tail_bytes_(log.config().cached_tail_bytes) {}

partition_host::~partition_host() {
  // The owner is tearing this host down (its pointer to it may already be null): commits that
  // the writes below complete are told to no one.
  commit_listeners_.clear();
  // Writes in flight call back into this host: let them finish while it still exists. Anything
  // not even issued yet (the log's own staged chains) finds the host gone through alive_.
  while (pending_ > 0 && ring_.in_flight() > 0)
    ring_.wait();
  *alive_ = false;
  fail_proposals("the partition is closing");
}

void partition_host::tick() {
  if (!failure_.empty()) return;
  core_->tick();
  // A commit index alone is written about once an election timeout (see apply_to_log).
  if (++ticks_since_state_write_ >= options_.core.election_ticks) {
    ticks_since_state_write_ = 0;
    state_->write_staged();
  }
  process_ready();
}

void partition_host::step(const raft::message& m) {
  if (!failure_.empty()) return;
  (void)core_->step(m);  // a message for another term, group or recipient is dropped by design
  process_ready();
}

raft::result<raft::batch> partition_host::propose(raft::batch_type type, int64_t offset_count,
                                                  raft::shared_bytes payload,
                                                  proposal_callback done, proposal_wait wait) {
  if (!failure_.empty()) return raft::make_error(raft::errc::unavailable, failure_);
  auto b = core_->propose(type, offset_count, std::move(payload));
  if (!b) return b;
  if (done)
    (wait == proposal_wait::commit ? proposals_ : local_writes_)
        .emplace(b->last, std::make_pair(b->base, std::move(done)));
  process_ready();
  return b;
}

raft::status partition_host::transfer_leadership(raft::node_id target) {
  auto s = core_->transfer_leadership(target);
  process_ready();
  return s;
}

void partition_host::compact(raft::offset start,
                             std::function<void(const std::string& error)> done) {
  auto record = core_->log_start_for(start);
  if (!record) return done(record.err().describe());
  raft_persistent_state next = state_->state();
  if (start <= next.log_start) return done({});
  next.log_start = record->start;
  next.start_prev_term = record->start_prev_term;
  next.start_config = record->config;
  next.start_config_offset = record->config_offset;
  std::erase_if(next.config_offsets, [&](raft::offset o) { return o < start; });
  // The record first: a crash before the segments go leaves a log that open() cuts to match.
  state_->save(std::move(next), [this, start, done, alive = alive_](const engine::status& st) {
    if (!*alive) return;
    if (!st) return done("cannot persist the log start: " + st.err().describe());
    if (auto t = log_.truncate_prefix(to_engine(start)); !t) return done(t.err().describe());
    done({});
  });
}

void partition_host::fail(const std::string& why) {
  if (failure_.empty()) {
    failure_ = why;
    std::fprintf(stderr, "keel: raft group %llu stopped: %s\n",
                 static_cast<unsigned long long>(options_.core.group.value()), why.c_str());
  }
  fail_proposals(why);
}

void partition_host::fail_proposals(const std::string& why) {
  auto waiting = std::move(proposals_);
  proposals_.clear();
  waiting.merge(local_writes_);
  local_writes_.clear();
  for (auto& [last, entry] : waiting)
    entry.second(proposal_outcome{false, entry.first, last, why});
}

void partition_host::process_ready() {
  if (!failure_.empty()) return;
  if (ready_in_flight_) {
    // Heartbeats and their replies must not wait for the fsync in flight (see take_messages).
    for (raft::message& m : core_->take_messages())
      sink_(std::move(m));
    return;
  }
  if (!core_->has_ready()) return;
  // A proposal of an earlier term can still commit (a new leader keeps it) or be truncated; the
  // client cannot tell which, so it hears "not leader" and retries, as Kafka clients expect.
  if (core_->term() != proposals_term_ || !is_leader()) {
    proposals_term_ = core_->term();
    if (!is_leader() && !(proposals_.empty() && local_writes_.empty()))
      fail_proposals("leadership moved");
  }
  if (options_.follower_cached_tail_bytes > 0 && cache_as_follower_ == is_leader()) {
    cache_as_follower_ = !is_leader();
    log_.set_cached_tail_bytes(cache_as_follower_ ? options_.follower_cached_tail_bytes
                                                  : leader_cached_tail_bytes_);
  }
  ready_in_flight_ = true;
  parked_ = core_->take_ready();
  reset_step_ = reset_step::none;
  for (raft::message& m : parked_->messages)
    sink_(std::move(m));
  parked_->messages.clear();
  pending_ = 1;  // held until every write of this Ready is queued
  if (parked_->hard_state_changes_term_or_vote && parked_->hard_state_to_persist) {
    // §5.2: the term and vote are on disk before anything that depends on them.
    raft_persistent_state next = state_->state();
    next.hard = *parked_->hard_state_to_persist;
    ++pending_;
    state_->save(std::move(next), [this, alive = alive_](const engine::status& st) {
      if (!*alive) return;
      if (!st) return complete_one("cannot persist the raft state: " + st.err().describe());
      apply_to_log();
      complete_one({});
    });
  } else {
    apply_to_log();
  }
  complete_one({});
}

void partition_host::complete_one(const std::string& error) {
  if (!error.empty()) fail(error);
  KEEL_ASSERT(pending_ > 0, "a completion for a Ready with nothing pending");
  if (--pending_ == 0) finish();
}

void partition_host::apply_to_log() {
  raft::ready& r = *parked_;
  // A log-start reset goes in steps, each durable before the next: the state machine keeps the
  // snapshot, the log is emptied, the raft state records the new start (the term before it, the
  // configuration in effect), and the log restarts there. A crash before the last step leaves a
  // record ahead of an empty log, which open() completes.
  if (r.reset && reset_step_ == reset_step::none) {
    std::fprintf(stderr, "keel: raft group %llu: log reset to the leader's log start %lld\n",
                 static_cast<unsigned long long>(options_.core.group.value()),
                 static_cast<long long>(r.reset->start.value()));
    reset_step_ = reset_step::snapshot_kept;
    if (!r.reset->snapshot.empty() && options_.on_snapshot) {
      reset_step_ = reset_step::none;
      ++pending_;
      options_.on_snapshot(r.reset->snapshot, [this, alive = alive_](const std::string& error) {
        if (!*alive) return;
        if (!error.empty()) return complete_one("cannot keep the snapshot: " + error);
        if (failure_.empty()) {
          reset_step_ = reset_step::snapshot_kept;
          apply_to_log();
        }
        complete_one({});
      });
      return;
    }
  }
  if (r.reset && reset_step_ == reset_step::snapshot_kept) {
    const raft::log_reset& reset = *r.reset;
    // §7 "discard the entire log" first (durably, inline: a rare path): a record saved over a
    // log that still held its old entries would, after a crash, leave entries that do not
    // follow the recorded start. Emptied, the log either keeps the old record (the leader
    // resets it again) or the new one, which open() completes.
    if (auto st = log_.truncate_suffix(log_.log_start()); !st) return fail(st.err().describe());
    raft_persistent_state next = state_->state();
    next.log_start = reset.start;
    next.start_prev_term = reset.start_prev_term;
    next.start_config = reset.config;
    next.start_config_offset = reset.config_offset;
    next.config_offsets.clear();
    ++pending_;
    state_->save(std::move(next), [this, alive = alive_](const engine::status& st) {
      if (!*alive) return;
      if (!st) return complete_one("cannot persist the raft state: " + st.err().describe());
      if (failure_.empty()) {
        reset_step_ = reset_step::start_recorded;
        apply_to_log();
      }
      complete_one({});
    });
    return;
  }
  raft_persistent_state next = state_->state();
  bool state_changed = false;
  if (r.reset) {
    const raft::log_reset& reset = *r.reset;
    // The log, emptied before the record was saved, restarts at reset.start.
    if (to_engine(reset.start) > log_.log_start()) {
      if (auto st = log_.truncate_prefix(to_engine(reset.start)); !st)
        return fail(st.err().describe());
    }
  }
  if (r.truncate_from) {
    if (auto st = log_.truncate_suffix(to_engine(*r.truncate_from)); !st)
      return fail("truncate_suffix: " + st.err().describe());
    std::erase_if(next.config_offsets, [&](raft::offset o) { return o >= *r.truncate_from; });
    state_changed = true;
  }
  for (const raft::batch& b : r.batches) {
    engine::batch_spec spec;
    spec.type = static_cast<uint8_t>(b.type);
    spec.term = engine::term_id(b.term.value());
    spec.offset_count = static_cast<uint32_t>(b.offset_count());
    spec.payload = std::span(b.payload.data(), b.payload.size());
    spec.base = to_engine(b.base);
    if (options_.max_timestamp_of) spec.max_timestamp = options_.max_timestamp_of(b);
    ++pending_;
    auto appended =
        log_.append(spec, [this, alive = alive_](const engine::result<engine::append_ack>& ack) {
          if (!*alive) return;
          complete_one(ack ? std::string() : "append: " + ack.err().describe());
        });
    if (!appended) {
      --pending_;
      return fail("append: " + appended.err().describe());
    }
    if (b.type == raft::batch_type::config) {
      next.config_offsets.push_back(b.base);
      state_changed = true;
    }
  }
  if (r.hard_state_to_persist && !(next.hard == *r.hard_state_to_persist)) {
    const bool commit_only = next.hard.term == r.hard_state_to_persist->term &&
                             next.hard.vote == r.hard_state_to_persist->vote;
    next.hard = *r.hard_state_to_persist;
    if (commit_only && !state_changed) {
      // Staged, not saved: a lost commit index is re-learnt from the leader (Raft keeps it in
      // volatile state, Figure 2), and saving each one would cost an fdatasync per Ready.
      state_->stage(std::move(next));
      return;
    }
    state_changed = true;
  }
  if (state_changed) {
    ++pending_;
    state_->save(std::move(next), [this, alive = alive_](const engine::status& st) {
      if (!*alive) return;
      complete_one(st ? std::string() : "cannot persist the raft state: " + st.err().describe());
    });
  }
}

void partition_host::finish() {
  raft::ready r = std::move(*parked_);
  parked_.reset();
  if (!failure_.empty()) {
    ready_in_flight_ = false;
    return;
  }
  for (raft::message& m : r.messages_after_persist)
    sink_(std::move(m));
  if (!r.batches.empty()) {
    // The leader's own batches of this Ready are in its log now (acks=1 answers).
    const raft::offset written = r.batches.back().last;
    while (!local_writes_.empty() && local_writes_.begin()->first <= written) {
      auto node = local_writes_.extract(local_writes_.begin());
      node.mapped().second(proposal_outcome{true, node.mapped().first, node.key(), {}});
    }
  }
  if (r.committed_to && *r.committed_to > high_watermark_) {
    high_watermark_ = *r.committed_to;
    while (!proposals_.empty() && proposals_.begin()->first <= high_watermark_) {
      auto node = proposals_.extract(proposals_.begin());
      node.mapped().second(proposal_outcome{true, node.mapped().first, node.key(), {}});
    }
    for (auto& listener : commit_listeners_)
      listener(high_watermark_);
  }
  ready_in_flight_ = false;
  core_->advance();
  process_ready();
}

}  // namespace keel::server
