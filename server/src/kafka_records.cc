// Kafka APIs on a partition's records: Produce, Fetch, ListOffsets, OffsetForLeaderEpoch.
// Shard 0 splits a request by partition, each partition's work runs on its own shard (where its
// log and Raft group live), and the results come back to shard 0, which answers.
#include <boost/asio/steady_timer.hpp>
#include <cstdio>
#include <deque>

#include "kafka_support.h"
#include "keel/net/kafka/record_batch.h"
#include "keel/server/broker.h"
#include "keel/server/raft_log.h"

namespace keel::server {

namespace kafka = net::kafka;
namespace error_code = net::kafka::error_code;
using steady = std::chrono::steady_clock;

kafka_frontend::partition_location kafka_frontend::locate(const std::string& topic,
                                                          int32_t partition) const {
  partition_location out;
  const topic_info* t = broker_.controller_->state().topic(topic);
  if (!t || partition < 0 || static_cast<size_t>(partition) >= t->partitions.size()) {
    out.error = error_code::unknown_topic_or_partition;
    return out;
  }
  out.group = t->groups[static_cast<size_t>(partition)];
  auto where = broker_.group_shard_.find(out.group);
  if (where == broker_.group_shard_.end()) {
    out.error = error_code::not_leader_or_follower;  // no replica here: ask the leader
    return out;
  }
  out.shard = where->second;
  return out;
}

void kafka_frontend::run_on(unsigned k, std::function<void()> fn) {
  if (k == 0) return fn();
  broker_.shards_[k].runner->post(std::move(fn));
}

void kafka_frontend::run_on_shard0(std::function<void()> fn) {
  broker_.shards_[0].runner->post([alive = alive_, fn = std::move(fn)] {
    if (*alive) fn();
  });
}

namespace {

// The leader-epoch check of Fetch v9+, ListOffsets v4+ and OffsetForLeaderEpoch v2+ (KIP-320).
int16_t check_leader_epoch(int32_t client_epoch, int64_t term) {
  if (client_epoch < 0) return error_code::none;
  if (client_epoch < term) return error_code::fenced_leader_epoch;
  if (client_epoch > term) return error_code::unknown_leader_epoch;
  return error_code::none;
}

// Kafka's high watermark is the offset after the last committed one.
int64_t kafka_high_watermark(const partition_host& h) {
  return h.high_watermark().value() + 1;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Idempotent producers: the partition's producer state on its leader (producer_state.h)

namespace {

void producer_log(const std::string& s) {
  std::fprintf(stderr, "keel: producers: %s\n", s.c_str());
  std::fflush(stderr);
}

std::string producer_error_message(int16_t code) {
  switch (code) {
    case error_code::invalid_producer_epoch:
      return "the producer epoch is older than the partition's";
    case error_code::out_of_order_sequence_number:
      return "the base sequence does not follow the producer's last batch";
    case error_code::unknown_producer_id:
      return "the partition knows no batch of this producer and the sequence is not 0";
    default:
      return {};
  }
}

template <class Replica>
partition_producers& producers_of(Replica& r, engine::io_ring& ring) {
  if (!r.producers) {
    r.producers = std::make_unique<partition_producers>();
    auto store = producer_snapshot_store::open(r.log->dir(), ring);
    if (store)
      r.producers->store = std::move(store).value();
    else
      producer_log(r.topic + "-" + std::to_string(r.partition) +
                   ": no producer snapshots: " + store.err().describe());
  }
  return *r.producers;
}

// Builds the producer state for the current term if it was built for another (a new
// leadership): from the newest usable snapshot, replaying the batch headers of the earlier terms'
// entries (this term's data entries are all proposed here and recorded as they are). False when
// the log is not written that far yet (the client retries).
template <class Replica>
bool ready_producer_state(Replica& r, engine::io_ring& ring) {
  partition_host& h = *r.host;
  const int64_t term = h.core().term().value();
  if (r.producers && r.producers->term == term) return true;
  const std::string name = r.topic + "-" + std::to_string(r.partition);
  partition_producers& p = producers_of(r, ring);
  const raft::log_view& log = h.core().log();
  const int64_t until = log.last_at_or_below_term(log.last(), raft::term_id(term - 1)).value() + 1;
  int64_t from = 0;
  auto warn = [&name](const std::string& w) { producer_log(name + ": " + w); };
  if (!rebuild_producer_state(*r.log, p.store.get(), until,
                              static_cast<uint8_t>(raft::batch_type::data), p.state, from, warn))
    return false;
  p.term = term;
  p.snapshot_offset = from;
  p.bytes_since_snapshot = 0;
  producer_log(name + ": producer state of term " + std::to_string(term) +
               " built: " + std::to_string(p.state.size()) + " producers, log scanned over [" +
               std::to_string(from) + ", " + std::to_string(until) + ")");
  return true;
}

// Every snapshot_every_bytes or snapshot_every_offsets of growth, the state as of the high
// watermark goes to the partition's snapshot file (through the ring), so a later rebuild scans
// from there.
template <class Replica>
void maybe_snapshot_producers(Replica& r) {
  partition_producers& p = *r.producers;
  const int64_t next = r.host->high_watermark().value() + 1;
  if (!p.store || p.store->busy() || next <= p.snapshot_offset) return;
  if (p.bytes_since_snapshot < partition_producers::snapshot_every_bytes &&
      next - p.snapshot_offset < partition_producers::snapshot_every_offsets)
    return;
  producer_state as_of = p.state;
  as_of.truncate_from(next);
  const std::string name = r.topic + "-" + std::to_string(r.partition);
  p.store->save(as_of.encode_snapshot(next), [name](const std::string& error) {
    if (!error.empty()) producer_log(name + ": producer snapshot not saved: " + error);
  });
  p.snapshot_offset = next;
  p.bytes_since_snapshot = 0;
}

}  // namespace

void kafka_frontend::follow_producers(unsigned k, uint64_t group) {
  auto& groups = broker_.shards_[k].groups;
  auto it = groups.find(group);
  if (it == groups.end()) return;
  auto& r = it->second;
  // The leader records its batches as it proposes them; __consumer_offsets has no producers.
  if (r.coordinator || r.host->is_leader()) return;
  engine::io_ring& ring = broker_.shards_[k].runner->ring();
  partition_producers& p = producers_of(r, ring);
  const raft::offset hw = r.host->high_watermark();
  const int64_t next = hw.value() + 1;
  if (p.term != partition_producers::following) {
    const std::string name = r.topic + "-" + std::to_string(r.partition);
    int64_t from = 0;
    auto warn = [&name](const std::string& w) { producer_log(name + ": " + w); };
    if (!rebuild_producer_state(*r.log, p.store.get(), next,
                                static_cast<uint8_t>(raft::batch_type::data), p.state, from, warn))
      return;
    p.term = partition_producers::following;
    p.snapshot_offset = from;
    p.bytes_since_snapshot = 0;
    p.followed_to = next;
    return;
  }
  engine::read_options options;
  options.verify_checksums = false;
  while (p.followed_to < next) {
    auto read = r.log->read(engine::offset(p.followed_to), 4 << 20, to_engine(hw), options);
    if (!read || read->batches().empty()) {
      p.term = -1;  // the log moved under us (a reset): rebuild at the next commit
      return;
    }
    for (const auto& b : read->batches()) {
      if (b.header.last_offset.value() < p.followed_to) continue;
      if (b.header.type == static_cast<uint8_t>(raft::batch_type::data)) {
        auto h = kafka::parse_header(b.payload());
        if (h && h->magic == kafka::batch_magic_v2 && h->producer_id >= 0)
          p.state.record(h->producer_id, h->producer_epoch, h->base_sequence, h->last_offset_delta,
                         b.header.base_offset.value());
        p.bytes_since_snapshot += b.stored.size();
      }
      p.followed_to = b.header.last_offset.value() + 1;
    }
  }
  maybe_snapshot_producers(r);
}

namespace {

// A retry of a recorded batch: answered with its original offsets once it is committed (Kafka's
// DUPLICATE_SEQUENCE_NUMBER semantics as librdkafka expects them: no error, the first offset),
// never appended again. An original not committed yet is waited for (the commit listener); if
// leadership is lost first, NOT_LEADER_OR_FOLLOWER (the client retries at the new leader).
template <class Replica, class Reply>
void answer_duplicate(Replica& r, const producer_batch& dup, int64_t start, Reply reply) {
  static std::atomic<int> logged{0};  // shards share it: a few lines, not a flood
  if (logged++ < 5)
    producer_log(r.topic + "-" + std::to_string(r.partition) + ": a retried batch (offsets " +
                 std::to_string(dup.first_offset) + "-" + std::to_string(dup.last_offset) +
                 ") answered as a duplicate");
  partition_host& h = *r.host;
  if (h.high_watermark().value() >= dup.last_offset)
    return reply(error_code::none, dup.first_offset, start, {});
  const int64_t term = h.core().term().value();
  auto wait = std::make_shared<std::function<void()>>();
  std::weak_ptr<std::function<void()>> weak = wait;
  *wait = [rp = &r, weak, term, dup, start, reply] {
    partition_host& h = *rp->host;
    if (!h.is_leader() || h.core().term().value() != term)
      return reply(error_code::not_leader_or_follower, -1, -1, std::string());
    if (h.high_watermark().value() >= dup.last_offset)
      return reply(error_code::none, dup.first_offset, start, std::string());
    auto again = weak.lock();
    rp->commit_waiters.push_back(
        {std::make_shared<std::atomic<bool>>(false), [again] { (*again)(); }});
  };
  // The waiters hold the function; it holds itself only weakly.
  r.commit_waiters.push_back({std::make_shared<std::atomic<bool>>(false), [wait] { (*wait)(); }});
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Produce

namespace {

struct produce_state {
  kafka::produce_response response;
  int outstanding = 1;  // held until every partition is under way
  bool answered = false;
  std::unique_ptr<boost::asio::steady_timer> timer;
};

}  // namespace

void kafka_frontend::produce(const request& rq, kafka::produce_request m) {
  const int16_t acks = m.acks;
  auto state = std::make_shared<produce_state>();
  auto finish = [this, rq, state, acks] {
    if (state->answered) return;
    state->answered = true;
    if (state->timer) state->timer->cancel();
    if (acks == 0) return;
    answer(rq, state->response);
  };
  auto finish_one = [state, finish] {
    if (--state->outstanding == 0) finish();
  };
  const bool bad_acks = acks != 0 && acks != 1 && acks != -1;
  for (auto& topic : m.topic_data) {
    const size_t ti = state->response.responses.size();
    auto& rt = state->response.responses.emplace_back();
    rt.name = topic.name;
    for (auto& part : topic.partition_data) {
      const size_t pi = rt.partition_responses.size();
      auto& rp = rt.partition_responses.emplace_back();
      rp.index = part.index;
      rp.base_offset = -1;
      rp.log_append_time_ms = -1;
      rp.log_start_offset = -1;
      auto fail = [&](int16_t code, std::string why) {
        rp.error_code = code;
        rp.error_message = std::move(why);
      };
      if (bad_acks) {
        fail(error_code::invalid_required_acks, "acks must be -1, 0 or 1");
        continue;
      }
      if (rq.api_version < 3) {
        fail(error_code::unsupported_for_message_format,
             "produce v0-v2 carry message formats 0 and 1; Keel stores record batch v2 only");
        continue;
      }
      if (topic.name.rfind("__", 0) == 0) {
        fail(error_code::invalid_topic_exception, "internal topics take no produce requests");
        continue;
      }
      const partition_location at = locate(topic.name, part.index);
      if (at.error == error_code::unknown_topic_or_partition &&
          broker_.config_.auto_create_topics && !broker_.controller_->state().topic(topic.name) &&
          valid_topic_name(topic.name)) {
        // Auto-creation on Produce as on Metadata; the producer retries once it exists.
        request_auto_create(topic.name);
      }
      if (at.error) {
        fail(at.error, {});
        continue;
      }
      if (part.records.null || part.records.pieces.size() != 1) {
        fail(error_code::corrupt_message, "no record batch");
        continue;
      }
      // The batch is proposed as a view into the request frame, stamped in place.
      const std::span<const std::byte> view = part.records.pieces.front();
      const auto offset_in_frame = static_cast<size_t>(view.data() - rq.frame->data());
      std::span<std::byte> bytes(rq.frame->data() + offset_in_frame, view.size());
      ++state->outstanding;
      const bool zstd_allowed = rq.api_version >= 7;
      const unsigned k = at.shard;
      auto reply = [this, state, ti, pi, finish_one](int16_t code, int64_t base, int64_t start,
                                                     std::string why) {
        run_on_shard0([state, ti, pi, finish_one, code, base, start, why = std::move(why)] {
          if (state->answered) return;
          auto& r = state->response.responses[ti].partition_responses[pi];
          r.error_code = code;
          r.base_offset = base;
          r.log_start_offset = start;
          if (!why.empty()) r.error_message = why;
          finish_one();
        });
      };
      run_on(k, [this, k, group = at.group, bytes, frame = rq.frame, acks, zstd_allowed, reply] {
        auto& groups = broker_.shards_[k].groups;
        auto it = groups.find(group);
        if (it == groups.end() || !it->second.host->is_leader())
          return reply(error_code::not_leader_or_follower, -1, -1, {});
        broker::replica_state& r = it->second;
        partition_host& h = *r.host;
        kafka::batch_limits limits;
        limits.max_message_bytes = static_cast<size_t>(broker_.config_.message_max_bytes);
        if (auto c = r.configs.find("max.message.bytes"); c != r.configs.end())
          limits.max_message_bytes = std::stoull(c->second);
        limits.zstd_allowed = zstd_allowed;
        const kafka::batch_validation v = kafka::validate_batch(bytes, limits);
        if (!v.ok()) return reply(static_cast<int16_t>(v.error), -1, -1, std::string(v.reason));
        const int64_t start = r.log->log_start().value();
        const kafka::batch_header& bh = v.header;
        partition_producers* producers = nullptr;
        if (bh.producer_id >= 0) {
          // Idempotence: the producer state decides before anything is proposed.
          if (!ready_producer_state(r, broker_.shards_[k].runner->ring())) {
            return reply(error_code::not_enough_replicas, -1, -1,
                         "the new leader is still loading its producer state");
          }
          producers = r.producers.get();
          const producer_state::verdict pv = producers->state.check(
              bh.producer_id, bh.producer_epoch, bh.base_sequence, bh.last_offset_delta);
          if (pv.error) return reply(pv.error, -1, -1, producer_error_message(pv.error));
          if (pv.duplicate) return answer_duplicate(r, *pv.duplicate, start, reply);
        }
        const raft::offset base = h.next_offset();
        kafka::stamp(bytes, base.value(), static_cast<int32_t>(h.core().term().value()));
        auto done = [reply, start](const proposal_outcome& o) {
          if (o.committed) return reply(error_code::none, o.base.value(), start, {});
          reply(error_code::not_leader_or_follower, -1, -1, o.error);
        };
        auto proposed = h.propose(raft::batch_type::data, v.header.last_offset_delta + 1,
                                  raft::shared_bytes(frame, bytes),
                                  acks == 0 ? partition_host::proposal_callback{} : done,
                                  acks == 1 ? proposal_wait::local_write : proposal_wait::commit);
        if (!proposed) {
          // Nothing was appended: a retry cannot duplicate. The Raft window being full is
          // backpressure, not an error of the batch.
          return reply(proposed.err().code == raft::errc::busy ? error_code::not_enough_replicas
                                                               : error_code::not_leader_or_follower,
                       -1, -1, proposed.err().describe());
        }
        KEEL_ASSERT(proposed->base == base, "a proposal took another offset than announced");
        if (producers) {
          producers->state.record(bh.producer_id, bh.producer_epoch, bh.base_sequence,
                                  bh.last_offset_delta, base.value());
          producers->bytes_since_snapshot += bytes.size();
          maybe_snapshot_producers(r);
        }
        if (acks == 0) reply(error_code::none, base.value(), start, {});
      });
    }
  }
  if (acks == 0) {
    net::kafka_response none;
    none.none = true;
    rq.respond(std::move(none));
  } else if (m.timeout_ms > 0) {
    state->timer = std::make_unique<boost::asio::steady_timer>(
        broker_.shards_[0].runner->io(), std::chrono::milliseconds(m.timeout_ms));
    state->timer->async_wait([state, finish](const boost::system::error_code& ec) {
      if (ec || state->answered) return;
      for (auto& t : state->response.responses)
        for (auto& p : t.partition_responses)
          if (p.error_code == error_code::none && p.base_offset < 0)
            p.error_code = error_code::request_timed_out;
      finish();
    });
  }
  finish_one();
}

// ---------------------------------------------------------------------------------------------
// Fetch

namespace {

// One partition's read, made on its shard: views into the segment maps (kept mapped by `read`)
// and the empty batches that stand for Raft's own entries.
struct partition_read {
  int16_t error = error_code::none;
  int64_t high_watermark = -1;
  int64_t log_start = -1;
  engine::read_result read;
  std::deque<std::array<std::byte, kafka::batch_header_size>> empty_batches;
  std::vector<std::span<const std::byte>> batches;
  size_t bytes = 0;
};

}  // namespace

struct kafka_frontend::fetch_state {
  struct part {
    size_t topic_index = 0, partition_index = 0;
    std::string topic;
    int32_t partition = 0;
    int64_t offset = 0;
    int32_t max_bytes = 0;
    int32_t leader_epoch = -1;
    partition_location at;
    std::shared_ptr<partition_read> result;
  };
  request rq;
  int16_t version = 0;
  int32_t min_bytes = 1;
  int32_t max_bytes = 0;
  steady::time_point deadline;
  std::vector<part> parts;
  kafka::fetch_response response;
  int outstanding = 0;
  bool answered = false;
  // Waiting for a commit: the flag the partitions' waiters check, and the deadline timer.
  std::shared_ptr<std::atomic<bool>> cancelled;
  std::unique_ptr<boost::asio::steady_timer> timer;
};

void kafka_frontend::fetch(const request& rq, kafka::fetch_request m) {
  auto f = std::make_shared<fetch_state>();
  f->rq = rq;
  f->version = rq.api_version;
  f->min_bytes = m.min_bytes;
  f->max_bytes = rq.api_version >= 3 ? m.max_bytes : INT32_MAX;
  if (f->max_bytes <= 0) f->max_bytes = INT32_MAX;
  f->deadline = steady::now() + std::chrono::milliseconds(std::max(0, m.max_wait_ms));
  f->response.session_id = 0;  // no fetch sessions (KIP-227 allows full fetches)
  for (auto& t : m.topics) {
    const size_t ti = f->response.responses.size();
    auto& rt = f->response.responses.emplace_back();
    rt.topic = t.topic;
    rt.topic_id = t.topic_id;
    for (auto& p : t.partitions) {
      const size_t pi = rt.partitions.size();
      auto& rp = rt.partitions.emplace_back();
      rp.partition_index = p.partition;
      rp.high_watermark = -1;
      rp.last_stable_offset = -1;
      rp.log_start_offset = -1;
      rp.preferred_read_replica = -1;
      fetch_state::part x;
      x.topic_index = ti;
      x.partition_index = pi;
      x.topic = t.topic;
      x.partition = p.partition;
      x.offset = p.fetch_offset;
      x.max_bytes = p.partition_max_bytes;
      x.leader_epoch = p.current_leader_epoch;
      x.at = locate(t.topic, p.partition);
      rp.error_code = x.at.error;
      f->parts.push_back(std::move(x));
    }
  }
  fetch_round(std::move(f));
}

void kafka_frontend::fetch_round(std::shared_ptr<fetch_state> f) {
  f->outstanding = 1;
  auto finish_one = [this, f] {
    if (--f->outstanding != 0) return;
    size_t bytes = 0;
    bool errors = false;
    for (const auto& p : f->parts) {
      if (p.at.error || (p.result && p.result->error)) errors = true;
      if (p.result) bytes += p.result->bytes;
    }
    if (errors || bytes >= static_cast<size_t>(std::max(f->min_bytes, 0)) ||
        steady::now() >= f->deadline)
      return fetch_answer(f);
    // Long poll: wait for a commit on any of the partitions, or the deadline.
    f->cancelled = std::make_shared<std::atomic<bool>>(false);
    auto wake = [this, f, cancelled = f->cancelled] {
      if (cancelled->exchange(true)) return;
      if (f->timer) f->timer->cancel();
      fetch_round(f);
    };
    f->timer =
        std::make_unique<boost::asio::steady_timer>(broker_.shards_[0].runner->io(), f->deadline);
    f->timer->async_wait([wake](const boost::system::error_code& ec) {
      if (!ec) wake();
    });
    for (const auto& p : f->parts) {
      if (p.at.error) continue;
      const int64_t seen = p.result ? p.result->high_watermark : -1;
      run_on(p.at.shard,
             [this, k = p.at.shard, group = p.at.group, seen, wake, cancelled = f->cancelled] {
               auto& groups = broker_.shards_[k].groups;
               auto it = groups.find(group);
               if (it == groups.end()) return;
               auto& r = it->second;
               // A commit between the read and now would otherwise be missed until the deadline.
               if (kafka_high_watermark(*r.host) != seen) return run_on_shard0(wake);
               std::erase_if(r.commit_waiters, [](const auto& w) { return w.cancelled->load(); });
               r.commit_waiters.push_back({cancelled, [this, wake] { run_on_shard0(wake); }});
             });
    }
  };
  for (size_t i = 0; i < f->parts.size(); ++i) {
    auto& p = f->parts[i];
    if (p.at.error) continue;
    ++f->outstanding;
    run_on(p.at.shard, [this, f, i, k = p.at.shard, group = p.at.group, offset = p.offset,
                        max_bytes = p.max_bytes, epoch = p.leader_epoch, finish_one] {
      auto out = std::make_shared<partition_read>();
      auto& groups = broker_.shards_[k].groups;
      auto it = groups.find(group);
      if (it == groups.end() || !it->second.host->is_leader()) {
        out->error = error_code::not_leader_or_follower;
      } else {
        partition_host& h = *it->second.host;
        out->high_watermark = kafka_high_watermark(h);
        out->log_start = h.log().log_start().value();
        out->error = check_leader_epoch(epoch, h.core().term().value());
        if (!out->error && (offset < out->log_start || offset > out->high_watermark))
          out->error = error_code::offset_out_of_range;
        if (!out->error && offset < out->high_watermark) {
          // The engine's XXH3 is not re-checked on this hot path: batches were validated when
          // written and on recovery, and clients can check each batch's own CRC-32C.
          engine::read_options options;
          options.verify_checksums = false;
          auto read =
              h.log().read(engine::offset(offset), static_cast<uint64_t>(std::max(max_bytes, 1)),
                           to_engine(h.high_watermark()), options);
          if (!read) {
            out->error = error_code::kafka_storage_error;
          } else {
            out->read = std::move(*read);
            for (const auto& v : out->read.batches()) {
              if (v.header.type == static_cast<uint8_t>(raft::batch_type::data)) {
                out->batches.push_back(v.payload());
              } else {
                // Raft's own entries take offsets too: clients see a batch with no records.
                auto& e = out->empty_batches.emplace_back();
                kafka::write_empty_batch(e, v.header.base_offset.value(),
                                         v.header.last_offset.value(),
                                         static_cast<int32_t>(v.header.term.value()), -1);
                out->batches.emplace_back(e.data(), e.size());
              }
              out->bytes += out->batches.back().size();
            }
          }
        }
      }
      run_on_shard0([f, i, out, finish_one] {
        f->parts[i].result = out;
        finish_one();
      });
    });
  }
  finish_one();
}

void kafka_frontend::fetch_answer(std::shared_ptr<fetch_state> f) {
  if (f->answered) return;
  f->answered = true;
  if (f->cancelled) f->cancelled->store(true);
  size_t total = 0;
  for (auto& p : f->parts) {
    auto& rp = f->response.responses[p.topic_index].partitions[p.partition_index];
    if (p.at.error || !p.result) continue;
    const partition_read& r = *p.result;
    rp.error_code = r.error;
    rp.high_watermark = r.high_watermark;
    rp.last_stable_offset = r.high_watermark;
    rp.log_start_offset = r.log_start;
    rp.aborted_transactions.emplace();
    // The response's max_bytes: whole batches while they fit, and always the first (KIP-74).
    for (auto b : r.batches) {
      if (total > 0 && total + b.size() > static_cast<size_t>(f->max_bytes)) break;
      rp.records.pieces.push_back(b);
      total += b.size();
    }
  }
  answer(f->rq, f->response, f);
}

// ---------------------------------------------------------------------------------------------
// ListOffsets and OffsetForLeaderEpoch

void kafka_frontend::list_offsets(const request& rq, kafka::list_offsets_request m) {
  constexpr int64_t latest = -1, earliest = -2, max_timestamp = -3;
  auto state = std::make_shared<gathered_response<kafka::list_offsets_response>>();
  auto finish_one = [this, rq, state] {
    if (--state->outstanding == 0) answer(rq, state->response);
  };
  for (const auto& t : m.topics) {
    const size_t ti = state->response.topics.size();
    auto& rt = state->response.topics.emplace_back();
    rt.name = t.name;
    for (const auto& p : t.partitions) {
      const size_t pi = rt.partitions.size();
      auto& rp = rt.partitions.emplace_back();
      rp.partition_index = p.partition_index;
      const partition_location at = locate(t.name, p.partition_index);
      if (at.error) {
        rp.error_code = at.error;
        continue;
      }
      ++state->outstanding;
      run_on(at.shard, [this, k = at.shard, group = at.group, ts = p.timestamp,
                        epoch = p.current_leader_epoch, state, ti, pi, finish_one] {
        int16_t error = error_code::none;
        int64_t offset = -1, timestamp = -1;
        int32_t leader_epoch = -1;
        auto& groups = broker_.shards_[k].groups;
        auto it = groups.find(group);
        if (it == groups.end() || !it->second.host->is_leader()) {
          error = error_code::not_leader_or_follower;
        } else {
          partition_host& h = *it->second.host;
          leader_epoch = static_cast<int32_t>(h.core().term().value());
          error = check_leader_epoch(epoch, h.core().term().value());
          const int64_t hw = kafka_high_watermark(h);
          const engine::log& log = h.log();
          if (error) {
          } else if (ts == earliest) {
            offset = log.log_start().value();
          } else if (ts == latest) {
            offset = hw;
          } else if (ts == max_timestamp) {
            // The newest committed batch: timestamps grow with offsets for CreateTime producers
            // with sane clocks, and always for LogAppendTime.
            if (hw > log.log_start().value()) {
              if (auto b = log.batch_at(engine::offset(hw - 1)); b) {
                offset = b->base_offset.value();
                timestamp = b->max_timestamp.value();
              }
            }
          } else if (ts >= 0) {
            auto found = log.offset_for_timestamp(engine::timestamp_ms(ts));
            if (!found) {
              error = error_code::kafka_storage_error;
            } else if (const std::optional<engine::offset>& o = *found; o && o->value() < hw) {
              offset = o->value();
              if (auto b = log.batch_at(*o); b) timestamp = b->max_timestamp.value();
            }
          } else {
            error = error_code::invalid_request;
          }
        }
        run_on_shard0([state, ti, pi, finish_one, error, offset, timestamp, leader_epoch] {
          auto& r = state->response.topics[ti].partitions[pi];
          r.error_code = error;
          r.offset = offset;
          r.timestamp = timestamp;
          r.leader_epoch = leader_epoch;
          finish_one();
        });
      });
    }
  }
  finish_one();
}

void kafka_frontend::offset_for_leader_epoch(const request& rq,
                                             kafka::offset_for_leader_epoch_request m) {
  auto state = std::make_shared<gathered_response<kafka::offset_for_leader_epoch_response>>();
  auto finish_one = [this, rq, state] {
    if (--state->outstanding == 0) answer(rq, state->response);
  };
  for (const auto& t : m.topics) {
    const size_t ti = state->response.topics.size();
    auto& rt = state->response.topics.emplace_back();
    rt.topic = t.topic;
    for (const auto& p : t.partitions) {
      const size_t pi = rt.partitions.size();
      auto& rp = rt.partitions.emplace_back();
      rp.partition = p.partition;
      const partition_location at = locate(t.topic, p.partition);
      if (at.error) {
        rp.error_code = at.error;
        continue;
      }
      ++state->outstanding;
      run_on(at.shard, [this, k = at.shard, group = at.group, wanted = p.leader_epoch,
                        current = p.current_leader_epoch, state, ti, pi, finish_one] {
        int16_t error = error_code::none;
        int32_t epoch = -1;
        int64_t end = -1;
        auto& groups = broker_.shards_[k].groups;
        auto it = groups.find(group);
        if (it == groups.end() || !it->second.host->is_leader()) {
          error = error_code::not_leader_or_follower;
        } else {
          const raft::core& core = it->second.host->core();
          const int64_t term = core.term().value();
          error = check_leader_epoch(current, term);
          const raft::log_view& log = core.log();
          if (!error && wanted <= term) {
            // The end of epoch `wanted`: the first offset of a later term (terms never decrease
            // along the log, so a binary search finds it), or the log's end.
            int64_t lo = log.first().value(), hi = log.last().value() + 1;
            while (lo < hi) {
              const int64_t mid = lo + (hi - lo) / 2;
              auto t_mid = log.term_at(raft::offset(mid));
              if (t_mid && t_mid->value() > wanted)
                hi = mid;
              else
                lo = mid + 1;
            }
            end = lo;
            epoch = wanted;
            if (lo > log.first().value()) {
              if (auto t_prev = log.term_at(raft::offset(lo - 1)); t_prev)
                epoch = static_cast<int32_t>(t_prev->value());
            }
          }
        }
        run_on_shard0([state, ti, pi, finish_one, error, epoch, end] {
          auto& r = state->response.topics[ti].partitions[pi];
          r.error_code = error;
          r.leader_epoch = epoch;
          r.end_offset = end;
          finish_one();
        });
      });
    }
  }
  finish_one();
}

}  // namespace keel::server
