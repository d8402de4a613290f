#include "keel/net/kafka_listener.h"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <cstdio>
#include <deque>
#include <optional>

namespace keel::net {
namespace asio = boost::asio;
using asio::ip::tcp;

namespace {

constexpr auto use_tuple = asio::as_tuple(asio::use_awaitable);

void log_line(const std::string& s) {
  std::fprintf(stderr, "keel: kafka: %s\n", s.c_str());
  std::fflush(stderr);
}

// A steady_timer used as a wake-up signal: wait() sleeps until wake() (single-threaded, so a
// caller checks its condition before waiting and no wake-up is lost).
struct signal {
  explicit signal(asio::io_context& io) : timer(io) {}
  asio::awaitable<void> wait() {
    timer.expires_at(asio::steady_timer::time_point::max());
    co_await timer.async_wait(use_tuple);
  }
  void wake() { timer.cancel(); }
  asio::steady_timer timer;
};

}  // namespace

size_t kafka_response::size() const {
  size_t n = 0;
  for (auto p : pieces)
    n += p.size();
  return n;
}

struct kafka_listener::connection {
  connection(asio::io_context& io, tcp::socket s)
      : socket(std::move(s)), readable(io), writable(io) {}

  struct slot {
    size_t request_bytes = 0;
    std::optional<kafka_response> response;
  };

  tcp::socket socket;
  uint64_t id = 0;
  std::string peer;
  uint64_t first_seq = 0;  // the sequence number of slots.front()
  std::deque<slot> slots;  // requests in arrival order, answered or not
  size_t buffered = 0;     // bytes of unanswered requests and unwritten responses
  signal readable;         // the reader waits here while over its limits
  signal writable;         // the writer waits here for the next response in order
  bool closed = false;

