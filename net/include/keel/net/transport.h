// transport: the inter-broker links of one broker, over Boost.Asio TCP with C++20 coroutines.
//
// One TCP connection per pair of brokers: the broker with the lower node id dials, the other
// accepts; the first frame on a connection is a hello naming the dialer. Both sides then send
// and receive frames (frame.h) on it. Sends are queued per peer and written in batches (every
// frame queued while a write is in flight goes out in the next, gathered write). Each peer has two
// queues, or lanes: bulk (replicated data, in order) and control (what must not wait behind data:
// acknowledgements, votes, liveness, metadata), which goes ahead of any bulk frame not yet
// written, so a link busy with megabytes of data still carries them promptly. Frames of one lane
// keep their order; the two lanes do not keep order with each other. A lane holds at most its
// bound (send_queue_max_bytes, control_queue_max_bytes; an empty lane takes any frame up to
// max_frame_bytes), and send() says false beyond that, so the caller (Raft) retries later instead
// of growing memory. A broken link is redialled with jittered exponential backoff. A
// peer that sends garbage, an oversized frame, or vanishes mid-frame is dropped with a logged
// reason; the transport keeps serving every other link.
//
// Clients (the keel tool, tests) connect like brokers but say hello with a negative id; each
// connection becomes a session with its own negative id, reachable by send() until it closes.
//
// Threading: a transport belongs to one io_context and is touched only on its thread.
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "keel/net/frame.h"

namespace keel::net {

using node_id = int32_t;

struct transport_config {
  node_id self = 0;
  std::string listen_host = "127.0.0.1";
  uint16_t listen_port = 0;  // 0: any free port (see local_port())
  uint32_t max_frame_bytes = frame_default_max_bytes;
  size_t send_queue_max_bytes = 64u << 20;     // the bulk lane
  size_t control_queue_max_bytes = 16u << 20;  // the control lane
  size_t max_bulk_bytes_per_write = 2u << 20;  // bounds how long control frames wait behind bulk
  std::chrono::milliseconds reconnect_min{20};
  std::chrono::milliseconds reconnect_max{1000};
};

// Which of a peer's queues a frame joins (see the header comment).
enum class lane : uint8_t { bulk, control };

class transport {
 public:
  using frame_handler =
      std::function<void(node_id from, uint16_t type, std::span<const std::byte> payload)>;
  using link_handler = std::function<void(node_id peer, bool up)>;

  // Frame types below this are the transport's own.
  static constexpr uint16_t first_user_type = 16;

  transport(boost::asio::io_context& io, transport_config config, frame_handler on_frame,
            link_handler on_link = {});
  ~transport();
  transport(const transport&) = delete;
  transport& operator=(const transport&) = delete;

  // Binds the listener. Throws on failure: this runs at start-up.
  void listen();
  uint16_t local_port() const;
  // Adds (or re-addresses) a peer; dials it when this broker's id is the lower one, or always
  // when `bootstrap` (a seed this broker must reach first: the seed cannot know a new broker's
  // address before it registers). A link already up, from either side, is kept.
  void add_peer(node_id id, std::string host, uint16_t port, bool bootstrap = false);
  // Queues one frame for `to`; false when the peer is unknown or the lane's queue is full.
  bool send(node_id to, uint16_t type, std::span<const std::byte> payload, lane l = lane::bulk);
  // The same for a frame already encoded (seal_frame), handed over without a copy.
  bool send_frame(node_id to, std::vector<std::byte> frame, lane l = lane::bulk);
  bool connected(node_id peer) const;
  size_t queued_bytes(node_id peer) const;
  // Closes every link and the listener; pending coroutines end on the io_context.
  void stop();

 private:
  struct link;
  void dial(std::shared_ptr<link> l);
  bool dials(const link& l) const;
  void attach(std::shared_ptr<link> l, boost::asio::ip::tcp::socket socket, bool outbound,
              std::vector<std::byte> already_read = {});
  void drop(const std::shared_ptr<link>& l, uint64_t generation, const std::string& reason);
  bool has_room(link& l, lane which, size_t frame_bytes) const;
  void enqueue(const std::shared_ptr<link>& l, std::vector<std::byte> frame, lane which);
  void start_writing(const std::shared_ptr<link>& l);
  void accept_loop();
  void serve_inbound(boost::asio::ip::tcp::socket socket);
  void read_loop(std::shared_ptr<link> l, uint64_t generation, std::vector<std::byte> already_read);

  boost::asio::io_context& io_;
  transport_config config_;
  frame_handler on_frame_;
  link_handler on_link_;
  boost::asio::ip::tcp::acceptor acceptor_;
  std::map<node_id, std::shared_ptr<link>> links_;
  std::mt19937_64 jitter_;
  bool stopped_ = false;
  node_id next_client_id_ = -1;
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

}  // namespace keel::net
