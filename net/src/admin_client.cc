#include "keel/net/admin_client.h"

#include <boost/asio/connect.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/write.hpp>
#include <cstring>

namespace keel::net {

namespace asio = boost::asio;
using asio::ip::tcp;

bool admin_client::connect(const std::string& host, uint16_t port,
                           std::chrono::milliseconds timeout) {
  boost::system::error_code ec;
  tcp::resolver resolver(io_);
  auto endpoints = resolver.resolve(host, std::to_string(port), ec);
  if (ec) {
    error_ = "cannot resolve " + host + ": " + ec.message();
    return false;
  }
  // A bounded connect: run the io_context until it connects or the deadline passes.
  bool done = false;
  asio::async_connect(socket_, endpoints,
                      [&](const boost::system::error_code& e, const tcp::endpoint&) {
                        ec = e;
                        done = true;
                      });
  io_.restart();
  io_.run_for(timeout);
  if (!done) {
    socket_.close();
    error_ = "cannot connect to " + host + ":" + std::to_string(port) + ": timed out";
    return false;
  }
  if (ec) {
    error_ = "cannot connect to " + host + ":" + std::to_string(port) + ": " + ec.message();
    return false;
  }
  socket_.set_option(tcp::no_delay(true), ec);
  const int32_t client = -1;
  std::vector<std::byte> hello;
  encode_frame(hello, 1, std::as_bytes(std::span(&client, 1)));
  asio::write(socket_, asio::buffer(hello), ec);
  if (ec) {
    error_ = "cannot say hello: " + ec.message();
    return false;
  }
  return true;
}

std::optional<std::vector<std::byte>> admin_client::call(admin_type request_type,
                                                         const std::vector<std::byte>& payload,
                                                         admin_type response_type) {
  boost::system::error_code ec;
  std::vector<std::byte> frame;
  encode_frame(frame, static_cast<uint16_t>(request_type), payload);
  asio::write(socket_, asio::buffer(frame), ec);
  if (ec) {
    error_ = "send failed: " + ec.message();
    return std::nullopt;
  }
  const auto correlation = decode_correlation(payload);
  const auto deadline = std::chrono::steady_clock::now() + timeout_;
  std::vector<std::byte> buf(64 << 10);
  for (;;) {
    frame_decoder::frame_view f;
    const auto st = decoder_.next(f);
    if (st == frame_decoder::status::error) {
      error_ = "bad frame from the broker: " + decoder_.error_message();
      return std::nullopt;
    }
    if (st == frame_decoder::status::frame) {
      if (f.type == static_cast<uint16_t>(response_type) &&
          decode_correlation(f.payload) == correlation)
        return std::vector<std::byte>(f.payload.begin(), f.payload.end());
      continue;  // a stale answer to an earlier, timed-out request
    }
    const auto left = deadline - std::chrono::steady_clock::now();
    if (left <= std::chrono::milliseconds(0)) {
      error_ = "timed out waiting for the broker";
      return std::nullopt;
    }
    bool done = false;
    size_t got = 0;
    socket_.async_read_some(asio::buffer(buf), [&](const boost::system::error_code& e, size_t n) {
      ec = e;
      got = n;
      done = true;
    });
    io_.restart();
    io_.run_for(std::chrono::duration_cast<std::chrono::milliseconds>(left));
    if (!done) {
      socket_.cancel();
      io_.restart();
      io_.run();
      error_ = "timed out waiting for the broker";
      return std::nullopt;
    }
    if (ec) {
      error_ = "connection lost: " + ec.message();
      return std::nullopt;
    }
    decoder_.feed(std::span(buf.data(), got));
  }
}

std::optional<describe_cluster_response> admin_client::describe_cluster() {
  auto r = call(admin_type::describe_cluster_request, encode(next_correlation_++),
                admin_type::describe_cluster_response);
  if (!r) return std::nullopt;
  auto m = decode_describe_cluster_response(*r);
  if (!m) error_ = "malformed describe_cluster response";
  return m;
}

std::optional<topic_response> admin_client::create_topic(const std::string& name,
                                                         int32_t partitions,
                                                         int16_t replication_factor) {
  create_topic_request req{next_correlation_++, name, partitions, replication_factor};
  auto r = call(admin_type::create_topic_request, encode(req), admin_type::topic_response);
  if (!r) return std::nullopt;
  auto m = decode_topic_response(*r);
  if (!m) error_ = "malformed topic response";
  return m;
}

std::optional<topic_response> admin_client::delete_topic(const std::string& name) {
  auto r = call(admin_type::delete_topic_request, encode_delete_topic(next_correlation_++, name),
                admin_type::topic_response);
  if (!r) return std::nullopt;
  auto m = decode_topic_response(*r);
  if (!m) error_ = "malformed topic response";
  return m;
}

std::optional<produce_response> admin_client::produce(produce_request request) {
  request.correlation = next_correlation_++;
  auto r = call(admin_type::produce_request, encode(request), admin_type::produce_response);
  if (!r) return std::nullopt;
  auto m = decode_produce_response(*r);
  if (!m) error_ = "malformed produce response";
  return m;
}

std::optional<fetch_response> admin_client::fetch(fetch_request request) {
  request.correlation = next_correlation_++;
  auto r = call(admin_type::fetch_request, encode(request), admin_type::fetch_response);
  if (!r) return std::nullopt;
  auto m = decode_fetch_response(*r);
  if (!m) error_ = "malformed fetch response";
  return m;
}

}  // namespace keel::net
