// The inter-broker transport on real loopback sockets: frames flow both ways in order, a peer
// that sends garbage or vanishes mid-frame is dropped while other links keep working, a
// restarted peer is redialled, a full send queue pushes back instead of growing, and control
// frames overtake queued bulk ones.
#include "keel/net/transport.h"

#include <gtest/gtest.h>

#include <boost/asio/connect.hpp>
#include <boost/asio/write.hpp>
#include <algorithm>
#include <functional>
#include <string>

namespace keel::net {
namespace {

namespace asio = boost::asio;
using asio::ip::tcp;

struct received {
  node_id from;
  uint16_t type;
  std::string payload;
};

struct node {
  node(asio::io_context& io, node_id id, uint16_t port = 0) {
    transport_config c;
    c.self = id;
    c.listen_port = port;
    c.max_frame_bytes = 1 << 20;
    c.send_queue_max_bytes = 1 << 16;
    t = std::make_unique<transport>(
        io, c,
        [this](node_id from, uint16_t type, std::span<const std::byte> p) {
          inbox.push_back(
              {from, type, std::string(reinterpret_cast<const char*>(p.data()), p.size())});
        },
        [this](node_id peer, bool up) { (up ? ups : downs).push_back(peer); });
    t->listen();
  }
  std::unique_ptr<transport> t;
  std::vector<received> inbox;
  std::vector<node_id> ups, downs;
};

bool run_until(asio::io_context& io, const std::function<bool()>& done,
               std::chrono::milliseconds limit = std::chrono::seconds(10)) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (!done()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    io.restart();
    io.run_for(std::chrono::milliseconds(5));
  }
  return true;
}

std::span<const std::byte> bytes_of(const std::string& s) {
  return std::as_bytes(std::span(s));
}

TEST(transport, frames_flow_both_ways_in_order_over_one_connection) {
  asio::io_context io;
  node a(io, 1), b(io, 2);
  a.t->add_peer(2, "127.0.0.1", b.t->local_port());
  b.t->add_peer(1, "127.0.0.1", a.t->local_port());
  ASSERT_TRUE(run_until(io, [&] { return a.t->connected(2) && b.t->connected(1); }));
  for (int i = 0; i < 500; ++i) {
    const std::string m = "a->b " + std::to_string(i);
    ASSERT_TRUE(a.t->send(2, 20, bytes_of(m)));
    const std::string r = "b->a " + std::to_string(i);
    ASSERT_TRUE(b.t->send(1, 21, bytes_of(r)));
  }
  ASSERT_TRUE(run_until(io, [&] { return a.inbox.size() == 500 && b.inbox.size() == 500; }));
  for (int i = 0; i < 500; ++i) {
    EXPECT_EQ(b.inbox[i].from, 1);
    EXPECT_EQ(b.inbox[i].type, 20);
    EXPECT_EQ(b.inbox[i].payload, "a->b " + std::to_string(i));
    EXPECT_EQ(a.inbox[i].payload, "b->a " + std::to_string(i));
  }
  EXPECT_EQ(a.ups, std::vector<node_id>{2});
  EXPECT_EQ(b.ups, std::vector<node_id>{1});
}

TEST(transport, garbage_and_a_peer_vanishing_mid_frame_are_dropped_and_others_keep_working) {
  asio::io_context io;
  node a(io, 1), b(io, 2);
  a.t->add_peer(2, "127.0.0.1", b.t->local_port());
  ASSERT_TRUE(run_until(io, [&] { return b.t->connected(1); }));

  // A client that speaks nonsense.
  tcp::socket junk(io);
  junk.connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), b.t->local_port()));
  asio::write(junk, asio::buffer(std::string("GET / HTTP/1.1\r\nHost: x\r\n\r\n")));
  // A "broker 7" that says hello, starts a frame, and vanishes.
  tcp::socket half(io);
  half.connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), b.t->local_port()));
  std::vector<std::byte> frames;
  node_id seven = 7;
  encode_frame(frames, 1, std::as_bytes(std::span(&seven, 1)));
  std::vector<std::byte> big;
  encode_frame(big, 30, bytes_of(std::string(5000, 'z')));
  frames.insert(frames.end(), big.begin(), big.begin() + 100);
  asio::write(half, asio::buffer(frames));
  ASSERT_TRUE(run_until(io, [&] { return std::count(b.ups.begin(), b.ups.end(), 7) == 1; }));
  half.close();
  ASSERT_TRUE(run_until(io, [&] { return std::count(b.downs.begin(), b.downs.end(), 7) == 1; }));
  EXPECT_TRUE(std::none_of(b.inbox.begin(), b.inbox.end(), [](auto& r) { return r.from == 7; }));

  // An oversized frame from a real peer drops that link; it is redialled and works again.
  std::vector<std::byte> huge(2 << 20, std::byte{'h'});
  EXPECT_FALSE(a.t->send(2, 20, huge));  // the sender refuses what the peer would refuse
  const std::string ok = "still here";
  ASSERT_TRUE(a.t->send(2, 20, bytes_of(ok)));
  ASSERT_TRUE(run_until(io, [&] { return !b.inbox.empty(); }));
  EXPECT_EQ(b.inbox.back().payload, ok);
  EXPECT_TRUE(b.t->connected(1));
}