  void close(const std::string& why) {
    if (closed) return;
    closed = true;
    if (!why.empty()) log_line("closing connection from " + peer + ": " + why);
    boost::system::error_code ignored;
    socket.shutdown(tcp::socket::shutdown_both, ignored);
    socket.close(ignored);
    readable.wake();
    writable.wake();
  }
};

kafka_listener::kafka_listener(asio::io_context& io, kafka_listener_config config,
                               request_handler handler)
    : io_(io), config_(std::move(config)), handler_(std::move(handler)), acceptor_(io) {}

kafka_listener::~kafka_listener() {
  stop();
}

void kafka_listener::listen() {
  tcp::endpoint ep(asio::ip::make_address(config_.host), config_.port);
  acceptor_.open(ep.protocol());
  acceptor_.set_option(tcp::acceptor::reuse_address(true));
  acceptor_.bind(ep);
  acceptor_.listen();
  accept_loop();
}

uint16_t kafka_listener::local_port() const {
  boost::system::error_code ec;
  auto ep = acceptor_.local_endpoint(ec);
  return ec ? 0 : ep.port();
}

size_t kafka_listener::connections() const {
  size_t n = 0;
  for (const auto& w : connections_)
    n += w.expired() ? 0 : 1;
  return n;
}

void kafka_listener::stop() {
  *alive_ = false;
  boost::system::error_code ignored;
  acceptor_.close(ignored);
  for (auto& w : connections_)
    if (auto c = w.lock()) c->close("");
  connections_.clear();
}

void kafka_listener::accept_loop() {
  asio::co_spawn(
      io_,
      [this, alive = alive_]() -> asio::awaitable<void> {
        while (*alive) {
          auto [ec, socket] = co_await acceptor_.async_accept(use_tuple);
          if (!*alive) co_return;
          if (ec) {
            if (ec == asio::error::operation_aborted) co_return;
            log_line("accept failed: " + ec.message());
            continue;
          }
          boost::system::error_code ignored;
          socket.set_option(tcp::no_delay(true), ignored);
          auto c = std::make_shared<connection>(io_, std::move(socket));
          c->id = next_connection_++;
          auto ep = c->socket.remote_endpoint(ignored);
          c->peer = ep.address().to_string() + ":" + std::to_string(ep.port());
          std::erase_if(connections_, [](const auto& w) { return w.expired(); });
          connections_.push_back(c);
          serve(c);
          write_loop(c);
        }
      },
      asio::detached);
}

void kafka_listener::serve(std::shared_ptr<connection> c) {
  asio::co_spawn(
      io_,
      [this, c, alive = alive_]() -> asio::awaitable<void> {
        while (!c->closed) {
          uint8_t prefix[4];
          auto [ec, n] = co_await asio::async_read(c->socket, asio::buffer(prefix), use_tuple);
          if (c->closed || !*alive) co_return;
          if (ec) {
            c->close(ec == asio::error::eof ? "" : "read failed: " + ec.message());
            co_return;
          }
          const int32_t size =
              static_cast<int32_t>((uint32_t(prefix[0]) << 24) | (uint32_t(prefix[1]) << 16) |
                                   (uint32_t(prefix[2]) << 8) | prefix[3]);
          // The smallest request header is api key, version and correlation id: 8 bytes.
          if (size < 8) {
            c->close("request size " + std::to_string(size) + " is below the 8-byte header");
            co_return;
          }
          if (static_cast<uint32_t>(size) > config_.max_request_bytes) {
            c->close("request size " + std::to_string(size) + " exceeds socket.request.max.bytes " +
                     std::to_string(config_.max_request_bytes));
            co_return;
          }
          // Backpressure: stop reading while this connection holds too much.
          while (!c->closed && !c->slots.empty() &&
                 (c->buffered + static_cast<size_t>(size) > config_.max_buffered_bytes ||
                  c->slots.size() >= config_.max_in_flight))
            co_await c->readable.wait();
          if (c->closed) co_return;
          kafka_request req;
          req.connection = c->id;
          req.peer = c->peer;
          req.frame.resize(static_cast<size_t>(size));
          auto [ec2, n2] = co_await asio::async_read(c->socket, asio::buffer(req.frame), use_tuple);
          if (c->closed || !*alive) co_return;
          if (ec2) {
            c->close("connection lost mid-request: " + ec2.message());
            co_return;
          }
          const uint64_t seq = c->first_seq + c->slots.size();
          c->slots.push_back({static_cast<size_t>(size), std::nullopt});
          c->buffered += static_cast<size_t>(size);
          std::weak_ptr<connection> weak = c;
          auto respond = [this, weak, seq, alive](kafka_response r) {
            asio::post(io_, [weak, seq, alive, r = std::move(r)]() mutable {
              auto conn = weak.lock();
              if (!*alive || !conn || conn->closed || seq < conn->first_seq) return;
              auto& s = conn->slots[seq - conn->first_seq];
              if (s.response) return;  // answered twice: keep the first
              conn->buffered -= s.request_bytes;
              s.request_bytes = 0;
              conn->buffered += r.size();
              s.response = std::move(r);
              if (seq == conn->first_seq) conn->writable.wake();
            });
          };
          handler_(std::move(req), std::move(respond));
        }
      },
      asio::detached);
}

void kafka_listener::write_loop(std::shared_ptr<connection> c) {
  asio::co_spawn(
      io_,
      [c, alive = alive_]() -> asio::awaitable<void> {
        std::vector<std::array<uint8_t, 4>> prefixes;
        std::vector<asio::const_buffer> buffers;
        std::vector<kafka_response> batch;
        while (!c->closed && *alive) {
          if (c->slots.empty() || !c->slots.front().response) {
            co_await c->writable.wait();
            continue;
          }
          // Every answered request at the front goes out in one gathered write.
          batch.clear();
          while (!c->slots.empty() && c->slots.front().response) {
            batch.push_back(std::move(*c->slots.front().response));
            c->slots.pop_front();
            ++c->first_seq;
            if (!batch.back().close_reason.empty()) break;
          }
          prefixes.assign(batch.size(), {});
          buffers.clear();
          size_t bytes = 0;
          for (size_t i = 0; i < batch.size(); ++i) {
            const kafka_response& r = batch[i];
            // A close without bytes of its own writes nothing, not an empty (size 0) frame.
            if (r.none || (r.pieces.empty() && !r.close_reason.empty())) continue;
            const auto n = static_cast<uint32_t>(r.size());
            prefixes[i] = {uint8_t(n >> 24), uint8_t(n >> 16), uint8_t(n >> 8), uint8_t(n)};
            buffers.emplace_back(prefixes[i].data(), 4);
            for (auto p : r.pieces)
              if (!p.empty()) buffers.emplace_back(p.data(), p.size());
            bytes += n;
          }
          if (!buffers.empty()) {
            auto [ec, n] = co_await asio::async_write(c->socket, buffers, use_tuple);
            if (c->closed) co_return;
            if (ec) {
              c->close("write failed: " + ec.message());
              co_return;
            }
          }
          c->buffered -= std::min(c->buffered, bytes);
          c->readable.wake();
          if (!batch.back().close_reason.empty()) {
            c->close(batch.back().close_reason);
            co_return;
          }
        }
      },
      asio::detached);
}

}  // namespace keel::net
