#include "keel/net/transport.h"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <cstdio>
#include <cstring>
#include <deque>
#include <optional>

namespace keel::net {

namespace asio = boost::asio;
using asio::ip::tcp;

namespace {

constexpr uint16_t hello_type = 1;
constexpr auto use_tuple = asio::as_tuple(asio::use_awaitable);
// Frames gathered into one write: bounded so a write stays within a few writev calls.
constexpr size_t max_frames_per_write = 256;

void log_line(const std::string& s) {
  std::fprintf(stderr, "keel: transport: %s\n", s.c_str());
}

std::vector<std::byte> hello_frame(node_id self) {
  std::byte id[4];
  std::memcpy(id, &self, 4);
  std::vector<std::byte> out;
  encode_frame(out, hello_type, id);
  return out;
}

}  // namespace

struct transport::link {
  explicit link(asio::io_context& io) : timer(io) {}
  node_id peer = 0;
  std::string host;
  uint16_t port = 0;
  bool bootstrap = false;  // dialled whatever the ids say
  std::optional<tcp::socket> socket;
  uint64_t generation = 0;  // bumped for every socket, so stale coroutines notice
  bool up = false;
  bool dialing = false;
  bool writing = false;
  // Encoded frames not yet handed to a write, one queue per lane, each frame its own buffer:
  // queueing never moves the frames already queued.
  struct frame_queue {
    std::deque<std::vector<std::byte>> frames;
    size_t bytes = 0;
  };
  frame_queue bulk;
  frame_queue control;
  frame_queue& of(lane which) { return which == lane::control ? control : bulk; }
  bool idle() const { return bulk.frames.empty() && control.frames.empty(); }
  std::vector<std::vector<std::byte>> in_write;  // the frames of the write in flight
  size_t in_write_bytes = 0;
  std::chrono::milliseconds backoff{0};
  asio::steady_timer timer;
};

transport::transport(asio::io_context& io, transport_config config, frame_handler on_frame,
                     link_handler on_link)
    : io_(io),
      config_(std::move(config)),
      on_frame_(std::move(on_frame)),
      on_link_(std::move(on_link)),
      acceptor_(io),
      jitter_(std::random_device{}()) {}

bool transport::dials(const link& l) const {
  return config_.self < l.peer || l.bootstrap;
}

transport::~transport() {
  stop();
  *alive_ = false;  // coroutines still queued on the io_context end without touching us
}

void transport::listen() {
  tcp::endpoint ep(asio::ip::make_address(config_.listen_host), config_.listen_port);
  acceptor_.open(ep.protocol());
  acceptor_.set_option(tcp::acceptor::reuse_address(true));
  acceptor_.bind(ep);  // throws with the address in use named by the caller
  acceptor_.listen();
  accept_loop();
}

uint16_t transport::local_port() const {
  return acceptor_.local_endpoint().port();
}

void transport::add_peer(node_id id, std::string host, uint16_t port, bool bootstrap) {
  if (id == config_.self) return;
  auto& l = links_[id];
  if (!l) {
    l = std::make_shared<link>(io_);
    l->peer = id;
    l->backoff = config_.reconnect_min;
  }
  l->host = std::move(host);
  l->port = port;
  l->bootstrap = l->bootstrap || bootstrap;
  if (dials(*l) && !l->up && !l->dialing) dial(l);
}

bool transport::send(node_id to, uint16_t type, std::span<const std::byte> payload, lane which) {
  auto it = links_.find(to);
  if (it == links_.end() || stopped_) return false;
  if (!has_room(*it->second, which, frame_header_size + payload.size())) return false;
  std::vector<std::byte> frame;
  frame.reserve(frame_header_size + payload.size());
  encode_frame(frame, type, payload);
  enqueue(it->second, std::move(frame), which);
  return true;
}

bool transport::send_frame(node_id to, std::vector<std::byte> frame, lane which) {
  auto it = links_.find(to);
  if (it == links_.end() || stopped_) return false;
  if (!has_room(*it->second, which, frame.size())) return false;
  enqueue(it->second, std::move(frame), which);
  return true;
}

bool transport::has_room(link& l, lane which, size_t frame_bytes) const {
  const size_t bound =
      which == lane::control ? config_.control_queue_max_bytes : config_.send_queue_max_bytes;
  // A frame the peer would refuse (frame_decoder's maximum) is refused here. An empty lane
  // takes any other frame: one larger than the lane's bound (a metadata snapshot) must still
  // get through.
  if (frame_bytes > frame_header_size + config_.max_frame_bytes) return false;
  const size_t queued = l.of(which).bytes;
  return queued == 0 || queued + frame_bytes <= bound;
}

void transport::enqueue(const std::shared_ptr<link>& l, std::vector<std::byte> frame, lane which) {
  auto& q = l->of(which);
  q.bytes += frame.size();
  q.frames.push_back(std::move(frame));
  start_writing(l);
}

bool transport::connected(node_id peer) const {
  auto it = links_.find(peer);
  return it != links_.end() && it->second->up;
}

size_t transport::queued_bytes(node_id peer) const {
  auto it = links_.find(peer);
  if (it == links_.end()) return 0;
  const link& l = *it->second;
  return l.bulk.bytes + l.control.bytes + l.in_write_bytes;
}

void transport::stop() {
  if (stopped_) return;
  stopped_ = true;
  boost::system::error_code ignored;
  acceptor_.close(ignored);
  for (auto& [id, l] : links_) {
    l->timer.cancel();
    if (l->socket) l->socket->close(ignored);
    l->up = false;
    ++l->generation;
  }
}

void transport::drop(const std::shared_ptr<link>& l, uint64_t generation,
                     const std::string& reason) {
  if (generation != l->generation || stopped_) return;
  log_line("link to broker " + std::to_string(l->peer) + " dropped: " + reason);
  boost::system::error_code ignored;
  if (l->socket) l->socket->close(ignored);
  l->socket.reset();
  ++l->generation;
  const bool was_up = l->up;
  l->up = false;
  // Whatever was mid-write is lost with the socket; Raft resends what matters.
  l->in_write.clear();
  l->in_write_bytes = 0;
  if (was_up && on_link_) on_link_(l->peer, false);
  if (l->peer < 0) {
    links_.erase(l->peer);  // client sessions are not redialled
    return;
  }
  // Only a peer whose address is known is dialled (one known only by its inbound hello waits).
  if (dials(*l) && !l->dialing && !l->host.empty()) dial(l);
}

void transport::attach(std::shared_ptr<link> l, tcp::socket socket, bool outbound,
                       std::vector<std::byte> already_read) {
  boost::system::error_code ignored;
  if (l->up) {
    // Both brokers dialled (a bootstrap dial crossing the lower id's dial): the connection the
    // lower id made is the one both keep, so the pair settles on one connection.
    const bool new_is_canonical = outbound == (config_.self < l->peer);
    if (!new_is_canonical) {
      socket.close(ignored);
      return;
    }
    l->socket->close(ignored);  // the old one's coroutines see the generation change and end
    l->in_write.clear();
    l->in_write_bytes = 0;
  }
  socket.set_option(tcp::no_delay(true), ignored);
  l->socket.emplace(std::move(socket));
  const uint64_t generation = ++l->generation;
  const bool was_up = l->up;
  l->up = true;
  l->backoff = config_.reconnect_min;
  if (!was_up && on_link_) on_link_(l->peer, true);
  read_loop(l, generation, std::move(already_read));
  start_writing(l);
}

void transport::dial(std::shared_ptr<link> l) {
  l->dialing = true;
  asio::co_spawn(
      io_,
      [this, l, alive = alive_]() -> asio::awaitable<void> {
        while (*alive && !stopped_ && !l->up) {  // a link up (either way) ends the dialling
          boost::system::error_code ec;
          const auto address = asio::ip::make_address(l->host, ec);
          if (!ec) {
            tcp::socket socket(io_);
            // A connect that hangs (a cut link) is abandoned after a bound.
            l->timer.expires_after(std::chrono::seconds(3));
            l->timer.async_wait([&socket](const boost::system::error_code& e) {
              boost::system::error_code ignored;
              if (!e) socket.close(ignored);
            });
            auto [connect_ec] =
                co_await socket.async_connect(tcp::endpoint(address, l->port), use_tuple);
            l->timer.cancel();  // before anything else: its handler refers to `socket`
            if (!*alive) co_return;
            if (stopped_) break;
            if (!connect_ec) {
              const auto hello = hello_frame(config_.self);
              auto [write_ec, n] =
                  co_await asio::async_write(socket, asio::buffer(hello), use_tuple);
              if (!*alive) co_return;
              if (stopped_) break;
              if (!write_ec) {
                l->dialing = false;
                attach(l, std::move(socket), /*outbound=*/true);
                co_return;
              }
            }
          } else {
            log_line("broker " + std::to_string(l->peer) + " has an unusable address '" + l->host +
                     "'");
          }
          // Jittered exponential backoff, so brokers restarting together do not dial in step.
          std::uniform_int_distribution<int64_t> jitter(0, l->backoff.count() / 2);
          l->timer.expires_after(l->backoff + std::chrono::milliseconds(jitter(jitter_)));
          co_await l->timer.async_wait(use_tuple);
          if (!*alive) co_return;
          l->backoff = std::min(l->backoff * 2, config_.reconnect_max);
        }
        l->dialing = false;
      },
      asio::detached);
}

void transport::accept_loop() {
  asio::co_spawn(
      io_,
      [this, alive = alive_]() -> asio::awaitable<void> {
        if (!*alive) co_return;  // the transport was destroyed before this started
        while (!stopped_) {
          auto [ec, socket] = co_await acceptor_.async_accept(use_tuple);
          if (!*alive || stopped_) co_return;
          if (ec) {
            log_line("accept failed: " + ec.message());
            continue;
          }
          serve_inbound(std::move(socket));
        }
      },
      asio::detached);
}

void transport::serve_inbound(tcp::socket socket) {
  asio::co_spawn(
      io_,
      [this, alive = alive_,
       s = std::make_shared<tcp::socket>(std::move(socket))]() -> asio::awaitable<void> {
        if (!*alive) co_return;  // the transport was destroyed before this started
        // The hello must arrive promptly and be well formed; anything else is dropped.
        asio::steady_timer deadline(io_);
        deadline.expires_after(std::chrono::seconds(5));
        deadline.async_wait([s](const boost::system::error_code& e) {
          boost::system::error_code ignored;
          if (!e) s->close(ignored);
        });
        frame_decoder decoder(64);
        std::byte buf[256];
        frame_decoder::frame_view f;
        std::string remote = "unknown peer";
        boost::system::error_code rec;
        if (auto ep = s->remote_endpoint(rec); !rec)
          remote = ep.address().to_string() + ":" + std::to_string(ep.port());
        for (;;) {
          auto [ec, n] = co_await s->async_read_some(asio::buffer(buf), use_tuple);
          if (!*alive || stopped_) co_return;
          if (ec) {
            log_line("inbound connection from " + remote +
                     " closed before its hello: " + ec.message());
            co_return;
          }
          decoder.feed(std::span(buf, n));
          const auto st = decoder.next(f);
          if (st == frame_decoder::status::need_more) continue;
          deadline.cancel();
          if (st == frame_decoder::status::error || f.type != hello_type || f.payload.size() != 4) {
            log_line("inbound connection from " + remote + " dropped: " +
                     (st == frame_decoder::status::error ? decoder.error_message()
                                                         : "the first frame is not a hello"));
            boost::system::error_code ignored;
            s->close(ignored);
            co_return;
          }
          node_id peer;
          std::memcpy(&peer, f.payload.data(), 4);
          if (peer == config_.self || peer == 0) {
            log_line("inbound connection from " + remote + " dropped: a bad hello");
            boost::system::error_code ignored;
            s->close(ignored);
            co_return;
          }
          // A negative id is a client (the keel tool, a test): it gets a session id of its own,
          // negative too, and its link ends with its connection.
          if (peer < 0) peer = next_client_id_--;
          auto& l = links_[peer];
          if (!l) {
            l = std::make_shared<link>(io_);
            l->peer = peer;
            l->backoff = config_.reconnect_min;
          }
          const auto rest = decoder.pending();  // frames that came right behind the hello
          attach(l, std::move(*s), /*outbound=*/false,
                 std::vector<std::byte>(rest.begin(), rest.end()));
          co_return;
        }
      },
      asio::detached);
}

void transport::read_loop(std::shared_ptr<link> l, uint64_t generation,
                          std::vector<std::byte> already_read) {
  asio::co_spawn(
      io_,
      [this, l, generation, alive = alive_,
       first = std::move(already_read)]() -> asio::awaitable<void> {
        if (!*alive) co_return;  // the transport was destroyed before this started
        frame_decoder decoder(config_.max_frame_bytes);
        bool have_first = !first.empty();
        while (generation == l->generation) {
          if (have_first) {
            decoder.feed(first);
            have_first = false;
          } else {
            // Straight into the decoder's buffer: a frame's bytes are copied only by the kernel.
            auto room = decoder.prepare(64 << 10);
            auto [ec, got] = co_await l->socket->async_read_some(
                asio::buffer(room.data(), room.size()), use_tuple);
            if (!*alive || generation != l->generation || stopped_) co_return;
            if (ec) {
              const bool mid_frame = decoder.buffered() > 0;
              drop(l, generation,
                   (ec == asio::error::eof ? std::string("closed by the peer") : ec.message()) +
                       (mid_frame ? " in the middle of a frame" : ""));
              co_return;
            }
            decoder.commit(got);
          }
          frame_decoder::frame_view f;
          for (;;) {
            const auto st = decoder.next(f);
            if (st == frame_decoder::status::need_more) break;
            if (st == frame_decoder::status::error) {
              drop(l, generation, "protocol error: " + decoder.error_message());
              co_return;
            }
            if (f.type < first_user_type) continue;  // transport frames after the hello: ignored
            on_frame_(l->peer, f.type, f.payload);
            if (!*alive || generation != l->generation)
              co_return;  // the handler stopped or replaced us
          }
        }
      },
      asio::detached);
}

void transport::start_writing(const std::shared_ptr<link>& l) {
  if (l->writing || !l->up || l->idle()) return;
  l->writing = true;
  asio::co_spawn(
      io_,
      [this, l, generation = l->generation, alive = alive_]() -> asio::awaitable<void> {
        if (!*alive) co_return;  // the transport was destroyed before this started
        // Everything queued while a write is in flight goes out together in the next one, as
        // one gathered write (up to max_frames_per_write frames): control frames first, then
        // bulk up to max_bulk_bytes_per_write, so a control frame waits for at most that much.
        std::vector<asio::const_buffer> buffers;
        auto take = [&](link::frame_queue& q) {
          l->in_write.push_back(std::move(q.frames.front()));
          q.frames.pop_front();
          l->in_write_bytes += l->in_write.back().size();
          q.bytes -= l->in_write.back().size();
          buffers.push_back(asio::buffer(l->in_write.back()));
        };
        while (generation == l->generation && !l->idle()) {
          buffers.clear();
          // One place is always left for bulk, so a flood of control frames cannot starve it.
          while (!l->control.frames.empty() && l->in_write.size() + 1 < max_frames_per_write)
            take(l->control);
          size_t bulk_bytes = 0;
          while (!l->bulk.frames.empty() && l->in_write.size() < max_frames_per_write &&
                 (bulk_bytes == 0 ||
                  bulk_bytes + l->bulk.frames.front().size() <= config_.max_bulk_bytes_per_write)) {
            bulk_bytes += l->bulk.frames.front().size();
            take(l->bulk);
          }
          auto [ec, n] = co_await asio::async_write(*l->socket, buffers, use_tuple);
          if (!*alive) co_return;
          if (generation != l->generation || stopped_) break;
          if (ec) {
            l->writing = false;
            drop(l, generation, "write failed: " + ec.message());
            co_return;
          }
          l->in_write.clear();
          l->in_write_bytes = 0;
        }
        l->writing = false;
        if (generation != l->generation) start_writing(l);  // a new socket took over
      },
      asio::detached);
}

}  // namespace keel::net
