// kafka_listener: the Kafka wire protocol's framing on one io_context — accepts client
// connections, reads size-prefixed request frames, hands each to a handler, and writes the
// responses back in request order (Kafka clients match responses to requests by order as well as
// by correlation id), so many requests may be in flight on one connection.
//
// It knows no API: the handler decodes headers and bodies. Limits protect the broker from one
// client: a frame larger than max_request_bytes closes the connection with a logged reason, and a
// connection stops reading while the bytes of its unanswered requests and unwritten responses
// exceed max_buffered_bytes (backpressure through TCP, not memory).
//
// Threading: the listener and its connections belong to one io_context; `respond` may be called
// from any thread (it posts to that io_context).
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

namespace keel::net {

struct kafka_response {
  // No bytes go back (Produce with acks=0); the next response in order may be written.
  bool none = false;
  // Close the connection once the bytes before have been written (with the reason logged).
  std::string close_reason;
  // The frame body after the size prefix, in order. The spans may point into `keep_alive` (an
  // encoder's buffers, memory-mapped log segments): they are written without a copy.
  std::vector<std::span<const std::byte>> pieces;
  std::shared_ptr<const void> keep_alive;
  size_t size() const;
};

struct kafka_request {
  uint64_t connection = 0;       // unique per connection, for logs and per-connection state
  std::string peer;              // "host:port" of the client
  std::vector<std::byte> frame;  // the request after its size prefix: header and body
};

struct kafka_listener_config {
  std::string host = "127.0.0.1";
  uint16_t port = 0;                        // 0: any free port (see local_port())
  uint32_t max_request_bytes = 100u << 20;  // socket.request.max.bytes
  size_t max_buffered_bytes = 256u << 20;   // per connection: requests + responses not yet written
  size_t max_in_flight = 1000;              // per connection: requests not yet answered
};

class kafka_listener {
 public:
  using respond_fn = std::function<void(kafka_response)>;
  // Called on the listener's io_context for every request; `respond` must be called exactly once.
  using request_handler = std::function<void(kafka_request, respond_fn)>;

  kafka_listener(boost::asio::io_context& io, kafka_listener_config config,
                 request_handler handler);
  ~kafka_listener();
  kafka_listener(const kafka_listener&) = delete;
  kafka_listener& operator=(const kafka_listener&) = delete;

  // Binds and starts accepting. Throws on failure: this runs at start-up.
  void listen();
  uint16_t local_port() const;
  size_t connections() const;
  // Closes the listener and every connection.
  void stop();

 private:
  struct connection;
  void accept_loop();
  void serve(std::shared_ptr<connection> c);
  void write_loop(std::shared_ptr<connection> c);

  boost::asio::io_context& io_;
  kafka_listener_config config_;
  request_handler handler_;
  boost::asio::ip::tcp::acceptor acceptor_;
  std::vector<std::weak_ptr<connection>> connections_;
  uint64_t next_connection_ = 1;
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

}  // namespace keel::net
