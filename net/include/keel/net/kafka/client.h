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
// - Groups: group requests go to the group's coordinator (FindCoordinator, cached per group). On
//   NOT_COORDINATOR, COORDINATOR_NOT_AVAILABLE, COORDINATOR_LOAD_IN_PROGRESS or a broken
//   connection the client forgets the coordinator, backs off, finds it again and retries, at most
//   `max_retries` times. list_groups asks every broker (each lists the groups it coordinates).
// - Errors are values: every call returns a result with an `error` (Kafka's code, or one of the
//   client-side codes below) and never throws on the request path.
#pragma once

#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
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

// ListOffsets' special timestamps; any other value (milliseconds since the epoch) asks for the
// first offset whose timestamp is at or after it (-1 when there is none).
enum class offset_spec : int64_t { latest = -1, earliest = -2 };

struct coordinator_result {
  error err;
  broker_info coordinator;
};

struct group_listing {
  std::string group_id;
  std::string protocol_type;
  std::string state;  // empty when the broker's ListGroups version has no state
  int32_t coordinator = -1;
};

struct list_groups_result {
  error err;  // the first broker's failure, if any (groups then holds what the others listed)
  std::vector<group_listing> groups;  // sorted by group id
};

struct group_member {
  std::string member_id;
  std::optional<std::string> group_instance_id;
  std::string client_id;
  std::string client_host;
  std::vector<std::byte> metadata;    // the protocol's subscription bytes
  std::vector<std::byte> assignment;  // the protocol's assignment bytes
};

struct group_description {
  error err;  // this group's error (e.g. GROUP_ID_NOT_FOUND is not used by Kafka: Dead state)
  std::string group_id;
  std::string state;
  std::string protocol_type;
  std::string protocol;
  int32_t coordinator = -1;
  std::vector<group_member> members;
};

struct describe_groups_result {
  error err;  // a failure of the whole call; per-group errors are in each description
  std::vector<group_description> groups;
};

struct topic_partition {
  std::string topic;
  int32_t partition = 0;
  auto operator<=>(const topic_partition&) const = default;
};

struct partition_offset {
  std::string topic;
  int32_t partition = 0;
  int64_t offset = -1;  // OffsetFetch: -1 when nothing is committed
  std::optional<std::string> metadata;
  int16_t error_code = 0;  // per partition, in results
};

struct offset_fetch_result {
  error err;
  std::vector<partition_offset> offsets;  // sorted by topic, partition
};

struct offset_commit_result {
  error err;  // the first partition error, if any
  std::vector<partition_offset> partitions;
};

struct delete_groups_result {
  error err;                                             // the first group's error, if any
  std::vector<std::pair<std::string, int16_t>> results;  // group id, error code
};

// The consumer protocol's Assignment (and the topics of a Subscription), decoded.
struct consumer_assignment {
  int16_t version = 0;
  std::vector<std::pair<std::string, std::vector<int32_t>>> partitions;  // topic, partitions
  std::vector<std::byte> user_data;
};
// Decodes ConsumerProtocolAssignment bytes; nullopt when malformed (empty bytes decode to an
// empty assignment).
std::optional<consumer_assignment> decode_consumer_assignment(std::span<const std::byte> bytes);
std::vector<std::byte> encode_consumer_assignment(const consumer_assignment& a);

// A response body and the version it was decoded at (call_broker).
template <class Response>
struct call_result {
  error err;
  int16_t version = -1;
  Response body;
};

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
  // ListOffsets at any timestamp (ms since the epoch) or offset_spec; -1 when none.
  boost::asio::awaitable<offset_result> offset_for_time(std::string topic, int32_t partition,
                                                        int64_t timestamp_ms);

  // --- consumer groups (see the header comment for routing and retries) ---
  // FindCoordinator (key type group), retried while the coordinator is not available.
  boost::asio::awaitable<coordinator_result> find_coordinator(std::string group);
  // ListGroups on every known broker, merged.
  boost::asio::awaitable<list_groups_result> list_groups();
  // DescribeGroups, each group at its coordinator.
  boost::asio::awaitable<describe_groups_result> describe_groups(std::vector<std::string> groups);
  // OffsetFetch of the given partitions, or of every committed partition when nullopt.
  boost::asio::awaitable<offset_fetch_result> offset_fetch(
      std::string group, std::optional<std::vector<topic_partition>> partitions = std::nullopt);
  // A simple (generation -1, empty member id) OffsetCommit; Kafka refuses it while the group has
  // members (UNKNOWN_MEMBER_ID).
  boost::asio::awaitable<offset_commit_result> offset_commit(std::string group,
                                                             std::vector<partition_offset> offsets);
  // DeleteGroups, each group at its coordinator (NON_EMPTY_GROUP while it has members).
  boost::asio::awaitable<delete_groups_result> delete_groups(std::vector<std::string> groups);

  // Sends one request to a broker by id (the version: the highest both sides speak within the
  // client's range for the API) and returns the raw response frame (header included).
  struct raw_response {
    error err;
    int16_t version = -1;
    std::vector<std::byte> frame;
  };
  boost::asio::awaitable<raw_response> send_to(int32_t broker, int16_t api_key,
                                               std::function<void(writer&, int16_t)> encode_body);
  // send_to, decoded: Response is the API's response type.
  template <class Response, class Request>
  boost::asio::awaitable<call_result<Response>> call_broker(int32_t broker, Request rq) {
    auto raw = co_await send_to(broker, Request::api_key,
                                [&rq](writer& w, int16_t v) { rq.encode(w, v); });
    call_result<Response> out;
    out.err = raw.err;
    out.version = raw.version;
    if (raw.err) co_return out;
    reader in(raw.frame);
    response_header h;
    h.decode(in, response_header_version(Request::api_key, raw.version));
    if (!out.body.decode(in, raw.version) || !in.ok())
      out.err = error{client_error::protocol,
                      "malformed response to API " + std::to_string(Request::api_key)};
    co_return out;
  }

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
inline void write_request_with(writer& w, int16_t api_key, int16_t version, int32_t correlation_id,
                               const std::string& client_id,
                               const std::function<void(writer&, int16_t)>& encode_body) {
  const size_t start = w.size();
  w.put_int32(0);
  request_header h;
  h.request_api_key = api_key;
  h.request_api_version = version;
  h.correlation_id = correlation_id;
  h.client_id = client_id;
  h.encode(w, request_header_version(api_key, version));
  encode_body(w, version);
  w.patch_int32(start, static_cast<int32_t>(w.size() - start - 4));
}
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
