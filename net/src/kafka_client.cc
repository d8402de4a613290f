// Keel's Kafka client (see client.h for the contract).
#include "keel/net/kafka/client.h"

#include <algorithm>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/connect.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <cstring>
#include <deque>
#include <functional>
#include <map>
#include <tuple>
#include <utility>

#include "keel/net/kafka/errors.h"
#include "keel/net/kafka/record_batch.h"

namespace keel::net::kafka {

namespace asio = boost::asio;
using asio::awaitable;
using asio::use_awaitable;
using asio::ip::tcp;

std::string_view error_name(int16_t code) {
  switch (code) {
    case 0:
      return "NONE";
    case 1:
      return "OFFSET_OUT_OF_RANGE";
    case 2:
      return "CORRUPT_MESSAGE";
    case 3:
      return "UNKNOWN_TOPIC_OR_PARTITION";
    case 5:
      return "LEADER_NOT_AVAILABLE";
    case 6:
      return "NOT_LEADER_OR_FOLLOWER";
    case 7:
      return "REQUEST_TIMED_OUT";
    case 10:
      return "MESSAGE_TOO_LARGE";
    case 12:
      return "OFFSET_METADATA_TOO_LARGE";
    case 14:
      return "COORDINATOR_LOAD_IN_PROGRESS";
    case 15:
      return "COORDINATOR_NOT_AVAILABLE";
    case 16:
      return "NOT_COORDINATOR";
    case 17:
      return "INVALID_TOPIC_EXCEPTION";
    case 19:
      return "NOT_ENOUGH_REPLICAS";
    case 21:
      return "INVALID_REQUIRED_ACKS";
    case 22:
      return "ILLEGAL_GENERATION";
    case 23:
      return "INCONSISTENT_GROUP_PROTOCOL";
    case 24:
      return "INVALID_GROUP_ID";
    case 25:
      return "UNKNOWN_MEMBER_ID";
    case 26:
      return "INVALID_SESSION_TIMEOUT";
    case 27:
      return "REBALANCE_IN_PROGRESS";
    case 35:
      return "UNSUPPORTED_VERSION";
    case 36:
      return "TOPIC_ALREADY_EXISTS";
    case 37:
      return "INVALID_PARTITIONS";
    case 38:
      return "INVALID_REPLICATION_FACTOR";
    case 41:
      return "NOT_CONTROLLER";
    case 42:
      return "INVALID_REQUEST";
    case 68:
      return "NON_EMPTY_GROUP";
    case 69:
      return "GROUP_ID_NOT_FOUND";
    case 86:
      return "GROUP_SUBSCRIBED_TO_TOPIC";
    case 87:
      return "INVALID_RECORD";
    case client_error::network:
      return "NETWORK";
    case client_error::timed_out:
      return "TIMED_OUT";
    case client_error::protocol:
      return "PROTOCOL";
    case client_error::no_leader:
      return "NO_LEADER";
    case client_error::unsupported:
      return "UNSUPPORTED";
    case client_error::bad_argument:
      return "BAD_ARGUMENT";
    case client_error::retries_exhausted:
      return "RETRIES_EXHAUSTED";
    default:
      return "KAFKA_ERROR";
  }
}

std::optional<std::pair<std::string, uint16_t>> split_host_port(std::string_view s) {
  const auto colon = s.rfind(':');
  if (colon == std::string_view::npos || colon == 0 || colon + 1 >= s.size()) return std::nullopt;
  unsigned port = 0;
  for (char c : s.substr(colon + 1)) {
    if (c < '0' || c > '9') return std::nullopt;
    port = port * 10 + static_cast<unsigned>(c - '0');
    if (port > 65535) return std::nullopt;
  }
  if (port == 0) return std::nullopt;
  return std::pair{std::string(s.substr(0, colon)), static_cast<uint16_t>(port)};
}

namespace {

error make_error(int16_t code, std::string message = {}) {
  if (message.empty()) message = std::string(error_name(code));
  return error{code, std::move(message)};
}

// Kafka errors after which fresh metadata may route the request to the right broker.
bool refresh_and_retry(int16_t code) {
  return code == error_code::unknown_topic_or_partition ||
         code == error_code::leader_not_available || code == error_code::not_leader_or_follower ||
         code == error_code::not_enough_replicas || code == error_code::request_timed_out ||
         code == error_code::fenced_leader_epoch || code == error_code::unknown_leader_epoch ||
         code == error_code::not_controller || code == client_error::network ||
         code == client_error::timed_out || code == client_error::no_leader;
}

// The versions this client speaks, per API: [ours_min, ours_max].
struct our_range {
  int16_t key, min, max;
};
constexpr our_range our_apis[] = {
    {produce_request::api_key, 3, 9},
    {fetch_request::api_key, 4, 12},
    {list_offsets_request::api_key, 1, 7},
    {metadata_request::api_key, 1, 12},
    {create_topics_request::api_key, 2, 7},
    // Groups. FindCoordinator stops at v3 and OffsetFetch at v7: the batched (several keys or
    // groups per request) versions buy a tool nothing.
    {offset_commit_request::api_key, 2, 8},
    {offset_fetch_request::api_key, 2, 7},
    {find_coordinator_request::api_key, 1, 3},
    {describe_groups_request::api_key, 0, 5},
    {list_groups_request::api_key, 0, 4},
    {delete_groups_request::api_key, 0, 2},
};

// Errors after which the group's coordinator must be found again.
bool refind_coordinator(int16_t code) {
  return code == error_code::not_coordinator || code == error_code::coordinator_not_available ||
         code == error_code::coordinator_load_in_progress || code == client_error::network ||
         code == client_error::timed_out || code == client_error::no_leader;
}

// A one-shot wake-up for a coroutine: a timer that the completer cancels. Shared, so a response
// arriving after its waiter gave up lands harmlessly.
struct waiter {
  explicit waiter(asio::any_io_executor ex) : timer(ex) {}
  asio::steady_timer timer;
  bool done = false;
  int16_t code = 0;
  std::vector<std::byte> frame;  // the response without its size prefix