TEST(transport, a_restarted_peer_is_redialled) {
  asio::io_context io;
  node a(io, 1);
  auto b = std::make_unique<node>(io, 2);
  const uint16_t port = b->t->local_port();
  a.t->add_peer(2, "127.0.0.1", port);
  ASSERT_TRUE(run_until(io, [&] { return a.t->connected(2); }));
  b.reset();  // broker 2 dies
  ASSERT_TRUE(run_until(io, [&] { return !a.t->connected(2); }));
  b = std::make_unique<node>(io, 2, port);  // and comes back on the same port
  ASSERT_TRUE(run_until(io, [&] { return a.t->connected(2); }));
  const std::string m = "after restart";
  ASSERT_TRUE(a.t->send(2, 20, bytes_of(m)));
  ASSERT_TRUE(run_until(io, [&] { return !b->inbox.empty(); }));
  EXPECT_EQ(b->inbox[0].payload, m);
}

TEST(transport, a_full_queue_pushes_back) {
  asio::io_context io;
  node a(io, 1);
  a.t->add_peer(2, "127.0.0.1", 1);  // nobody listens there: the link stays down
  const std::string chunk(1000, 'q');
  int accepted = 0;
  while (a.t->send(2, 20, bytes_of(chunk)))
    ++accepted;
  EXPECT_GT(accepted, 10);
  EXPECT_LE(a.t->queued_bytes(2), size_t{1} << 16);
  EXPECT_FALSE(a.t->send(99, 20, bytes_of(chunk)));  // unknown peer
}

TEST(transport, control_frames_go_ahead_of_queued_bulk_and_have_room_of_their_own) {
  asio::io_context io;
  uint16_t port = 0;
  {
    node probe(io, 2);
    port = probe.t->local_port();
  }
  node a(io, 1);
  a.t->add_peer(2, "127.0.0.1", port);  // nobody listens yet: everything queues
  int bulk = 0;
  while (a.t->send(2, 20, bytes_of("bulk " + std::to_string(bulk) + std::string(1000, 'b'))))
    ++bulk;
  ASSERT_GT(bulk, 10);
  // The bulk lane is full; the control lane still takes frames, and they are written first.
  ASSERT_TRUE(a.t->send(2, 21, bytes_of("control 0"), lane::control));
  ASSERT_TRUE(a.t->send(2, 21, bytes_of("control 1"), lane::control));
  EXPECT_FALSE(a.t->send(2, 20, bytes_of("bulk " + std::to_string(bulk) + std::string(1000, 'b'))));
  node b(io, 2, port);
  ASSERT_TRUE(run_until(io, [&] { return b.inbox.size() == size_t(bulk) + 2; }));
  EXPECT_EQ(b.inbox[0].payload, "control 0");
  EXPECT_EQ(b.inbox[1].payload, "control 1");
  for (int i = 0; i < bulk; ++i)
    EXPECT_EQ(b.inbox[2 + i].payload.substr(0, 5 + std::to_string(i).size()),
              "bulk " + std::to_string(i));
}

