// admin_client: a blocking client of a broker's admin protocol, for the keel tool and tests.
// One request at a time; every call has a deadline and reports failure as a message.
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <chrono>
#include <optional>
#include <string>
#include <vector>

#include "keel/net/admin.h"
#include "keel/net/frame.h"

namespace keel::net {

class admin_client {
 public:
  admin_client() : socket_(io_) {}
  // Connects to host:port and says hello as a client. False (with error()) on failure.
  bool connect(const std::string& host, uint16_t port,
               std::chrono::milliseconds timeout = std::chrono::seconds(2));
  const std::string& error() const { return error_; }

  std::optional<describe_cluster_response> describe_cluster();
  std::optional<topic_response> create_topic(const std::string& name, int32_t partitions,
                                             int16_t replication_factor);
  std::optional<topic_response> delete_topic(const std::string& name);
  std::optional<produce_response> produce(produce_request request);
  std::optional<fetch_response> fetch(fetch_request request);

  void set_timeout(std::chrono::milliseconds t) { timeout_ = t; }

 private:
  std::optional<std::vector<std::byte>> call(admin_type request_type,
                                             const std::vector<std::byte>& payload,
                                             admin_type response_type);

  boost::asio::io_context io_;
  boost::asio::ip::tcp::socket socket_;
  frame_decoder decoder_{64u << 20};
  std::string error_;
  uint64_t next_correlation_ = 1;
  std::chrono::milliseconds timeout_{std::chrono::seconds(10)};
};

}  // namespace keel::net