  void complete(int16_t c, std::vector<std::byte> f = {}) {
    if (done) return;
    done = true;
    code = c;
    frame = std::move(f);
    timer.cancel();
  }
  // Waits for complete() or the deadline; false on timeout.
  awaitable<bool> wait(std::chrono::steady_clock::duration timeout) {
    if (done) co_return true;
    timer.expires_after(timeout);
    boost::system::error_code ec;
    co_await timer.async_wait(asio::redirect_error(use_awaitable, ec));
    co_return done;
  }
};

struct response {
  error err;
  std::vector<std::byte> frame;
};

}  // namespace

// One TCP connection to one broker, with pipelined requests.
class connection : public std::enable_shared_from_this<connection> {
 public:
  connection(asio::io_context& io, int32_t broker_id, std::string host, uint16_t port,
             const client_config& config)
      : io_(io),
        socket_(io),
        broker_id_(broker_id),
        host_(std::move(host)),
        port_(port),
        client_id_(config.client_id),
        timeout_(config.request_timeout) {}

  int32_t broker_id() const { return broker_id_; }
  bool usable() const { return state_ != state::dead; }

  // Connects (once; concurrent callers wait for the same attempt) and negotiates versions.
  awaitable<error> ensure_ready() {
    if (state_ == state::ready) co_return error{};
    if (state_ == state::dead) co_return make_error(client_error::network, dead_reason_);
    if (state_ == state::connecting) {
      auto w = std::make_shared<waiter>(io_.get_executor());
      ready_waiters_.push_back(w);
      co_await w->wait(timeout_);
      if (state_ == state::ready) co_return error{};
      co_return make_error(client_error::network,
                           dead_reason_.empty() ? "connect timed out" : dead_reason_);
    }
    state_ = state::connecting;
    error e = co_await open();
    if (e) {
      fail(e.message);
    } else {
      state_ = state::ready;
    }
    for (auto& w : ready_waiters_)
      w->complete(0);
    ready_waiters_.clear();
    co_return e;
  }

  // The version to use for an API: the highest both sides speak, or -1.
  int16_t pick(int16_t key) const {
    const our_range* ours = nullptr;
    for (const auto& r : our_apis)
      if (r.key == key) ours = &r;
    auto it = versions_.find(key);
    if (!ours || it == versions_.end()) return -1;
    const int16_t v = std::min(ours->max, it->second.second);
    if (v < ours->min || v < it->second.first) return -1;
    return v;
  }

  // Sends a request and awaits its response frame. With expect_response false (Produce acks=0)
  // nothing is awaited beyond queuing; `keepalive` then owns any external bytes of the request.
  template <class Request>
  awaitable<response> call(const Request& body, int16_t version, bool expect_response = true,
                           std::shared_ptr<std::vector<std::byte>> keepalive = nullptr) {
    if (state_ == state::dead) co_return response{make_error(client_error::network, dead_reason_)};
    const int32_t correlation = next_correlation_++;
    outgoing o;
    write_request(o.frame, body, version, correlation, client_id_);
    o.keepalive = std::move(keepalive);
    co_return co_await submit(std::move(o), correlation, expect_response);
  }

  // call() for a body given as an encoder (send_to).
  awaitable<response> call_with(int16_t api_key, int16_t version,
                                const std::function<void(writer&, int16_t)>& encode_body) {
    if (state_ == state::dead) co_return response{make_error(client_error::network, dead_reason_)};
    const int32_t correlation = next_correlation_++;
    outgoing o;
    write_request_with(o.frame, api_key, version, correlation, client_id_, encode_body);
    co_return co_await submit(std::move(o), correlation, true);
  }

  void fail(const std::string& why) {
    if (state_ == state::dead) return;
    state_ = state::dead;
    dead_reason_ = "broker " + std::to_string(broker_id_) + " (" + host_ + ":" +
                   std::to_string(port_) + "): " + why;
    boost::system::error_code ignored;
    socket_.close(ignored);
    auto pending = std::move(pending_);
    pending_.clear();
    queue_.clear();
    for (auto& p : pending)
      p.w->complete(client_error::network);
    for (auto& w : ready_waiters_)
      w->complete(client_error::network);
    ready_waiters_.clear();
  }

 private:
  enum class state { idle, connecting, ready, dead };
  struct outgoing {
    writer frame;
    std::shared_ptr<std::vector<std::byte>> keepalive;
  };
  struct pending_request {
    int32_t correlation;
    std::shared_ptr<waiter> w;
  };

  awaitable<response> submit(outgoing o, int32_t correlation, bool expect_response) {
    std::shared_ptr<waiter> w;
    if (expect_response) {
      w = std::make_shared<waiter>(io_.get_executor());
      pending_.push_back({correlation, w});
    }
    queue_.push_back(std::move(o));
    kick_writer();
    if (!expect_response) co_return response{};
    const bool done = co_await w->wait(timeout_);
    if (!done) {
      fail("request timed out");
      co_return response{make_error(client_error::timed_out)};
    }
    if (w->code != 0) co_return response{make_error(w->code, dead_reason_)};
    co_return response{error{}, std::move(w->frame)};
  }

  awaitable<error> open() {
    boost::system::error_code ec;
    tcp::resolver resolver(io_);
    auto endpoints = co_await resolver.async_resolve(host_, std::to_string(port_),
                                                     asio::redirect_error(use_awaitable, ec));
    if (ec) co_return make_error(client_error::network, "resolve " + host_ + ": " + ec.message());
    co_await asio::async_connect(socket_, endpoints, asio::redirect_error(use_awaitable, ec));
    if (ec)
      co_return make_error(client_error::network,
                           "connect " + host_ + ":" + std::to_string(port_) + ": " + ec.message());
    socket_.set_option(tcp::no_delay(true), ec);
    asio::co_spawn(io_, read_loop(shared_from_this()), asio::detached);
    // ApiVersions v3; a broker that does not know v3 answers UNSUPPORTED_VERSION in v0 form.
    for (int16_t version : {int16_t{3}, int16_t{0}}) {
      api_versions_request rq;
      rq.client_software_name = "keel";
      rq.client_software_version = "0.1";
      auto r = co_await call(rq, version);
      if (r.err) co_return r.err;
      reader in(r.frame);
      response_header h;
      h.decode(in, response_header_version(api_versions_request::api_key, version));
      api_versions_response resp;
      const bool decoded = resp.decode(in, version);
      if (resp.error_code == error_code::unsupported_version && version != 0) continue;
      if (!decoded || !in.ok()) co_return make_error(client_error::protocol, "bad ApiVersions");
      if (resp.error_code != 0) co_return make_error(resp.error_code, "ApiVersions failed");
      for (const auto& k : resp.api_keys)
        versions_[k.api_key] = {k.min_version, k.max_version};
      co_return error{};
    }
    co_return make_error(client_error::unsupported, "no usable ApiVersions version");
  }

