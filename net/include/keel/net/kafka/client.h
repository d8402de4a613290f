// Keel's own Kafka client: Boost.Asio + C++20 coroutines on one io_context (single-threaded: every
// method must be called, and every awaitable awaited, on that io_context's thread).
//
// - Bootstrap: connect() tries each host:port of the bootstrap list in order, sends ApiVersions
//   then Metadata (all topics) and remembers the brokers, the topics and their partition leaders.
// - Connections: `connections_per_broker` TCP connections per broker, opened on first use; each
//   connection first negotiates its API versions (ApiVersions v3), then pipelines any number of
//   requests. Kafka answers a connection's requests in order, so responses are matched to the
//   oldest outstanding request and its correlation id is checked (a mismatch is a protocol error
//   that closes the connection and fails everything pending on it).
// - Routing and retries: produce, fetch and list_offsets go to the partition's leader. On
//   NOT_LEADER_OR_FOLLOWER, LEADER_NOT_AVAILABLE, UNKNOWN_TOPIC_OR_PARTITION or a broken
//   connection the client refreshes its metadata (one refresh at a time, shared by every waiter),
//   backs off and retries, at most `max_retries` times.
// - Errors are values: every call returns a result with an `error` (Kafka's code, or one of the
//   client-side codes below) and never throws on the request path.
#pragma once

#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "keel/net/kafka/messages.h"
#include "keel/net/kafka/protocol.h"
#include "keel/net/kafka/record_batch.h"

namespace keel::net::kafka {

// Client-side error codes; Kafka's own codes (errors.h) are >= 0.
namespace client_error {
constexpr int16_t network = -100;       // connect/read/write failed or the connection closed
constexpr int16_t timed_out = -101;     // no response within request_timeout
constexpr int16_t protocol = -102;      // malformed response, correlation id mismatch
constexpr int16_t no_leader = -103;     // metadata names no leader (after the retries)
constexpr int16_t unsupported = -104;   // the broker serves no version of an API we can use
constexpr int16_t bad_argument = -105;  // e.g. a bootstrap entry that is not host:port
constexpr int16_t retries_exhausted = -106;
}  // namespace client_error

struct error {
  int16_t code = 0;
  std::string message;
  bool ok() const { return code == 0; }
  explicit operator bool() const { return code != 0; }  // true when there IS an error
};

// A short name for a Kafka or client-side error code ("NOT_LEADER_OR_FOLLOWER", "NETWORK", ...).
std::string_view error_name(int16_t code);

struct client_config {
  std::vector<std::string> bootstrap;  // host:port entries
  std::string client_id = "keel-client";
  int connections_per_broker = 1;
  int max_retries = 20;
  std::chrono::milliseconds retry_backoff{100};
  std::chrono::milliseconds request_timeout{30000};
};

struct broker_info {
  int32_t id = -1;
  std::string host;
  int32_t port = 0;
};

struct partition_info {
  int32_t partition = 0;
  int16_t error_code = 0;
  int32_t leader = -1;
  int32_t leader_epoch = -1;
  std::vector<int32_t> replicas;
  std::vector<int32_t> isr;
};

struct topic_info {
  std::string name;
  int16_t error_code = 0;
  std::vector<partition_info> partitions;  // by partition index
};

struct cluster_info {
  int32_t controller = -1;
  std::vector<broker_info> brokers;
  std::vector<topic_info> topics;
};

struct metadata_result {
  error err;
  cluster_info cluster;
};

struct produce_result {
  error err;
  int64_t base_offset = -1;  // -1 with acks=0
};

// A fetch's record batches, as a view into the response frame this result owns.
struct fetch_result {
  error err;
  int64_t high_watermark = -1;
  int64_t log_start_offset = -1;
  std::vector<std::byte> frame;        // the whole response; `records` points into it
  std::span<const std::byte> records;  // whole batches back to back (the last may be cut)
};

struct offset_result {
  error err;
  int64_t offset = -1;
};

enum class offset_spec : int64_t { latest = -1, earliest = -2 };

class client {
 public:
  client(boost::asio::io_context& io, client_config config);
  ~client();
  client(const client&) = delete;
  client& operator=(const client&) = delete;

  // Bootstraps: ApiVersions then Metadata against the first reachable bootstrap address.
  boost::asio::awaitable<error> connect();
  // Metadata for the given topics (all when empty); updates the client's routing.
  boost::asio::awaitable<metadata_result> metadata(std::vector<std::string> topics = {});
  // CreateTopics through the controller; TOPIC_ALREADY_EXISTS is returned as an error (36).
  boost::asio::awaitable<error> create_topic(std::string topic, int32_t partitions,
                                             int16_t replication_factor);
  // Produces one record batch (v2 bytes, e.g. from record_batch_builder). `batch` must stay valid
  // until the awaitable completes; it is written to the socket without a copy.
  boost::asio::awaitable<produce_result> produce(std::string topic, int32_t partition,
                                                 std::span<const std::byte> batch, int16_t acks);
  boost::asio::awaitable<fetch_result> fetch(std::string topic, int32_t partition, int64_t offset,
                                             int32_t max_bytes, std::chrono::milliseconds max_wait);
  boost::asio::awaitable<offset_result> list_offsets(std::string topic, int32_t partition,
                                                     offset_spec which);
  // The client's current view (from the last metadata response).
  const cluster_info& cluster() const;
  // Partition count of a known topic, or -1.
  int32_t partition_count(const std::string& topic) const;
  // Closes every connection; pending requests fail with client_error::network.
  void close();

  struct impl;

 private:
  std::shared_ptr<impl> impl_;
};

// Frames one request into w: int32 size, the request header (v1, or v2 for flexible versions),
// the body. Record data in the body stays external (not copied; see writer::put_external).
template <class Request>
void write_request(writer& w, const Request& body, int16_t version, int32_t correlation_id,
                   const std::string& client_id) {
  const size_t start = w.size();
  w.put_int32(0);
  request_header h;
  h.request_api_key = Request::api_key;
  h.request_api_version = version;
  h.correlation_id = correlation_id;
  h.client_id = client_id;
  h.encode(w, request_header_version(Request::api_key, version));
  body.encode(w, version);
  w.patch_int32(start, static_cast<int32_t>(w.size() - start - 4));
}

// Splits `host:port` (the last colon separates the port); nullopt when malformed.
std::optional<std::pair<std::string, uint16_t>> split_host_port(std::string_view s);

}  // namespace keel::net::kafka