TEST(transport, an_empty_lane_takes_a_frame_larger_than_its_bound) {
  asio::io_context io;
  node a(io, 1);
  a.t->add_peer(2, "127.0.0.1", 1);    // nobody listens there: the link stays down
  const std::string big(100000, 'x');  // larger than the fixture's 64 KiB bulk bound
  EXPECT_TRUE(a.t->send(2, 20, bytes_of(big)));
  EXPECT_FALSE(a.t->send(2, 20, bytes_of("then the lane is full")));
  EXPECT_TRUE(a.t->send(2, 21, bytes_of(big), lane::control));  // the other lane is its own
}

// A peer that reads slowly: megabytes of bulk wait in the link's queue, and a control frame
// sent then goes out with the next write, ahead of them, while bulk keeps its own order.
TEST(transport, a_control_frame_overtakes_bulk_queued_behind_a_slow_reader) {
  asio::io_context io;
  tcp::acceptor acceptor(io, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
  transport_config c;
  c.self = 1;
  c.max_frame_bytes = 1 << 20;
  c.send_queue_max_bytes = 64u << 20;
  c.max_bulk_bytes_per_write = 256u << 10;
  transport a(io, c, [](node_id, uint16_t, std::span<const std::byte>) {});
  a.listen();
  tcp::socket peer(io);
  bool accepted = false;
  acceptor.async_accept(peer, [&](const boost::system::error_code& ec) { accepted = !ec; });
  a.add_peer(2, "127.0.0.1", acceptor.local_endpoint().port());  // the lower id dials
  ASSERT_TRUE(run_until(io, [&] { return accepted && a.connected(2); }));
  // 32 MiB of bulk: far more than loopback's socket buffers hold while nobody reads.
  constexpr int bulk = 512;
  for (int i = 0; i < bulk; ++i) {
    std::string m = "bulk " + std::to_string(i) + " ";
    m.resize(64 << 10, 'b');
    ASSERT_TRUE(a.send(2, 20, bytes_of(m)));
  }
  io.restart();
  io.run_for(std::chrono::milliseconds(200));  // the writer fills the socket buffers and waits
  ASSERT_TRUE(a.send(2, 21, bytes_of("control"), lane::control));
  // Now read everything, in order.
  peer.non_blocking(true);
  frame_decoder decoder(1 << 20);
  std::vector<std::string> got;  // payload prefixes, hello left out
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (got.size() < size_t(bulk) + 1 && std::chrono::steady_clock::now() < deadline) {
    io.restart();
    io.run_for(std::chrono::milliseconds(1));
    boost::system::error_code ec;
    auto room = decoder.prepare(1 << 20);
    const size_t n = peer.read_some(asio::buffer(room.data(), room.size()), ec);
    decoder.commit(ec ? 0 : n);
    frame_decoder::frame_view f;
    while (decoder.next(f) == frame_decoder::status::frame) {
      if (f.type < transport::first_user_type) continue;
      const std::string payload(reinterpret_cast<const char*>(f.payload.data()),
                                std::min<size_t>(f.payload.size(), 16));
      got.push_back(payload.substr(0, payload.find(' ', 5)));
    }
  }
  ASSERT_EQ(got.size(), size_t(bulk) + 1);
  const auto control = std::find(got.begin(), got.end(), "control") - got.begin();
  // Far ahead of the last bulk frame (what the socket buffers held, then one write, went first).
  EXPECT_LT(control, bulk - 64) << "the control frame came at position " << control;
  int next = 0;
  for (const auto& g : got) {
    if (g == "control") continue;
    EXPECT_EQ(g, "bulk " + std::to_string(next));
    ++next;
  }
}

}  // namespace
}  // namespace keel::net