  void kick_writer() {
    if (writing_ || queue_.empty() || state_ == state::dead) return;
    writing_ = true;
    asio::co_spawn(io_, write_loop(shared_from_this()), asio::detached);
  }

  static awaitable<void> write_loop(std::shared_ptr<connection> self) {
    std::vector<outgoing> batch;
    std::vector<asio::const_buffer> buffers;
    while (!self->queue_.empty() && self->state_ != state::dead) {
      batch.clear();
      buffers.clear();
      // Bound one gathered write: many small requests go out in one writev.
      size_t bytes = 0;
      while (!self->queue_.empty() && batch.size() < 256 && bytes < (8u << 20)) {
        bytes += self->queue_.front().frame.size();
        batch.push_back(std::move(self->queue_.front()));
        self->queue_.pop_front();
      }
      for (const auto& o : batch)
        for (const auto& p : o.frame.pieces())
          buffers.emplace_back(p.data, p.size);
      boost::system::error_code ec;
      co_await asio::async_write(self->socket_, buffers, asio::redirect_error(use_awaitable, ec));
      if (ec) {
        self->fail("write: " + ec.message());
        break;
      }
    }
    self->writing_ = false;
  }

  static awaitable<void> read_loop(std::shared_ptr<connection> self) {
    std::vector<std::byte> buf(256 << 10);
    size_t begin = 0, end = 0;
    for (;;) {
      // Parse every whole frame buffered.
      while (end - begin >= 4) {
        uint32_t size_be;
        std::memcpy(&size_be, buf.data() + begin, 4);
        const uint32_t size = __builtin_bswap32(size_be);
        if (size < 4 || size > (1u << 30)) {
          self->fail("bad response size " + std::to_string(size));
          co_return;
        }
        if (end - begin < 4 + size) {
          // Make room for the whole frame.
          if (buf.size() - begin < 4 + size) {
            std::memmove(buf.data(), buf.data() + begin, end - begin);
            end -= begin;
            begin = 0;
            if (buf.size() < 4 + size) buf.resize(4 + size);
          }
          break;
        }
        std::vector<std::byte> frame(buf.begin() + static_cast<ptrdiff_t>(begin + 4),
                                     buf.begin() + static_cast<ptrdiff_t>(begin + 4 + size));
        begin += 4 + size;
        if (self->pending_.empty()) {
          self->fail("response with no request outstanding");
          co_return;
        }
        auto p = std::move(self->pending_.front());
        self->pending_.pop_front();
        uint32_t corr_be;
        std::memcpy(&corr_be, frame.data(), 4);
        if (static_cast<int32_t>(__builtin_bswap32(corr_be)) != p.correlation) {
          p.w->complete(client_error::protocol);
          self->fail("correlation id mismatch");
          co_return;
        }
        p.w->complete(0, std::move(frame));
      }
      if (begin == end) begin = end = 0;
      if (end == buf.size()) {
        std::memmove(buf.data(), buf.data() + begin, end - begin);
        end -= begin;
        begin = 0;
      }
      boost::system::error_code ec;
      const size_t n =
          co_await self->socket_.async_read_some(asio::buffer(buf.data() + end, buf.size() - end),
                                                 asio::redirect_error(use_awaitable, ec));
      if (ec || self->state_ == state::dead) {
        self->fail(ec ? "read: " + ec.message() : "closed");
        co_return;
      }
      end += n;
    }
  }

  asio::io_context& io_;
  tcp::socket socket_;
  int32_t broker_id_;
  std::string host_;
  uint16_t port_;
  std::string client_id_;
  std::chrono::milliseconds timeout_;
  state state_ = state::idle;
  std::string dead_reason_;
  int32_t next_correlation_ = 1;
  bool writing_ = false;
  std::deque<outgoing> queue_;
  std::deque<pending_request> pending_;
  std::vector<std::shared_ptr<waiter>> ready_waiters_;
  std::map<int16_t, std::pair<int16_t, int16_t>> versions_;
};

struct client::impl {
  impl(asio::io_context& io, client_config c) : io(io), config(std::move(c)) {
    if (config.connections_per_broker < 1) config.connections_per_broker = 1;
  }

  asio::io_context& io;
  client_config config;
  cluster_info cluster;
  std::map<int32_t, std::vector<std::shared_ptr<connection>>> connections;  // by broker id
  std::map<int32_t, size_t> round_robin;
  std::shared_ptr<connection> bootstrap;
  bool refreshing = false;
  std::vector<std::shared_ptr<waiter>> refresh_waiters;
  error last_refresh;

  const broker_info* find_broker(int32_t id) const {
    for (const auto& b : cluster.brokers)
      if (b.id == id) return &b;
    return nullptr;
  }
  const topic_info* find_topic(const std::string& name) const {
    for (const auto& t : cluster.topics)
      if (t.name == name) return &t;
    return nullptr;
  }

