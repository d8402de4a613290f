#include "keel/server/broker.h"

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <future>
#include <stdexcept>

#include "keel/engine/assert.h"
#include "keel/net/kafka/record_batch.h"
#include "keel/net/wire.h"
#include "keel/raft/codec.h"
#include "keel/server/kafka_frontend.h"

namespace keel::server {
namespace {

// Inter-broker frame types (net::transport::first_user_type and up).
constexpr uint16_t raft_frame = 16;
constexpr uint16_t heartbeat_frame = 17;
constexpr uint16_t controller_request_frame = 18;
constexpr uint16_t controller_response_frame = 19;
constexpr uint16_t leader_report_frame = 20;

// Controller request kinds.
constexpr uint8_t kind_command = 1;
constexpr uint8_t kind_create_topic = 2;
constexpr uint8_t kind_delete_topic = 3;
constexpr uint8_t kind_create_partitions = 4;
// A broker heartbeat: i32 broker id, u8 shutting down. Leader-local, never logged (KIP-631).
constexpr uint8_t kind_heartbeat = 5;

constexpr int leader_report_ticks = 20;
constexpr int balance_ticks = 200;
// How often a fenced broker's shards look for leaderships to hand away.
constexpr int fenced_hand_off_ticks = 50;
// How often the controller leader looks for brokers whose session has lapsed.
constexpr int liveness_check_ticks = 10;
constexpr auto leader_entry_ttl = std::chrono::seconds(3);
constexpr const char* metadata_log_name = "__cluster_metadata-0";
constexpr const char* offsets_topic_name = "__consumer_offsets";

int64_t steady_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

void log_line(const std::string& s) {
  std::fprintf(stderr, "keel: broker: %s\n", s.c_str());
  std::fflush(stderr);
}

bool is_heartbeat(const raft::message& m) {
  return std::holds_alternative<raft::heartbeat_request>(m.body) ||
         std::holds_alternative<raft::heartbeat_response>(m.body);
}

// What a leader sends a partition's follower rides the bulk lane, in order: its entries, a log
// reset (which they must not overtake), and its heartbeats, whose replies tell the leader the
// follower is keeping up (raft::core_options::stall_rounds) and so must not overtake the
// entries they vouch for. A follower's replies, votes and all of the metadata group go ahead:
// an acknowledgement or a vote must not wait behind megabytes of another group's data.
net::lane lane_of(const raft::message& m) {
  const bool from_leader = std::holds_alternative<raft::append_request>(m.body) ||
                           std::holds_alternative<raft::reset_request>(m.body) ||
                           std::holds_alternative<raft::heartbeat_request>(m.body);
  return from_leader && m.group != raft::group_id(0) ? net::lane::bulk : net::lane::control;
}

std::string partition_log_name(const std::string& topic, int32_t partition) {
  return topic + "-" + std::to_string(partition);
}

int64_t config_int(const std::map<std::string, std::string>& c, const char* key, int64_t fallback) {
  auto it = c.find(key);
  if (it == c.end()) return fallback;
  try {
    return std::stoll(it->second);
  } catch (...) {
    return fallback;
  }
}

}  // namespace

broker::broker(broker_config config) : config_(std::move(config)) {
  if (auto e = config_.validate(); !e.empty()) throw std::runtime_error(e);
  if (auto e = claim_data_dir(config_.data_dir, config_.node_id); !e.empty())
    throw std::runtime_error(e);
  if (auto e = settle_shards(config_); !e.empty()) throw std::runtime_error(e);
  shards_.resize(config_.shards);
  for (unsigned k = 0; k < config_.shards; ++k) {
    auto& s = shards_[k];
    s.runner = std::make_unique<shard>(k, std::chrono::milliseconds(config_.tick_ms));
    s.random = std::make_unique<seeded_random>(std::random_device{}() ^
                                               (uint64_t(config_.node_id) << 32) ^ k);
  }
  std::random_device rd;
  barrier_nonce_ = (uint64_t(rd()) << 32) ^ rd();
  if (barrier_nonce_ == 0) barrier_nonce_ = 1;  // 0 means "no barrier"
}

broker::~broker() {
  stop();
}

raft::core_options broker::core_options(uint64_t group) const {
  raft::core_options o;
  o.group = raft::group_id(group);
  o.self = raft::node_id(static_cast<uint64_t>(config_.node_id));
  o.election_ticks = config_.election_ticks;
  o.heartbeat_ticks = std::max(1, config_.election_ticks / 10);
  // Half an election timeout without progress before a follower's appends count as lost: its
  // fsync on a busy disk can outlast several heartbeats.
  o.stall_rounds = std::max(1, config_.election_ticks / o.heartbeat_ticks / 2);
  return o;
}

engine::log_config broker::log_config_for(const std::map<std::string, std::string>& configs) const {
  engine::log_config c;
  c.flush = config_.flush;
  c.segment_bytes = static_cast<uint64_t>(
      config_int(configs, "segment.bytes", static_cast<int64_t>(config_.segment_bytes)));
  c.segment_ms = config_int(configs, "segment.ms", config_.segment_ms);
  c.retention_ms = config_int(configs, "retention.ms", config_.retention_ms);
  c.retention_bytes = config_int(configs, "retention.bytes", config_.retention_bytes);
  return c;
}

partition_host::message_sink broker::sink_for(unsigned shard) {
  if (shard == 0) return [this](raft::message m) { send_raft(std::move(m)); };
  return [this](raft::message m) {
    if (is_heartbeat(m)) {
      // Coalesced with every group's heartbeats on shard 0.
      shards_[0].runner->post([this, m = std::move(m)]() mutable { send_raft(std::move(m)); });
      return;
    }
    // Encoded (the payload copy and its checksum) here, on the group's shard: shard 0 only
    // queues the finished frame.
    const auto to = static_cast<int32_t>(m.to.value());
    shards_[0].runner->post([this, to, lane = lane_of(m), frame = raft_frame_of(m)]() mutable {
      // A full queue drops it; Raft resends.
      (void)transport_->send_frame(to, std::move(frame), lane);
    });
  };
}

std::vector<std::byte> broker::raft_frame_of(const raft::message& m) {
  std::vector<std::byte> frame(net::frame_header_size);
  raft::codec::encode_into(frame, m);
  net::seal_frame(frame, raft_frame);
  return frame;
}

void broker::start() {
  // Every shard opens its logs first: recovery happens before any group stands for election.
  for (unsigned k = 0; k < shards_.size(); ++k) {
    auto& s = shards_[k];
    engine::log_manager::options o;
    o.data_dir = config_.data_dir + "/shard-" + std::to_string(k);
    o.defaults = log_config_for({});
    o.retention_check_interval_ms = -1;  // applied per Raft group (apply_retention)
    auto m = engine::log_manager::open(o, s.runner->ring());
    if (!m) throw std::runtime_error("data-dir: " + m.err().describe());
    s.logs = std::move(m).value();
    s.last_retention_ms = steady_ms();
    s.runner->on_tick([this, k] { tick_shard(k); });
  }
  std::promise<std::string> started;
  shards_[0].runner->post([this, &started] {
    try {
      start_on_shard0();
      started.set_value({});
    } catch (const std::exception& e) {
      started.set_value(e.what());
    }
  });
  for (auto& s : shards_)
    s.runner->start();
  if (auto e = started.get_future().get(); !e.empty()) throw std::runtime_error(e);
  log_line("broker " + std::to_string(config_.node_id) + " serving: rpc " +
           config_.rpc_address().to_string() + ", " + std::to_string(shards_.size()) + " shards");
}

void broker::start_on_shard0() {
  auto& s0 = shards_[0];
  // Before any replica exists: their commit listeners call into it from their shards.
  kafka_ = std::make_unique<kafka_frontend>(*this);
  net::transport_config tc;
  tc.self = config_.node_id;
  tc.listen_host = config_.rpc_listen.host;
  tc.listen_port = config_.rpc_listen.port;
  transport_ = std::make_unique<net::transport>(
      s0.runner->io(), tc, [this](net::node_id from, uint16_t type, std::span<const std::byte> p) {
        on_frame(from, type, p);
      });
  try {
    transport_->listen();
  } catch (const std::exception& e) {
    throw std::runtime_error("rpc-listen: cannot listen on " + config_.rpc_listen.to_string() +
                             ": " + e.what());
  }
  rpc_port_ = transport_->local_port();
  // A broker that is not a seed dials the seeds itself: they learn its address only once it
  // has registered, which needs the link.
  bool self_is_seed = false;
  for (const seed& sd : config_.seeds)
    self_is_seed = self_is_seed || sd.node_id == config_.node_id;
  for (const seed& sd : config_.seeds)
    transport_->add_peer(sd.node_id, sd.rpc.host, sd.rpc.port, /*bootstrap=*/!self_is_seed);

  auto l = s0.logs->open_log(metadata_log_name, log_config_for({}));
  if (!l) throw std::runtime_error("data-dir: metadata log: " + l.err().describe());
  metadata_log_ = *l;
  raft::membership voters;
  for (const seed& sd : config_.seeds)
    voters.voters.push_back(raft::node_id(static_cast<uint64_t>(sd.node_id)));
  voters.normalize();
  auto c = controller::open(*metadata_log_, s0.runner->ring(), core_options(0), voters, sink_for(0),
                            *s0.random, config_.data_dir + "/metadata.snapshot",
                            config_.metadata_snapshot_every);
  if (!c) throw std::runtime_error("metadata group: " + c.err().describe());
  controller_ = std::move(c).value();
  heartbeat_acked_ = std::chrono::steady_clock::now();  // a session's grace from the start
  controller_->on_change([this] { reconcile(); });
  reconcile();
  try {
    kafka_->listen();
  } catch (const std::exception& e) {
    throw std::runtime_error("kafka-listen: cannot listen on " + config_.kafka_listen.to_string() +
                             ": " + e.what());
  }
  kafka_port_ = kafka_->port();
}

// ---------------------------------------------------------------------------------------------
// Raft messages between brokers

void broker::send_raft(raft::message m) {
  const auto to = static_cast<int32_t>(m.to.value());
  if (is_heartbeat(m)) {
    // Heartbeats of every group to one broker go out as one frame at the end of this turn.
    auto& q = std::holds_alternative<raft::heartbeat_request>(m.body)
                  ? heartbeat_requests_out_[to]
                  : heartbeat_responses_out_[to];
    q.push_back(std::move(m));
    if (!heartbeat_flush_scheduled_) {
      heartbeat_flush_scheduled_ = true;
      shards_[0].runner->post([this] { flush_heartbeats(); });
    }
    return;
  }
  // A full queue drops it; Raft resends.
  (void)transport_->send_frame(to, raft_frame_of(m), lane_of(m));
}

void broker::flush_heartbeats() {
  heartbeat_flush_scheduled_ = false;
  // One frame per lane (lane_of): the partitions' heartbeat requests follow their entries,
  // the metadata group's and every reply go ahead.
  std::vector<raft::message> lanes[2];
  for (auto* out : {&heartbeat_requests_out_, &heartbeat_responses_out_}) {
    for (auto& [to, list] : *out) {
      for (auto& m : list)
        lanes[lane_of(m) == net::lane::bulk ? 0 : 1].push_back(std::move(m));
      list.clear();
      for (int k = 0; k < 2; ++k) {
        if (lanes[k].empty()) continue;
        const auto bytes = raft::codec::encode_heartbeat_frame(lanes[k]);
        (void)transport_->send(to, heartbeat_frame, bytes,
                               k == 0 ? net::lane::bulk : net::lane::control);
        lanes[k].clear();
      }
    }
  }
}

void broker::route_raft(const raft::message& m) {
  const uint64_t group = m.group.value();
  if (group == 0) {
    controller_->step(m);
    return;
  }
  auto it = group_shard_.find(group);
  if (it == group_shard_.end()) return;  // not (yet) hosted here; the sender retries
  const unsigned k = it->second;
  auto deliver = [this, k, m] {
    auto g = shards_[k].groups.find(m.group.value());
    if (g != shards_[k].groups.end() && g->second.host) g->second.host->step(m);
  };
  if (k == 0)
    deliver();
  else
    shards_[k].runner->post(deliver);
}

void broker::on_frame(net::node_id from, uint16_t type, std::span<const std::byte> payload) {
  if (from < 0) return handle_client(from, type, payload);
  switch (type) {
    case raft_frame: {
      auto m = raft::codec::decode(payload);
      if (!m)
        return log_line("dropped a raft message from broker " + std::to_string(from) + ": " +
                        m.err().describe());
      return route_raft(*m);
    }
    case heartbeat_frame: {
      auto list = raft::codec::decode_heartbeat_frame(payload);
      if (!list)
        return log_line("dropped heartbeats from broker " + std::to_string(from) + ": " +
                        list.err().describe());
      for (const auto& m : *list)
        route_raft(m);
      return;
    }
    case controller_request_frame:
      return on_controller_request(from, payload);
    case controller_response_frame:
      return on_controller_response(payload);
    case leader_report_frame:
      return on_leader_report(payload);
    default:
      log_line("ignored frame type " + std::to_string(type) + " from broker " +
               std::to_string(from));
  }
}

// ---------------------------------------------------------------------------------------------
// Controller requests: registration and topic changes reach the controller from any broker.

void broker::ask_controller(uint8_t kind, std::vector<std::byte> body,
                            std::function<void(bool, const std::string&)> done) {
  ask_controller_for(kind, std::move(body),
                     [done = std::move(done)](const apply_result& r) { done(r.ok, r.error); });
}

void broker::ask_controller_for(uint8_t kind, std::vector<std::byte> body,
                                controller_result_fn reply, net::node_id origin) {
  auto done = [reply](bool ok, const std::string& error) {
    apply_result r;
    r.ok = ok;
    r.error = error;
    reply(r);
  };
  if (controller_->is_leader()) {
    net::wire_reader r(body);
    switch (kind) {
      case kind_command:
        return controller_->submit(std::move(body), reply);
      case kind_create_topic: {
        const std::string name = r.get_string(249);
        const int32_t partitions = r.get<int32_t>();
        const int16_t rf = r.get<int16_t>();
        std::map<std::string, std::string> configs;
        const uint32_t n = r.get_count(8);
        for (uint32_t i = 0; i < n && r.ok(); ++i) {
          std::string key = r.get_string(255);
          configs[key] = r.get_string(4096);
        }
        if (!r.ok()) return done(false, "malformed create_topic");
        return controller_->create_topic(name, partitions, rf, configs, live_brokers(), reply);
      }
      case kind_create_partitions: {
        const std::string name = r.get_string(249);
        const int32_t total = r.get<int32_t>();
        if (!r.ok()) return done(false, "malformed create_partitions");
        return controller_->create_partitions(name, total, live_brokers(), reply);
      }
      case kind_heartbeat: {
        // The link's peer (or this broker, for its own heartbeat) must be the broker the
        // heartbeat names.
        std::string why;
        const auto h = decode_broker_heartbeat(body, origin < 0 ? config_.node_id : origin, why);
        if (!h) {
          log_line("refused a heartbeat: " + why);
          return done(false, why);
        }
        const auto now = std::chrono::steady_clock::now();
        broker_liveness& l = liveness_for_term();
        if (l.heartbeat(controller_->state(), h->broker, h->shutting_down, now))
          propose_fencing(h->broker, false, "it heartbeats again");
        if (h->shutting_down) {
          // A controlled shutdown: fenced now rather than a session timeout from now.
          for (int32_t id : l.to_fence(controller_->state(), config_.node_id, now))
            propose_fencing(id, true,
                            id == h->broker ? "shutting down" : "no heartbeat for a session");
        }
        return done(true, {});
      }
      case kind_delete_topic: {
        const std::string name = r.get_string(249);
        if (!r.ok()) return done(false, "malformed delete_topic");
        if (!controller_->state().topic(name)) return done(false, "no topic " + name);
        return controller_->submit(encode_delete_topic(name), reply);
      }
      default:
        return done(false, "unknown controller request");
    }
  }
  int32_t target = controller_->leader();
  if (target < 0 || target == config_.node_id) {
    target = config_.seeds[seed_cursor_++ % config_.seeds.size()].node_id;
    if (target == config_.node_id) return done(false, "not_controller: no controller elected yet");
  }
  const uint64_t id = next_request_id_++;
  std::vector<std::byte> frame;
  net::wire_writer w(frame);
  w.put<uint64_t>(id);
  w.put<uint8_t>(kind);
  w.put_bytes(body);
  if (!transport_->send(target, controller_request_frame, frame, net::lane::control))
    return done(false, "not_controller: broker " + std::to_string(target) + " is unreachable");
  controller_waiters_[id] = std::move(reply);
  // A request that gets no answer (a lost link, a crashed controller) fails after a bound.
  auto timer =
      std::make_shared<boost::asio::steady_timer>(shards_[0].runner->io(), std::chrono::seconds(5));
  timer->async_wait([this, id, timer](const boost::system::error_code&) {
    auto it = controller_waiters_.find(id);
    if (it == controller_waiters_.end()) return;
    auto fn = std::move(it->second);
    controller_waiters_.erase(it);
    apply_result r;
    r.ok = false;
    r.error = "timed_out: the controller did not answer";
    fn(r);
  });
}

void broker::request_create_topic(const std::string& name, int32_t partitions, int16_t rf,
                                  const std::map<std::string, std::string>& configs,
                                  controller_done done) {
  std::vector<std::byte> body;
  net::wire_writer w(body);
  w.put_string(name);
  w.put<int32_t>(partitions);
  w.put<int16_t>(rf);
  w.put<uint32_t>(static_cast<uint32_t>(configs.size()));
  for (const auto& [k, v] : configs) {
    w.put_string(k);
    w.put_string(v);
  }
  ask_controller(kind_create_topic, std::move(body), std::move(done));
}

void broker::request_delete_topic(const std::string& name, controller_done done) {
  std::vector<std::byte> body;
  net::wire_writer w(body);
  w.put_string(name);
  ask_controller(kind_delete_topic, std::move(body), std::move(done));
}

void broker::request_create_partitions(const std::string& name, int32_t total,
                                       controller_done done) {
  std::vector<std::byte> body;
  net::wire_writer w(body);
  w.put_string(name);
  w.put<int32_t>(total);
  ask_controller(kind_create_partitions, std::move(body), std::move(done));
}

std::string broker::cluster_id() const {
  // Every broker of a cluster is started with the same controller voters.
  uint64_t h = 1469598103934665603ull;
  for (const seed& sd : config_.seeds) {
    for (char ch : std::to_string(sd.node_id) + "@" + sd.rpc.to_string() + ",")
      h = (h ^ static_cast<uint8_t>(ch)) * 1099511628211ull;
  }
  char out[24];
  std::snprintf(out, sizeof out, "keel-%016llx", static_cast<unsigned long long>(h));
  return out;
}

bool broker::broker_alive(int32_t id) const {
  return controller_->state().broker_unfenced(id);
}

void broker::send_broker_heartbeat(bool shutting_down) {
  // Only a registered broker can be fenced or unfenced; registration comes first.
  if (!controller_->state().brokers().count(config_.node_id)) return;
  if (config_.fault_injection_pause_heartbeats && !shutting_down) {
    // Fault injection (tests only): no heartbeats while the pause file exists, as if this
    // broker were cut off from the controller leader's heartbeat handling.
    const bool paused = ::access(heartbeat_pause_file().c_str(), F_OK) == 0;
    if (paused != heartbeats_paused_) {
      heartbeats_paused_ = paused;
      log_line(std::string("fault injection: heartbeats ") + (paused ? "paused" : "resumed"));
    }
    if (paused) return;
  }
  auto body = encode_broker_heartbeat({config_.node_id, shutting_down});
  // A lost heartbeat needs no retry: the next one follows within an interval, and the session
  // spans at least two of them.
  ask_controller(kind_heartbeat, std::move(body), [this](bool ok, const std::string&) {
    if (ok) heartbeat_acked_ = std::chrono::steady_clock::now();
  });
}

std::string broker::heartbeat_pause_file() const {
  return config_.data_dir + "/fault-injection.pause-heartbeats";
}

void broker::check_self_fenced() {
  const auto now = std::chrono::steady_clock::now();
  const metadata_state& m = controller_->state();
  const auto self = m.brokers().find(config_.node_id);
  const char* why = nullptr;
  if (self == m.brokers().end()) {
    heartbeat_acked_ = now;  // not registered: nothing to fence yet, and the session starts later
  } else if (self->second.fenced) {
    why = "the metadata has fenced it";
  } else if (now - heartbeat_acked_ >=
             std::chrono::milliseconds(config_.broker_session_timeout_ms)) {
    // Cut off from the controller leader: it fences this broker (or already has, in metadata
    // this broker no longer receives), so this broker acts on it now.
    why = "no heartbeat acknowledged for a session";
  }
  if ((why != nullptr) != self_fenced_) {
    self_fenced_ = why != nullptr;
    log_line(self_fenced_ ? std::string("this broker is fenced (") + why +
                                "): it hands its leaderships to unfenced replicas"
                          : std::string("this broker is unfenced"));
  }
  // Peers' own word lapses with their reports.
  for (auto it = peers_self_fenced_.begin(); it != peers_self_fenced_.end();)
    it = now - it->second > leader_entry_ttl ? peers_self_fenced_.erase(it) : std::next(it);
  post_fenced();
}

void broker::post_fenced() {
  std::set<int32_t> fenced;
  for (const auto& [id, b] : controller_->state().brokers())
    if (b.fenced) fenced.insert(id);
  for (const auto& [id, seen] : peers_self_fenced_)
    fenced.insert(id);
  if (self_fenced_) fenced.insert(config_.node_id);
  if (fenced == fenced_posted_) return;
  fenced_posted_ = fenced;
  shards_[0].fenced = fenced;
  for (unsigned k = 1; k < shards_.size(); ++k)
    shards_[k].runner->post([this, k, fenced] { shards_[k].fenced = fenced; });
}

void broker::hand_off_leaderships(unsigned k) {
  auto& s = shards_[k];
  for (auto& [g, r] : s.groups) {
    partition_host& h = *r.host;
    if (!h.is_leader() || h.core().transfer_target() != raft::node_id::none()) continue;
    // The most advanced unfenced voter among those in sync (matched the commit index).
    raft::node_id best = raft::node_id::none();
    raft::offset best_match = raft::offset::none();
    for (raft::node_id n : h.core().config().voters) {
      if (n == h.core().self() || s.fenced.count(static_cast<int32_t>(n.value()))) continue;
      const raft::progress* p = h.core().progress_of(n);
      if (!p || p->match < h.core().commit()) continue;
      if (best == raft::node_id::none() || p->match > best_match) best = n, best_match = p->match;
    }
    if (best == raft::node_id::none()) continue;  // nobody to hand to yet; the next round retries
    log_line("partition " + r.topic + "-" + std::to_string(r.partition) +
             ": this broker is fenced, handing leadership to broker " +
             std::to_string(best.value()));
    (void)h.transfer_leadership(best);
  }
}

broker_liveness& broker::liveness_for_term() {
  KEEL_ASSERT(controller_->is_leader(), "only the controller leader tracks heartbeats");
  const int64_t term = static_cast<int64_t>(controller_->host().core().term().value());
  if (!liveness_)
    liveness_ = std::make_unique<broker_liveness>(
        std::chrono::milliseconds(config_.broker_session_timeout_ms));
  if (term != liveness_term_) {
    // A new controller term: no heartbeat history, so every broker gets a session of grace.
    liveness_term_ = term;
    liveness_->elected(std::chrono::steady_clock::now());
  }
  return *liveness_;
}

void broker::check_liveness() {
  if (!controller_->is_leader()) {
    liveness_term_ = -1;
    return;
  }
  broker_liveness& l = liveness_for_term();
  for (int32_t id :
       l.to_fence(controller_->state(), config_.node_id, std::chrono::steady_clock::now()))
    propose_fencing(id, true, "no heartbeat for a session");
}

void broker::propose_fencing(int32_t id, bool fence, const char* why) {
  log_line(std::string(fence ? "fencing" : "unfencing") + " broker " + std::to_string(id) + ": " +
           why);
  controller_->submit(fence ? encode_fence_broker(id) : encode_unfence_broker(id),
                      [this, id, fence](const apply_result& r) {
                        if (liveness_) liveness_->done(id);
                        if (!r.ok)
                          log_line(std::string(fence ? "fencing" : "unfencing") + " broker " +
                                   std::to_string(id) + " failed: " + r.error);
                      });
}

void broker::on_controller_request(net::node_id from, std::span<const std::byte> payload) {
  net::wire_reader r(payload);
  const uint64_t id = r.get<uint64_t>();
  const uint8_t kind = r.get<uint8_t>();
  auto body = r.get_bytes(1 << 20);
  if (!r.ok()) return log_line("malformed controller request from broker " + std::to_string(from));
  // The response: u64 id, u8 ok, str error, then u8 has_block [i64 first, i64 size] (the
  // producer id block of allocate_producer_ids).
  auto answer = [this, from, id](const apply_result& a) {
    std::vector<std::byte> out;
    net::wire_writer w(out);
    w.put<uint64_t>(id);
    w.put<uint8_t>(a.ok);
    w.put_string(a.error);
    w.put<uint8_t>(a.allocated.has_value());
    if (a.allocated) {
      w.put<int64_t>(a.allocated->first);
      w.put<int64_t>(a.allocated->size);
    }
    (void)transport_->send(from, controller_response_frame, out, net::lane::control);
  };
  if (!controller_->is_leader()) {
    const int32_t l = controller_->leader();
    apply_result r;
    r.ok = false;
    r.error = "not_controller: the controller is " + std::to_string(l);
    return answer(r);
  }
  ask_controller_for(kind, std::vector<std::byte>(body.begin(), body.end()), answer, from);
}

void broker::on_controller_response(std::span<const std::byte> payload) {
  net::wire_reader r(payload);
  const uint64_t id = r.get<uint64_t>();
  apply_result a;
  a.ok = r.get<uint8_t>() != 0;
  a.error = r.get_string(1 << 16);
  if (r.remaining() > 0 && r.get<uint8_t>() != 0) {
    producer_id_block b;
    b.first = r.get<int64_t>();
    b.size = r.get<int64_t>();
    a.allocated = b;
  }
  if (!r.ok()) return;
  auto it = controller_waiters_.find(id);
  if (it == controller_waiters_.end()) return;
  auto fn = std::move(it->second);
  controller_waiters_.erase(it);
  fn(a);
}

void broker::next_producer_id(std::function<void(int64_t, const std::string&)> done) {
  auto& p = producer_ids_;
  if (p.next < p.end) return done(p.next++, {});
  p.waiters.push_back(std::move(done));
  if (p.fetching) return;
  p.fetching = true;
  ask_controller_for(kind_command,
                     encode_allocate_producer_ids(config_.node_id, producer_id_block_size),
                     [this](const apply_result& a) {
                       auto& p = producer_ids_;
                       p.fetching = false;
                       std::string error = a.ok ? "" : a.error;
                       if (a.ok && (!a.allocated || a.allocated->size <= 0))
                         error = "the controller allocated no producer ids";
                       if (error.empty()) {
                         p.next = a.allocated->first;
                         p.end = a.allocated->first + a.allocated->size;
                       } else {
                         log_line("producer id block not allocated: " + error);
                       }
                       auto waiters = std::move(p.waiters);
                       p.waiters.clear();
                       for (auto& w : waiters) {
                         if (p.next < p.end)
                           w(p.next++, {});
                         else
                           w(-1, error.empty() ? "producer id block exhausted" : error);
                       }
                       // Waiters beyond the block's size (more than 1000 at once) ask again.
                     });
}

void broker::register_self() {
  broker_info self{config_.node_id, config_.kafka_address(), config_.rpc_address(),
                   static_cast<uint32_t>(shards_.size())};
  auto it = controller_->state().brokers().find(config_.node_id);
  if (it != controller_->state().brokers().end() && it->second.same_registration(self)) {
    registered_ = true;
    return;
  }
  ask_controller(kind_command, encode_register_broker(self), [](bool ok, const std::string& error) {
    if (!ok && error.rfind("not_controller", 0) != 0)
      log_line("registration not accepted yet: " + error);
  });
}

std::vector<int32_t> broker::live_brokers() const {
  const metadata_state& m = controller_->state();
  std::vector<int32_t> out = m.unfenced_brokers();
  // The leader's own broker runs the controller, so it is alive even before the record that
  // unfences it (after a restart) has applied.
  if (controller_->is_leader() && m.brokers().count(config_.node_id) &&
      !m.broker_unfenced(config_.node_id)) {
    out.push_back(config_.node_id);
    std::sort(out.begin(), out.end());
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Partitions: the metadata says which replicas this broker hosts; each shard follows it.

void broker::reconcile() {
  const metadata_state& m = controller_->state();
  // Peers learnt from the metadata (brokers that are not seeds).
  for (const auto& [id, b] : m.brokers())
    transport_->add_peer(id, b.rpc.host, b.rpc.port);
  post_fenced();
  // A registered broker outside the metadata group joins it as a learner (controller only).
  if (controller_->is_leader()) {
    raft::membership cfg = controller_->host().core().config();
    bool add = false;
    for (const auto& [id, b] : m.brokers()) {
      const raft::node_id n(static_cast<uint64_t>(id));
      if (!cfg.contains(n)) {
        cfg.learners.push_back(n);
        add = true;
      }
    }
    if (add && cfg.normalize())
      (void)controller_->host().core().propose_config(cfg), controller_->host().process_ready();
  }
  std::map<uint64_t, desired_replica> desired;
  for (const auto& [name, t] : m.topics()) {
    for (size_t p = 0; p < t.partitions.size(); ++p) {
      const auto& reps = t.partitions[p];
      for (const replica& r : reps) {
        if (r.broker != config_.node_id) continue;
        desired_replica d{name,
                          static_cast<int32_t>(p),
                          {},
                          r.shard % static_cast<uint32_t>(shards_.size()),
                          t.configs};
        for (const replica& x : reps)
          d.replicas.push_back(x.broker);
        desired.emplace(t.groups[p], std::move(d));
      }
    }
  }
  for (auto it = group_shard_.begin(); it != group_shard_.end();) {
    if (!desired.count(it->first)) {
      const unsigned k = it->second;
      const uint64_t g = it->first;
      // Drops run before the ensures below on every shard: shard 0's inline, the others' posted
      // ahead of them. A topic deleted and created again in one change reuses the log's name,
      // and the new group must not open the old log just before it is removed.
      if (k == 0)
        drop_replica(k, g);
      else
        shards_[k].runner->post([this, k, g] { drop_replica(k, g); });
      it = group_shard_.erase(it);
    } else {
      ++it;
    }
  }
  for (auto& [g, d] : desired) {
    if (group_shard_.count(g)) continue;
    const unsigned k = d.shard;
    group_shard_[g] = k;
    auto work = [this, k, g = g, d = d]() mutable { ensure_replica(k, g, std::move(d)); };
    if (k == 0)
      work();
    else
      shards_[k].runner->post(std::move(work));
  }
  if (!orphans_swept_ && m.barrier_of(config_.node_id) == barrier_nonce_)
    sweep_after_barrier(desired);
}

void broker::send_metadata_barrier() {
  if (barrier_asked_) return;
  barrier_asked_ = true;
  ask_controller(kind_command, encode_metadata_barrier(config_.node_id, barrier_nonce_),
                 [this](bool ok, const std::string&) {
                   // Committed: it reaches this broker's metadata in time (entries or a
                   // snapshot). Not committed (no controller yet, a lost link): asked again.
                   barrier_asked_ = ok;
                 });
}

void broker::sweep_after_barrier(const std::map<uint64_t, desired_replica>& desired) {
  orphans_swept_ = true;
  log_line("metadata barrier applied at offset " + std::to_string(controller_->applied().value()) +
           ": the metadata holds everything applied before this start; deleting the logs it "
           "assigns to no replica here");
  std::vector<std::set<std::string>> keep(shards_.size());
  keep[0].insert(metadata_log_name);
  for (const auto& [g, d] : desired)
    keep[d.shard].insert(partition_log_name(d.topic, d.partition));
  for (unsigned k = 0; k < shards_.size(); ++k) {
    // Posted behind the drops and ensures reconcile() posted before it, ahead of later ones.
    if (k == 0)
      sweep_orphans(0, keep[0]);
    else
      shards_[k].runner->post([this, k, names = std::move(keep[k])] { sweep_orphans(k, names); });
  }
}

void broker::sweep_orphans(unsigned k, const std::set<std::string>& keep) {
  auto& s = shards_[k];
  std::set<std::string> in_use;
  for (const auto& [g, r] : s.groups)
    in_use.insert(partition_log_name(r.topic, r.partition));
  for (const std::string& name : s.logs->names()) {
    if (keep.count(name)) continue;
    if (in_use.count(name)) {
      // Cannot happen (a replica's drop runs before the sweep); if it does, a log in use is
      // never pulled from under its replica.
      log_line("bug: log " + name + " runs a replica the metadata does not name; kept");
      continue;
    }
    log_line("log " + name + " on shard " + std::to_string(k) +
             " is no replica of this broker in the metadata (a deleted topic's, its removal cut "
             "short by a crash); deleting it");
    if (auto r = s.logs->remove(name); !r)
      log_line("cannot delete log " + name + ": " + r.err().describe());
  }
}

void broker::ensure_replica(unsigned k, uint64_t group, desired_replica d) {
  auto& s = shards_[k];
  if (s.groups.count(group)) return;
  const std::string name = partition_log_name(d.topic, d.partition);
  auto l = s.logs->open_log(name, log_config_for(d.configs));
  if (!l)
    return log_line("cannot open the log of " + d.topic + "-" + std::to_string(d.partition) + ": " +
                    l.err().describe());
  if (auto owner = raft_state_store::stored_group((*l)->dir());
      owner && *owner != 0 && *owner != group) {
    // A replica of a deleted topic of the same name, whose deletion this broker missed (it was
    // down): its log and term history are not this group's, and a group started on them could
    // win an election with entries the others never had. It goes; the new replica starts empty.
    log_line("the log of " + name + " belongs to raft group " + std::to_string(*owner) +
             " (a deleted topic), not " + std::to_string(group) + "; deleting it");
    if (auto r = s.logs->remove(name); !r)
      return log_line("cannot delete log " + name + ": " + r.err().describe());
    l = s.logs->open_log(name, log_config_for(d.configs));
    if (!l) return log_line("cannot open the log of " + name + ": " + l.err().describe());
  }
  partition_host_options o;
  o.core = core_options(group);
  o.follower_cached_tail_bytes = config_.follower_cached_tail_bytes;
  // Data batches are Kafka record batches: their header names the newest record's time.
  o.max_timestamp_of = [](const raft::batch& b) {
    if (b.type != raft::batch_type::data) return engine::timestamp_ms::none();
    auto h = net::kafka::parse_header(std::span(b.payload.data(), b.payload.size()));
    return h ? engine::timestamp_ms(h->max_timestamp) : engine::timestamp_ms::none();
  };
  for (int32_t r : d.replicas)
    o.initial_config.voters.push_back(raft::node_id(static_cast<uint64_t>(r)));
  o.initial_config.normalize();
  auto h = partition_host::open(**l, s.runner->ring(), std::move(o), sink_for(k), *s.random);
  if (!h)
    return log_line("cannot start raft group " + std::to_string(group) + ": " + h.err().describe());
  replica_state rs;
  rs.topic = d.topic;
  rs.partition = d.partition;
  rs.replicas = d.replicas;
  rs.configs = d.configs;
  rs.log = *l;
  rs.host = std::move(h).value();
  replica_state& stored = s.groups.emplace(group, std::move(rs)).first->second;
  if (stored.topic == offsets_topic_name) {
    group_coordinator_options go;
    go.initial_rebalance_delay_ms = config_.group_initial_rebalance_delay_ms;
    go.min_session_timeout_ms = config_.group_min_session_timeout_ms;
    go.max_session_timeout_ms = config_.group_max_session_timeout_ms;
    go.offsets_retention_ms = config_.offsets_retention_minutes * 60 * 1000;
    stored.coordinator = std::make_unique<group_coordinator>(*stored.host, go);
  }
  stored.host->on_commit([this, k, group, &stored](raft::offset) {
    if (stored.coordinator) stored.coordinator->on_commit();
    if (kafka_) kafka_->follow_producers(k, group);
    auto waiters = std::move(stored.commit_waiters);
    stored.commit_waiters.clear();
    for (auto& w : waiters)
      if (!*w.cancelled) w.wake();
  });
}

void broker::drop_replica(unsigned k, uint64_t group) {
  auto& s = shards_[k];
  auto it = s.groups.find(group);
  if (it == s.groups.end()) return;
  const std::string name = partition_log_name(it->second.topic, it->second.partition);
  it->second.coordinator.reset();
  it->second.host.reset();
  s.groups.erase(it);
  if (auto r = s.logs->remove(name); !r)
    log_line("cannot delete log " + name + ": " + r.err().describe());
}

// ---------------------------------------------------------------------------------------------
// Ticks, leader reports, leader balancing

void broker::apply_retention(unsigned k) {
  auto& s = shards_[k];
  for (auto& [g, r] : s.groups) {
    // __consumer_offsets is compacted by its coordinator, never deleted by age or size.
    if (r.coordinator || r.topic == offsets_topic_name || r.retention_in_flight) continue;
    auto target = r.log->retention_start();
    if (!target) {
      log_line("retention of " + r.topic + "-" + std::to_string(r.partition) + ": " +
               target.err().describe());
      continue;
    }
    // Only a committed prefix may go (raft::core::log_start_for); the rest waits for a later
    // check.
    const raft::offset start = std::min(to_raft(*target), r.host->high_watermark().next());
    if (start <= to_raft(r.log->log_start())) continue;
    r.retention_in_flight = true;
    r.host->compact(start, [this, k, g = g](const std::string& error) {
      auto it = shards_[k].groups.find(g);
      if (it == shards_[k].groups.end()) return;
      it->second.retention_in_flight = false;
      if (!error.empty())
        log_line("retention of " + it->second.topic + "-" + std::to_string(it->second.partition) +
                 ": " + error);
    });
  }
}

void broker::tick_shard(unsigned k) {
  auto& s = shards_[k];
  if (k == 0) tick_shard0();
  for (auto& [g, r] : s.groups) {
    r.host->tick();
    if (r.coordinator) r.coordinator->tick();
    if (r.host->is_leader() != r.was_leader) {
      r.was_leader = !r.was_leader;
      const raft::core& core = r.host->core();
      log_line("partition " + r.topic + "-" + std::to_string(r.partition) + ": " +
               (r.was_leader ? "leader" : "no longer leader") + " in term " +
               std::to_string(core.term().value()));
    }
  }
  s.logs->tick();
  if (const int64_t now = steady_ms();
      now - s.last_retention_ms >= config_.retention_check_interval_ms) {
    s.last_retention_ms = now;
    apply_retention(k);
  }
  const uint64_t ticks = s.runner->ticks();
  if (ticks % leader_report_ticks == 0) {
    std::vector<std::tuple<uint64_t, int64_t, int64_t, std::vector<int32_t>>> led;
    for (auto& [g, r] : s.groups) {
      if (!r.host->is_leader()) continue;
      const raft::core& core = r.host->core();
      std::vector<int32_t> isr;
      for (int32_t b : r.replicas) {
        const raft::progress* p = core.progress_of(raft::node_id(static_cast<uint64_t>(b)));
        if (b == config_.node_id || (p && p->match >= r.isr_mark)) isr.push_back(b);
      }
      r.isr_mark = r.host->high_watermark();
      led.emplace_back(g, core.term().value(), r.host->high_watermark().value(), std::move(isr));
    }
    auto publish = [this, led = std::move(led)] {
      std::vector<std::byte> out;
      net::wire_writer w(out);
      w.put<int32_t>(config_.node_id);
      w.put<uint32_t>(static_cast<uint32_t>(led.size()));
      for (auto& [g, t, hw, isr] : led) {
        w.put<uint64_t>(g);
        w.put<int64_t>(t);
        w.put<int64_t>(hw);
        w.put<uint32_t>(static_cast<uint32_t>(isr.size()));
        for (int32_t b : isr)
          w.put<int32_t>(b);
      }
      w.put<uint8_t>(self_fenced_ ? 1 : 0);
      on_leader_report(out);
      for (const auto& [id, b] : controller_->state().brokers())
        if (id != config_.node_id)
          (void)transport_->send(id, leader_report_frame, out, net::lane::control);
    };
    if (k == 0)
      publish();
    else
      shards_[0].runner->post(std::move(publish));
  }
  const bool self_fenced = s.fenced.count(config_.node_id) > 0;
  if (ticks % fenced_hand_off_ticks == 0 && self_fenced && !stopping_) hand_off_leaderships(k);
  if (ticks % balance_ticks == 0 && !stopping_ && !self_fenced) {
    // Leader balancing: a leader that is not its partition's preferred replica hands over to it
    // once that replica has caught up (never to a fenced one, and not while this broker is
    // fenced: it is handing its leaderships away).
    for (auto& [g, r] : s.groups) {
      if (!r.host->is_leader() || r.replicas.empty() || r.replicas.front() == config_.node_id ||
          s.fenced.count(r.replicas.front()))
        continue;
      const raft::node_id preferred(static_cast<uint64_t>(r.replicas.front()));
      const raft::progress* p = r.host->core().progress_of(preferred);
      if (p && p->match == r.host->core().log().last())
        (void)r.host->transfer_leadership(preferred);
    }
  }
}

void broker::tick_shard0() {
  ++shard0_ticks_;
  controller_->tick();
  if (!registered_ && shard0_ticks_ % 10 == 0) register_self();
  if (!orphans_swept_ && shard0_ticks_ % 10 == 0) send_metadata_barrier();
  if (registered_ && shard0_ticks_ % 500 == 0) registered_ = false;  // re-check now and then
  const auto heartbeat_ticks =
      static_cast<uint64_t>(std::max(1, config_.broker_heartbeat_interval_ms / config_.tick_ms));
  // A stopping broker has said it is leaving (stop()); a normal heartbeat would unfence it.
  if (shard0_ticks_ % heartbeat_ticks == 0 && !stopping_) send_broker_heartbeat(false);
  if (shard0_ticks_ % liveness_check_ticks == 0) {
    check_liveness();
    check_self_fenced();
  }
}

void broker::on_leader_report(std::span<const std::byte> payload) {
  net::wire_reader r(payload);
  const int32_t from = r.get<int32_t>();
  const uint32_t n = r.get_count(28);
  const auto now = std::chrono::steady_clock::now();
  for (uint32_t i = 0; i < n && r.ok(); ++i) {
    const uint64_t g = r.get<uint64_t>();
    const int64_t term = r.get<int64_t>();
    const int64_t hw = r.get<int64_t>();
    std::vector<int32_t> isr(r.get_count(4));
    for (auto& b : isr)
      b = r.get<int32_t>();
    if (!r.ok()) break;
    auto& e = leaders_[g];
    if (term >= e.term || now - e.seen > leader_entry_ttl)
      e = leader_entry{from, term, hw, std::move(isr), now};
  }
  // Then u8 flags (bit 0: the sender counts itself fenced); older senders end here.
  if (!r.ok() || from == config_.node_id || r.remaining() == 0) return;
  const bool self_fenced = (r.get<uint8_t>() & 1) != 0;
  if (!r.ok()) return;
  const bool was = peers_self_fenced_.count(from) > 0;
  if (self_fenced)
    peers_self_fenced_[from] = now;
  else
    peers_self_fenced_.erase(from);
  if (was != self_fenced) post_fenced();
}

int32_t broker::leader_of(uint64_t group) const {
  auto it = leaders_.find(group);
  if (it == leaders_.end() || std::chrono::steady_clock::now() - it->second.seen > leader_entry_ttl)
    return -1;
  return it->second.leader;
}

// ---------------------------------------------------------------------------------------------
// Client requests (the keel tool, tests)

void broker::handle_client(net::node_id session, uint16_t type,
                           std::span<const std::byte> payload) {
  using net::admin_error;
  using net::admin_type;
  auto reply = [this, session](admin_type t, const std::vector<std::byte>& bytes) {
    (void)transport_->send(session, static_cast<uint16_t>(t), bytes);
  };
  switch (static_cast<admin_type>(type)) {
    case admin_type::describe_cluster_request: {
      auto c = net::decode_correlation(payload);
      if (!c) return;
      net::describe_cluster_response out;
      out.correlation = *c;
      out.controller = controller_->leader();
      const metadata_state& m = controller_->state();
      for (const auto& [id, b] : m.brokers())
        out.brokers.push_back({id, b.kafka.host, b.kafka.port, b.rpc.host, b.rpc.port, !b.fenced});
      for (const auto& [name, t] : m.topics()) {
        net::topic_status ts;
        ts.name = name;
        for (size_t p = 0; p < t.partitions.size(); ++p) {
          net::partition_status ps;
          ps.partition = static_cast<int32_t>(p);
          ps.group = t.groups[p];
          for (const replica& r : t.partitions[p])
            ps.replicas.push_back(r.broker);
          if (auto it = leaders_.find(t.groups[p]);
              it != leaders_.end() && leader_of(t.groups[p]) >= 0) {
            ps.leader = it->second.leader;
            ps.leader_term = it->second.term;
            ps.high_watermark = it->second.high_watermark;
          }
          ts.partitions.push_back(std::move(ps));
        }
        out.topics.push_back(std::move(ts));
      }
      return reply(admin_type::describe_cluster_response, net::encode(out));
    }
    case admin_type::create_topic_request:
    case admin_type::delete_topic_request: {
      const bool create = static_cast<admin_type>(type) == admin_type::create_topic_request;
      uint64_t correlation = 0;
      std::vector<std::byte> body;
      net::wire_writer w(body);
      if (create) {
        auto req = net::decode_create_topic_request(payload);
        if (!req) return;
        correlation = req->correlation;
        w.put_string(req->name);
        w.put<int32_t>(req->partitions);
        w.put<int16_t>(req->replication_factor);
        w.put<uint32_t>(0);  // no configs
      } else {
        auto req = net::decode_delete_topic_request(payload);
        if (!req) return;
        correlation = req->first;
        w.put_string(req->second);
      }
      ask_controller(create ? kind_create_topic : kind_delete_topic, std::move(body),
                     [reply, correlation](bool ok, const std::string& error) {
                       net::topic_response r;
                       r.correlation = correlation;
                       if (!ok) {
                         r.message = error;
                         r.error = error.find("already exists") != std::string::npos
                                       ? admin_error::topic_exists
                                   : error.find("alive brokers") != std::string::npos
                                       ? admin_error::not_enough_brokers
                                   : error.find("no topic") != std::string::npos
                                       ? admin_error::unknown_topic
                                   : error.rfind("not_controller", 0) == 0 ||
                                           error.find("not the controller") != std::string::npos ||
                                           error.find("not committed") != std::string::npos
                                       ? admin_error::not_controller
                                   : error.rfind("timed_out", 0) == 0
                                       ? admin_error::timed_out
                                       : admin_error::invalid_request;
                       }
                       reply(admin_type::topic_response, net::encode(r));
                     });
      return;
    }
    case admin_type::produce_request:
    case admin_type::fetch_request: {
      const bool produce = static_cast<admin_type>(type) == admin_type::produce_request;
      std::optional<net::produce_request> preq;
      std::optional<net::fetch_request> freq;
      std::string topic;
      int32_t partition = 0;
      uint64_t correlation = 0;
      if (produce) {
        preq = net::decode_produce_request(payload);
        if (!preq) return;
        topic = preq->topic, partition = preq->partition, correlation = preq->correlation;
      } else {
        freq = net::decode_fetch_request(payload);
        if (!freq) return;
        topic = freq->topic, partition = freq->partition, correlation = freq->correlation;
      }
      const topic_info* t = controller_->state().topic(topic);
      auto fail = [&](admin_error e, int32_t hint) {
        if (produce) {
          if (preq->acks == 0) return;
          net::produce_response r{correlation, e, hint, -1};
          reply(admin_type::produce_response, net::encode(r));
        } else {
          net::fetch_response r;
          r.correlation = correlation;
          r.error = e;
          r.leader_hint = hint;
          reply(admin_type::fetch_response, net::encode(r));
        }
      };
      if (!t || partition < 0 || static_cast<size_t>(partition) >= t->partitions.size())
        return fail(admin_error::unknown_topic, -1);
      const uint64_t group = t->groups[static_cast<size_t>(partition)];
      auto where = group_shard_.find(group);
      if (where == group_shard_.end()) return fail(admin_error::not_leader, leader_of(group));
      const unsigned k = where->second;
      // The partition's shard does the work; the answer comes back to shard 0's session.
      auto back = [this, reply](net::admin_type at, std::vector<std::byte> bytes) {
        shards_[0].runner->post([reply, at, bytes = std::move(bytes)] { reply(at, bytes); });
      };
      const int32_t hint = leader_of(group);
      auto work = [this, k, group, produce, preq = std::move(preq), freq = std::move(freq), back,
                   hint]() mutable {
        auto it = shards_[k].groups.find(group);
        if (produce) {
          net::produce_response r{preq->correlation, admin_error::none, -1, -1};
          if (it == shards_[k].groups.end() || !it->second.host->is_leader()) {
            r.error = admin_error::not_leader;
            r.leader_hint = it == shards_[k].groups.end()
                                ? hint
                                : static_cast<int32_t>(it->second.host->core().leader().value());
            if (r.leader_hint == 0) r.leader_hint = -1;  // raft's node 0 is nobody
            if (preq->acks != 0) back(admin_type::produce_response, net::encode(r));
            return;
          }
          const int16_t acks = preq->acks;
          auto b = it->second.host->propose(raft::batch_type::data, preq->offset_count,
                                            raft::shared_bytes(std::move(preq->payload)),
                                            [r, back, acks](const proposal_outcome& o) mutable {
                                              if (acks == 0) return;
                                              r.error = o.committed ? admin_error::none
                                                                    : admin_error::not_leader;
                                              r.base_offset = o.base.value();
                                              back(admin_type::produce_response, net::encode(r));
                                            });
          if (!b && acks != 0) {
            static std::atomic<int> logged{0};  // shards share it: a few lines, not a flood
            if (logged++ < 5) log_line("propose refused: " + b.err().describe());
            r.error =
                b.err().code == raft::errc::busy ? admin_error::busy : admin_error::not_leader;
            back(admin_type::produce_response, net::encode(r));
          }
          return;
        }
        net::fetch_response r;
        r.correlation = freq->correlation;
        // Reads are served by the leader: a follower's commit index may lag the leader's.
        if (it != shards_[k].groups.end() && !it->second.host->is_leader()) {
          r.error = admin_error::not_leader;
          r.leader_hint = static_cast<int32_t>(it->second.host->core().leader().value());
          if (r.leader_hint == 0) r.leader_hint = -1;
          return back(admin_type::fetch_response, net::encode(r));
        }
        if (it == shards_[k].groups.end()) {
          r.error = admin_error::not_leader;
          r.leader_hint = hint;
          return back(admin_type::fetch_response, net::encode(r));
        }
        partition_host& h = *it->second.host;
        r.high_watermark = h.high_watermark().value();
        r.log_start = h.log().log_start().value();
        if (freq->offset < r.log_start || freq->offset > r.high_watermark + 1) {
          r.error = admin_error::offset_out_of_range;
          return back(admin_type::fetch_response, net::encode(r));
        }
        auto read = h.log().read(engine::offset(freq->offset), freq->max_bytes,
                                 to_engine(h.high_watermark()));
        if (!read) {
          r.error = admin_error::storage_error;
          return back(admin_type::fetch_response, net::encode(r));
        }
        for (const auto& v : read->batches()) {
          auto p = v.payload();
          r.batches.push_back({v.header.base_offset.value(), v.header.last_offset.value(),
                               v.header.term.value(), v.header.type,
                               std::vector<std::byte>(p.begin(), p.end())});
        }
        back(admin_type::fetch_response, net::encode(r));
      };
      if (k == 0)
        work();
      else
        shards_[k].runner->post(std::move(work));
      return;
    }
    default:
      log_line("ignored client frame type " + std::to_string(type));
  }
}

// ---------------------------------------------------------------------------------------------
// Stop

void broker::stop() {
  if (stopped_.exchange(true)) return;
  stopping_ = true;
  if (!shards_.empty() && shards_[0].runner && controller_) {
    // Controlled shutdown (KIP-631): the controller fences this broker now, so Metadata stops
    // naming it at once rather than a session timeout after it has gone. Best effort: the
    // heartbeat is not retried and the stop does not wait for the fence to commit.
    shards_[0].runner->post([this] { send_broker_heartbeat(true); });
    // Hand leaderships to caught-up followers so clients see a short move, not an election.
    for (unsigned k = 0; k < shards_.size(); ++k) {
      shards_[k].runner->post([this, k] {
        auto transfer = [](partition_host& h) {
          if (!h.is_leader()) return;
          for (raft::node_id n : h.core().config().voters) {
            if (n == h.core().self()) continue;
            const raft::progress* p = h.core().progress_of(n);
            if (p && p->match == h.core().log().last()) {
              (void)h.transfer_leadership(n);
              return;
            }
          }
        };
        for (auto& [g, r] : shards_[k].groups)
          transfer(*r.host);
        if (k == 0) transfer(controller_->host());
      });
    }
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(3);
    while (std::chrono::steady_clock::now() < deadline) {
      std::promise<bool> any;
      std::atomic<int> leading{0};
      std::atomic<unsigned> answered{0};
      for (unsigned k = 0; k < shards_.size(); ++k) {
        shards_[k].runner->post([&, k] {
          for (auto& [g, r] : shards_[k].groups)
            leading += r.host->is_leader();
          if (k == 0 && controller_->is_leader() &&
              controller_->host().core().config().voters.size() > 1)
            ++leading;
          if (++answered == shards_.size()) any.set_value(leading > 0);
        });
      }
      if (!any.get_future().get()) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  }
  for (unsigned k = shards_.size(); k-- > 0;) {
    auto& s = shards_[k];
    if (!s.runner) continue;
    s.runner->stop([this, k] {
      auto& st = shards_[k];
      for (auto& [g, r] : st.groups) {
        r.coordinator.reset();
        r.host.reset();
      }
      st.groups.clear();
      if (k == 0) {
        if (kafka_) kafka_->stop();
        controller_.reset();
        if (transport_) transport_->stop();
      }
      if (st.logs) {
        if (auto r = st.logs->close(); !r) log_line("closing logs: " + r.err().describe());
        st.logs.reset();
      }
    });
  }
  transport_.reset();
}

}  // namespace keel::server