  // A ready connection to the broker (opened on first use), or an error.
  awaitable<std::pair<std::shared_ptr<connection>, error>> connection_to(int32_t broker) {
    const broker_info* b = find_broker(broker);
    if (!b) co_return std::pair{nullptr, make_error(client_error::no_leader, "unknown broker")};
    auto& list = connections[broker];
    list.resize(static_cast<size_t>(config.connections_per_broker));
    auto& slot = list[round_robin[broker]++ % list.size()];
    if (!slot || !slot->usable())
      slot =
          std::make_shared<connection>(io, broker, b->host, static_cast<uint16_t>(b->port), config);
    auto c = slot;
    error e = co_await c->ensure_ready();
    if (e) co_return std::pair{nullptr, e};
    co_return std::pair{c, error{}};
  }

  // Any ready connection: a known broker's, else the bootstrap list's.
  awaitable<std::pair<std::shared_ptr<connection>, error>> any_connection() {
    error last = make_error(client_error::network, "no broker reachable");
    for (const auto& b : std::vector<broker_info>(cluster.brokers)) {
      auto r = co_await connection_to(b.id);
      if (r.first) co_return r;
      last = r.second;
    }
    if (bootstrap && bootstrap->usable()) {
      error e = co_await bootstrap->ensure_ready();
      if (!e) co_return std::pair{bootstrap, error{}};
    }
    for (const auto& entry : config.bootstrap) {
      auto hp = split_host_port(entry);
      if (!hp)
        co_return std::pair{nullptr,
                            make_error(client_error::bad_argument,
                                       "bootstrap entry '" + entry + "' is not host:port")};
      bootstrap = std::make_shared<connection>(io, -1, hp->first, hp->second, config);
      error e = co_await bootstrap->ensure_ready();
      if (!e) co_return std::pair{bootstrap, error{}};
      last = e;
    }
    co_return std::pair{nullptr, last};
  }

  awaitable<metadata_result> fetch_metadata(std::vector<std::string> topics) {
    metadata_result out;
    auto [c, e] = co_await any_connection();
    if (!c) {
      out.err = e;
      co_return out;
    }
    const int16_t v = c->pick(metadata_request::api_key);
    if (v < 0) {
      out.err = make_error(client_error::unsupported, "Metadata");
      co_return out;
    }
    metadata_request rq;
    rq.allow_auto_topic_creation = false;
    if (!topics.empty()) {
      rq.topics.emplace();
      for (auto& t : topics) {
        metadata_request::metadata_request_topic mt;
        mt.name = t;
        rq.topics->push_back(std::move(mt));
      }
    }
    auto r = co_await c->call(rq, v);
    if (r.err) {
      out.err = r.err;
      co_return out;
    }
    reader in(r.frame);
    response_header h;
    h.decode(in, response_header_version(metadata_request::api_key, v));
    metadata_response resp;
    if (!resp.decode(in, v) || !in.ok()) {
      out.err = make_error(client_error::protocol, "bad Metadata response");
      co_return out;
    }
    out.cluster.controller = resp.controller_id;
    for (const auto& b : resp.brokers)
      out.cluster.brokers.push_back({b.node_id, b.host, b.port});
    for (const auto& t : resp.topics) {
      topic_info ti;
      ti.name = t.name.value_or("");
      ti.error_code = t.error_code;
      for (const auto& p : t.partitions) {
        partition_info pi;
        pi.partition = p.partition_index;
        pi.error_code = p.error_code;
        pi.leader = p.leader_id;
        pi.leader_epoch = p.leader_epoch;
        pi.replicas = p.replica_nodes;
        pi.isr = p.isr_nodes;
        ti.partitions.push_back(std::move(pi));
      }
      std::sort(ti.partitions.begin(), ti.partitions.end(),
                [](const auto& a, const auto& b) { return a.partition < b.partition; });
      out.cluster.topics.push_back(std::move(ti));
    }
    std::sort(out.cluster.topics.begin(), out.cluster.topics.end(),
              [](const auto& a, const auto& b) { return a.name < b.name; });
    merge(out.cluster, topics.empty());
    co_return out;
  }

  // Folds a metadata response into the routing view: brokers and controller replaced, topics
  // replaced (all of them when the request named none, else only those returned).
  void merge(const cluster_info& fresh, bool all_topics) {
    cluster.controller = fresh.controller;
    cluster.brokers = fresh.brokers;
    if (all_topics) {
      cluster.topics = fresh.topics;
      return;
    }
    for (const auto& t : fresh.topics) {
      auto it = std::find_if(cluster.topics.begin(), cluster.topics.end(),
                             [&](const auto& x) { return x.name == t.name; });
      if (it == cluster.topics.end())
        cluster.topics.push_back(t);
      else
        *it = t;
    }
  }

  // One refresh at a time; callers arriving during one wait for it.
  awaitable<error> refresh() {
    if (refreshing) {
      auto w = std::make_shared<waiter>(io.get_executor());
      refresh_waiters.push_back(w);
      co_await w->wait(config.request_timeout);
      co_return last_refresh;
    }
    refreshing = true;
    auto r = co_await fetch_metadata({});
    last_refresh = r.err;
    refreshing = false;
    auto waiters = std::move(refresh_waiters);
    refresh_waiters.clear();
    for (auto& w : waiters)
      w->complete(0);
    co_return r.err;
  }

  awaitable<void> backoff(int attempt) {
    asio::steady_timer t(io);
    t.expires_after(config.retry_backoff * std::min(attempt + 1, 5));
    boost::system::error_code ec;
    co_await t.async_wait(asio::redirect_error(use_awaitable, ec));
  }

  // The leader's connection for a partition, refreshing metadata once when the leader is unknown.
  awaitable<std::pair<std::shared_ptr<connection>, error>> leader_for(const std::string& topic,
                                                                      int32_t partition) {
    for (int pass = 0; pass < 2; ++pass) {
      const topic_info* t = find_topic(topic);
      if (t && partition >= 0 && static_cast<size_t>(partition) < t->partitions.size()) {
        const auto& p = t->partitions[static_cast<size_t>(partition)];
        if (p.leader >= 0) co_return co_await connection_to(p.leader);
      }
      if (pass == 0) {
        error e = co_await refresh();
        if (e) co_return std::pair{nullptr, e};
      }
    }
    const topic_info* t = find_topic(topic);
    if (!t || t->error_code == error_code::unknown_topic_or_partition ||
        static_cast<size_t>(partition) >= t->partitions.size())
      co_return std::pair{nullptr, make_error(error_code::unknown_topic_or_partition,
                                              "unknown topic or partition " + topic + "/" +
                                                  std::to_string(partition))};
    co_return std::pair{nullptr, make_error(client_error::no_leader)};
  }

  // Runs `attempt_once(connection)` against the partition's leader, refreshing and retrying on
  // the errors that a leader change explains. attempt_once returns {error, T}.
  template <class Result, class Attempt>
  awaitable<Result> with_leader(const std::string& topic, int32_t partition, Attempt attempt_once) {
    Result last;
    for (int attempt = 0; attempt <= config.max_retries; ++attempt) {
      auto [c, e] = co_await leader_for(topic, partition);
      if (c) {
        last = co_await attempt_once(c);
        e = last.err;
        if (!e) co_return last;
      } else {
        last = Result{};
        last.err = e;
      }
      if (!refresh_and_retry(e.code)) co_return last;
      if (attempt == config.max_retries) break;
      co_await backoff(attempt);
      co_await refresh();
    }
    last.err.message =
        "after " + std::to_string(config.max_retries) + " retries: " + last.err.message;
    co_return last;
  }

  // --- groups ---
  std::map<std::string, int32_t> coordinators;  // group id -> broker id (a cache)

  // Adds or updates a broker learned outside Metadata (a FindCoordinator answer).
  void learn_broker(int32_t id, const std::string& host, int32_t port) {
    for (auto& b : cluster.brokers)
      if (b.id == id) {
        if (b.host != host || b.port != port) {
          b.host = host;
          b.port = port;
          connections.erase(id);
        }
        return;
      }
    cluster.brokers.push_back({id, host, port});
  }

  // One FindCoordinator round trip (no retries).
  awaitable<coordinator_result> find_coordinator_once(const std::string& group) {
    coordinator_result out;
    auto [c, e] = co_await any_connection();
    if (!c) {
      out.err = e;
      co_return out;
    }
    const int16_t v = c->pick(find_coordinator_request::api_key);
    if (v < 0) {
      out.err = make_error(client_error::unsupported, "FindCoordinator");
      co_return out;
    }
    find_coordinator_request rq;
    rq.key = group;
    rq.key_type = 0;
    auto r = co_await c->call(rq, v);
    if (r.err) {
      out.err = r.err;
      co_return out;
    }
    reader in(r.frame);
    response_header h;
    h.decode(in, response_header_version(find_coordinator_request::api_key, v));
    find_coordinator_response resp;
    if (!resp.decode(in, v) || !in.ok()) {
      out.err = make_error(client_error::protocol, "bad FindCoordinator response");
      co_return out;
    }
    if (resp.error_code != 0) {
      out.err = make_error(resp.error_code, std::string(error_name(resp.error_code)) +
                                                (resp.error_message && !resp.error_message->empty()
                                                     ? ": " + *resp.error_message
                                                     : ""));
      co_return out;
    }
    out.coordinator = {resp.node_id, resp.host, resp.port};
    learn_broker(resp.node_id, resp.host, resp.port);
    coordinators[group] = resp.node_id;
    co_return out;
  }

  awaitable<coordinator_result> find_coordinator(const std::string& group) {
    coordinator_result last;
    for (int attempt = 0; attempt <= config.max_retries; ++attempt) {
      last = co_await find_coordinator_once(group);
      if (!last.err || !refind_coordinator(last.err.code)) co_return last;
      if (attempt == config.max_retries) break;
      co_await backoff(attempt);
      if (last.err.code == client_error::network) co_await refresh();
    }
    last.err.message =
        "after " + std::to_string(config.max_retries) + " retries: " + last.err.message;
    co_return last;
  }

  // Runs attempt_once(coordinator broker id) and returns its {error, ...} result, finding the
  // coordinator again and retrying on the errors that a coordinator move explains. attempt_once's
  // Result::err carries the code that decides (a group-level or the first partition's error).
  template <class Result, class Attempt>
  awaitable<Result> with_coordinator(const std::string& group, Attempt attempt_once) {
    Result last;
    for (int attempt = 0; attempt <= config.max_retries; ++attempt) {
      int32_t broker = -1;
      if (auto it = coordinators.find(group); it != coordinators.end()) {
        broker = it->second;
      } else {
        auto f = co_await find_coordinator(group);
        if (f.err) {
          last = Result{};
          last.err = f.err;
          co_return last;
        }
        broker = f.coordinator.id;
      }
      last = co_await attempt_once(broker);
      if (!last.err || !refind_coordinator(last.err.code)) co_return last;
      coordinators.erase(group);
      if (attempt == config.max_retries) break;
      co_await backoff(attempt);
    }
    last.err.message =
        "after " + std::to_string(config.max_retries) + " retries: " + last.err.message;
    co_return last;
  }

  awaitable<client::raw_response> send_to(int32_t broker, int16_t api_key,
                                          const std::function<void(writer&, int16_t)>& encode) {
    client::raw_response out;
    auto [c, e] = co_await connection_to(broker);
    if (!c) {
      out.err = e;
      co_return out;
    }
    out.version = c->pick(api_key);
    if (out.version < 0) {
      out.err = make_error(client_error::unsupported, "broker " + std::to_string(broker) +
                                                          " serves no usable version of API " +
                                                          std::to_string(api_key));
      co_return out;
    }
    auto r = co_await c->call_with(api_key, out.version, encode);
    out.err = r.err;
    out.frame = std::move(r.frame);
    co_return out;
  }
};

client::client(asio::io_context& io, client_config config)
    : impl_(std::make_shared<impl>(io, std::move(config))) {}

client::~client() {
  close();
}

void client::close() {
  for (auto& [id, list] : impl_->connections)
    for (auto& c : list)
      if (c) c->fail("closed by the client");
  impl_->connections.clear();
  if (impl_->bootstrap) impl_->bootstrap->fail("closed by the client");
  impl_->bootstrap.reset();
}

const cluster_info& client::cluster() const {
  return impl_->cluster;
}

int32_t client::partition_count(const std::string& topic) const {
  const topic_info* t = impl_->find_topic(topic);
  return t ? static_cast<int32_t>(t->partitions.size()) : -1;
}

awaitable<error> client::connect() {
  if (impl_->config.bootstrap.empty())
    co_return make_error(client_error::bad_argument, "empty bootstrap list");
  auto r = co_await impl_->fetch_metadata({});
  co_return r.err;
}

awaitable<metadata_result> client::metadata(std::vector<std::string> topics) {
  co_return co_await impl_->fetch_metadata(std::move(topics));
}

awaitable<error> client::create_topic(std::string topic, int32_t partitions,
                                      int16_t replication_factor) {
  auto& m = *impl_;
  error last;
  for (int attempt = 0; attempt <= m.config.max_retries; ++attempt) {
    std::pair<std::shared_ptr<connection>, error> target;
    if (m.cluster.controller >= 0) target = co_await m.connection_to(m.cluster.controller);
    if (!target.first) target = co_await m.any_connection();
    if (!target.first) co_return target.second;
    auto c = target.first;
    const int16_t v = c->pick(create_topics_request::api_key);
    if (v < 0) co_return make_error(client_error::unsupported, "CreateTopics");
    create_topics_request rq;
    rq.timeout_ms = static_cast<int32_t>(m.config.request_timeout.count());
    create_topics_request::creatable_topic t;
    t.name = topic;
    t.num_partitions = partitions;
    t.replication_factor = replication_factor;
    rq.topics.push_back(std::move(t));
    auto r = co_await c->call(rq, v);
    if (!r.err) {
      reader in(r.frame);
      response_header h;
      h.decode(in, response_header_version(create_topics_request::api_key, v));
      create_topics_response resp;
      if (!resp.decode(in, v) || !in.ok() || resp.topics.empty())
        co_return make_error(client_error::protocol, "bad CreateTopics response");
      const auto& res = resp.topics.front();
      if (res.error_code == 0) {
        co_await m.refresh();
        co_return error{};
      }
      last = make_error(res.error_code, std::string(error_name(res.error_code)) +
                                            (res.error_message ? ": " + *res.error_message : ""));
    } else {
      last = r.err;
    }
    if (!refresh_and_retry(last.code) || attempt == m.config.max_retries) co_return last;
    co_await m.backoff(attempt);
    co_await m.refresh();
  }
  co_return last;
}

awaitable<produce_result> client::produce(std::string topic, int32_t partition,
                                          std::span<const std::byte> batch, int16_t acks) {
  auto self = impl_;
  co_return co_await self->with_leader<produce_result>(
      topic, partition, [&](std::shared_ptr<connection> c) -> awaitable<produce_result> {
        produce_result out;
        const int16_t v = c->pick(produce_request::api_key);
        if (v < 0) {
          out.err = make_error(client_error::unsupported, "Produce");
          co_return out;
        }
        produce_request rq;
        rq.acks = acks;
        rq.timeout_ms = static_cast<int32_t>(self->config.request_timeout.count());
        produce_request::partition_produce_data pd;
        pd.index = partition;
        std::shared_ptr<std::vector<std::byte>> keepalive;
        if (acks == 0) {
          // Nothing is awaited: the frame must own its bytes.
          keepalive = std::make_shared<std::vector<std::byte>>(batch.begin(), batch.end());
          pd.records.pieces.push_back(*keepalive);
        } else {
          pd.records.pieces.push_back(batch);
        }
        produce_request::topic_produce_data td;
        td.name = topic;
        td.partition_data.push_back(std::move(pd));
        rq.topic_data.push_back(std::move(td));
        auto r = co_await c->call(rq, v, acks != 0, keepalive);
        if (r.err || acks == 0) {
          out.err = r.err;
          co_return out;
        }
        reader in(r.frame);
        response_header h;
        h.decode(in, response_header_version(produce_request::api_key, v));
        produce_response resp;
        if (!resp.decode(in, v) || !in.ok() || resp.responses.empty() ||
            resp.responses.front().partition_responses.empty()) {
          out.err = make_error(client_error::protocol, "bad Produce response");
          co_return out;
        }
        const auto& p = resp.responses.front().partition_responses.front();
        if (p.error_code != 0) {
          out.err = make_error(p.error_code, std::string(error_name(p.error_code)) +
                                                 (p.error_message ? ": " + *p.error_message : ""));
          co_return out;
        }
        out.base_offset = p.base_offset;
        co_return out;
      });
}

awaitable<fetch_result> client::fetch(std::string topic, int32_t partition, int64_t offset,
                                      int32_t max_bytes, std::chrono::milliseconds max_wait) {
  auto self = impl_;
  co_return co_await self->with_leader<fetch_result>(
      topic, partition, [&](std::shared_ptr<connection> c) -> awaitable<fetch_result> {
        fetch_result out;
        const int16_t v = c->pick(fetch_request::api_key);
        if (v < 0) {
          out.err = make_error(client_error::unsupported, "Fetch");
          co_return out;
        }
        fetch_request rq;
        rq.replica_id = -1;
        rq.max_wait_ms = static_cast<int32_t>(max_wait.count());
        rq.min_bytes = 1;
        rq.max_bytes = max_bytes;
        rq.session_id = 0;
        rq.session_epoch = -1;
        fetch_request::fetch_partition fp;
        fp.partition = partition;
        fp.fetch_offset = offset;
        fp.partition_max_bytes = max_bytes;
        fetch_request::fetch_topic ft;
        ft.topic = topic;
        ft.partitions.push_back(fp);
        rq.topics.push_back(std::move(ft));
        auto r = co_await c->call(rq, v);
        if (r.err) {
          out.err = r.err;
          co_return out;
        }
        out.frame = std::move(r.frame);
        reader in(out.frame);
        response_header h;
        h.decode(in, response_header_version(fetch_request::api_key, v));
        fetch_response resp;
        if (!resp.decode(in, v) || !in.ok()) {
          out.err = make_error(client_error::protocol, "bad Fetch response");
          co_return out;
        }
        if (resp.error_code != 0) {
          out.err = make_error(resp.error_code);
          co_return out;
        }
        if (resp.responses.empty() || resp.responses.front().partitions.empty()) {
          out.err = make_error(client_error::protocol, "empty Fetch response");
          co_return out;
        }
        const auto& p = resp.responses.front().partitions.front();
        out.high_watermark = p.high_watermark;
        out.log_start_offset = p.log_start_offset;
        if (p.error_code != 0) {
          out.err = make_error(p.error_code);
          co_return out;
        }
        if (!p.records.null && !p.records.pieces.empty()) out.records = p.records.pieces.front();
        co_return out;
      });
}

awaitable<offset_result> client::list_offsets(std::string topic, int32_t partition,
                                              offset_spec which) {
  auto self = impl_;
  co_return co_await self->with_leader<offset_result>(
      topic, partition, [&](std::shared_ptr<connection> c) -> awaitable<offset_result> {
        offset_result out;
        const int16_t v = c->pick(list_offsets_request::api_key);
        if (v < 0) {
          out.err = make_error(client_error::unsupported, "ListOffsets");
          co_return out;
        }
        list_offsets_request rq;
        rq.replica_id = -1;
        list_offsets_request::list_offsets_partition lp;
        lp.partition_index = partition;
        lp.timestamp = static_cast<int64_t>(which);
        list_offsets_request::list_offsets_topic lt;
        lt.name = topic;
        lt.partitions.push_back(lp);
        rq.topics.push_back(std::move(lt));
        auto r = co_await c->call(rq, v);
        if (r.err) {
          out.err = r.err;
          co_return out;
        }
        reader in(r.frame);
        response_header h;
        h.decode(in, response_header_version(list_offsets_request::api_key, v));
        list_offsets_response resp;
        if (!resp.decode(in, v) || !in.ok() || resp.topics.empty() ||
            resp.topics.front().partitions.empty()) {
          out.err = make_error(client_error::protocol, "bad ListOffsets response");
          co_return out;
        }
        const auto& p = resp.topics.front().partitions.front();
        if (p.error_code != 0) {
          out.err = make_error(p.error_code);
          co_return out;
        }
        out.offset = p.offset;
        co_return out;
      });
}

awaitable<offset_result> client::offset_for_time(std::string topic, int32_t partition,
                                                 int64_t timestamp_ms) {
  co_return co_await list_offsets(std::move(topic), partition,
                                  static_cast<offset_spec>(timestamp_ms));
}

// ---------------------------------------------------------------------------------------------
// Groups

namespace {

error group_error(int16_t code, const std::optional<std::string>& message = std::nullopt) {
  std::string m(error_name(code));
  if (message && !message->empty()) m += ": " + *message;
  return make_error(code, std::move(m));
}

}  // namespace

awaitable<client::raw_response> client::send_to(int32_t broker, int16_t api_key,
                                                std::function<void(writer&, int16_t)> encode_body) {
  auto self = impl_;
  co_return co_await self->send_to(broker, api_key, encode_body);
}

awaitable<coordinator_result> client::find_coordinator(std::string group) {
  auto self = impl_;
  co_return co_await self->find_coordinator(group);
}

awaitable<list_groups_result> client::list_groups() {
  auto self = impl_;
  list_groups_result out;
  if (auto e = co_await self->refresh()) {
    out.err = e;
    co_return out;
  }
  const std::vector<broker_info> brokers = self->cluster.brokers;
  std::map<std::string, group_listing> merged;
  for (const auto& b : brokers) {
    error last;
    for (int attempt = 0; attempt <= self->config.max_retries; ++attempt) {
      list_groups_request rq;
      auto r = co_await call_broker<list_groups_response>(b.id, rq);
      last = r.err;
      if (!last && r.body.error_code != 0) last = group_error(r.body.error_code);
      if (!last) {
        for (const auto& g : r.body.groups) {
          group_listing l;
          l.group_id = g.group_id;
          l.protocol_type = g.protocol_type;
          l.state = g.group_state;
          l.coordinator = b.id;
          merged[g.group_id] = std::move(l);
        }
        break;
      }
      // A coordinator still loading its groups answers COORDINATOR_LOAD_IN_PROGRESS: ask again.
      if (last.code != error_code::coordinator_load_in_progress &&
          last.code != client_error::timed_out)
        break;
      if (attempt < self->config.max_retries) co_await self->backoff(attempt);
    }
    if (last && !out.err) {
      out.err = last;
      out.err.message = "broker " + std::to_string(b.id) + ": " + last.message;
    }
  }
  for (auto& [id, l] : merged)
    out.groups.push_back(std::move(l));
  co_return out;
}

awaitable<describe_groups_result> client::describe_groups(std::vector<std::string> groups) {
  auto self = impl_;
  describe_groups_result out;
  for (const auto& group : groups) {
    auto d = co_await self->with_coordinator<group_description>(
        group, [&](int32_t broker) -> awaitable<group_description> {
          group_description gd;
          gd.group_id = group;
          gd.coordinator = broker;
          describe_groups_request rq;
          rq.groups.push_back(group);
          auto r = co_await call_broker<describe_groups_response>(broker, rq);
          if (r.err) {
            gd.err = r.err;
            co_return gd;
          }
          if (r.body.groups.empty()) {
            gd.err = make_error(client_error::protocol, "empty DescribeGroups response");
            co_return gd;
          }
          const auto& g = r.body.groups.front();
          if (g.error_code != 0) {
            gd.err = group_error(g.error_code);
            co_return gd;
          }
          gd.state = g.group_state;
          gd.protocol_type = g.protocol_type;
          gd.protocol = g.protocol_data;
          for (const auto& m : g.members) {
            group_member gm;
            gm.member_id = m.member_id;
            gm.group_instance_id = m.group_instance_id;
            gm.client_id = m.client_id;
            gm.client_host = m.client_host;
            gm.metadata = m.member_metadata;
            gm.assignment = m.member_assignment;
            gd.members.push_back(std::move(gm));
          }
          co_return gd;
        });
    d.group_id = group;
    out.groups.push_back(std::move(d));
  }
  co_return out;
}

awaitable<offset_fetch_result> client::offset_fetch(
    std::string group, std::optional<std::vector<topic_partition>> partitions) {
  auto self = impl_;
  co_return co_await self->with_coordinator<offset_fetch_result>(
      group, [&](int32_t broker) -> awaitable<offset_fetch_result> {
        offset_fetch_result out;
        offset_fetch_request rq;
        rq.group_id = group;
        if (partitions) {
          rq.topics.emplace();
          for (const auto& tp : *partitions) {
            auto it = std::find_if(rq.topics->begin(), rq.topics->end(),
                                   [&](const auto& t) { return t.name == tp.topic; });
            if (it == rq.topics->end()) {
              rq.topics->emplace_back();
              it = rq.topics->end() - 1;
              it->name = tp.topic;
            }
            it->partition_indexes.push_back(tp.partition);
          }
        }
        auto r = co_await call_broker<offset_fetch_response>(broker, rq);
        if (r.err) {
          out.err = r.err;
          co_return out;
        }
        if (r.body.error_code != 0) {
          out.err = group_error(r.body.error_code);
          co_return out;
        }
        for (const auto& t : r.body.topics)
          for (const auto& p : t.partitions) {
            if (p.error_code != 0 && !out.err) out.err = group_error(p.error_code);
            out.offsets.push_back(
                {t.name, p.partition_index, p.committed_offset, p.metadata, p.error_code});
          }
        std::sort(out.offsets.begin(), out.offsets.end(), [](const auto& a, const auto& b) {
          return std::tie(a.topic, a.partition) < std::tie(b.topic, b.partition);
        });
        co_return out;
      });
}

awaitable<offset_commit_result> client::offset_commit(std::string group,
                                                      std::vector<partition_offset> offsets) {
  auto self = impl_;
  co_return co_await self->with_coordinator<offset_commit_result>(
      group, [&](int32_t broker) -> awaitable<offset_commit_result> {
        offset_commit_result out;
        offset_commit_request rq;
        rq.group_id = group;
        rq.generation_id_or_member_epoch = -1;
        rq.member_id = "";
        for (const auto& o : offsets) {
          auto it = std::find_if(rq.topics.begin(), rq.topics.end(),
                                 [&](const auto& t) { return t.name == o.topic; });
          if (it == rq.topics.end()) {
            rq.topics.emplace_back();
            it = rq.topics.end() - 1;
            it->name = o.topic;
          }
          offset_commit_request::offset_commit_request_partition p;
          p.partition_index = o.partition;
          p.committed_offset = o.offset;
          p.committed_metadata = o.metadata;
          it->partitions.push_back(std::move(p));
        }
        auto r = co_await call_broker<offset_commit_response>(broker, rq);
        if (r.err) {
          out.err = r.err;
          co_return out;
        }
        for (const auto& t : r.body.topics)
          for (const auto& p : t.partitions) {
            if (p.error_code != 0 && !out.err) out.err = group_error(p.error_code);
            out.partitions.push_back({t.name, p.partition_index, -1, std::nullopt, p.error_code});
          }
        // Offsets match the request's order; copy the committed values back.
        for (auto& p : out.partitions)
          for (const auto& o : offsets)
            if (o.topic == p.topic && o.partition == p.partition) p.offset = o.offset;
        co_return out;
      });
}

awaitable<delete_groups_result> client::delete_groups(std::vector<std::string> groups) {
  auto self = impl_;
  delete_groups_result out;
  for (const auto& group : groups) {
    struct one {
      error err;
    };
    auto r = co_await self->with_coordinator<one>(group, [&](int32_t broker) -> awaitable<one> {
      one o;
      delete_groups_request rq;
      rq.groups_names.push_back(group);
      auto resp = co_await call_broker<delete_groups_response>(broker, rq);
      if (resp.err) {
        o.err = resp.err;
        co_return o;
      }
      if (resp.body.results.empty()) {
        o.err = make_error(client_error::protocol, "empty DeleteGroups response");
        co_return o;
      }
      if (resp.body.results.front().error_code != 0)
        o.err = group_error(resp.body.results.front().error_code);
      co_return o;
    });
    out.results.emplace_back(group, r.err.code);
    if (r.err && !out.err) out.err = r.err;
  }
  co_return out;
}

std::optional<consumer_assignment> decode_consumer_assignment(std::span<const std::byte> bytes) {
  consumer_assignment a;
  if (bytes.empty()) return a;
  reader in(bytes);
  a.version = in.get_int16();
  const int32_t topics = in.get_array_length(false);
  for (int32_t i = 0; i < topics && in.ok(); ++i) {
    std::string topic = in.get_string(false);
    const int32_t n = in.get_array_length(false);
    std::vector<int32_t> parts;
    for (int32_t j = 0; j < n && in.ok(); ++j)
      parts.push_back(in.get_int32());
    a.partitions.emplace_back(std::move(topic), std::move(parts));
  }
  if (!in.ok()) return std::nullopt;
  // User data (nullable bytes); later versions add fields after it, ignored here.
  if (in.remaining() >= 4) {
    auto ud = in.get_nullable_bytes(false);
    if (!in.ok()) return std::nullopt;
    if (ud) a.user_data = std::move(*ud);
  }
  return a;
}

std::vector<std::byte> encode_consumer_assignment(const consumer_assignment& a) {
  writer w;
  w.put_int16(a.version);
  w.put_array_length(static_cast<int32_t>(a.partitions.size()), false);
  for (const auto& [topic, parts] : a.partitions) {
    w.put_string(topic, false);
    w.put_array_length(static_cast<int32_t>(parts.size()), false);
    for (int32_t p : parts)
      w.put_int32(p);
  }
  w.put_bytes(a.user_data, false);
  return w.flatten();
}

// ---------------------------------------------------------------------------------------------
// record_reader

}  // namespace keel::net::kafka
