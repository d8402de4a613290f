#include "keel/server/kafka_frontend.h"

#include <algorithm>
#include <cstdio>

#include "kafka_support.h"
#include "keel/server/broker.h"

namespace keel::server {

namespace kafka = net::kafka;
namespace error_code = net::kafka::error_code;

namespace {

// The APIs this broker serves and advertises, with the version ranges of
// ../shared/kafka-protocol/README.md §5. Produce advertises 0-2 for librdkafka's feature
// detection (it checks that version 0 is in range) and answers them
// UNSUPPORTED_FOR_MESSAGE_FORMAT per partition: only record batch v2 is stored.
struct served_api {
  int16_t key;
  int16_t min;
  int16_t max;
};
constexpr served_api served_apis[] = {
    {kafka::produce_request::api_key, 0, 9},
    {kafka::fetch_request::api_key, 4, 12},
    {kafka::list_offsets_request::api_key, 1, 7},
    {kafka::metadata_request::api_key, 0, 12},
    {kafka::find_coordinator_request::api_key, 0, 4},
    {kafka::api_versions_request::api_key, 0, 4},
    {kafka::create_topics_request::api_key, 2, 7},
    {kafka::delete_topics_request::api_key, 1, 6},
    {kafka::offset_for_leader_epoch_request::api_key, 2, 4},
    {kafka::describe_configs_request::api_key, 1, 4},
    {kafka::create_partitions_request::api_key, 0, 3},
    {kafka::describe_cluster_request::api_key, 0, 1},
    {kafka::join_group_request::api_key, 0, 9},
    {kafka::sync_group_request::api_key, 0, 5},
    {kafka::heartbeat_request::api_key, 0, 4},
    {kafka::leave_group_request::api_key, 0, 5},
    {kafka::offset_commit_request::api_key, 2, 8},
    {kafka::offset_fetch_request::api_key, 1, 8},
    {kafka::list_groups_request::api_key, 0, 4},
    {kafka::describe_groups_request::api_key, 0, 5},
    {kafka::delete_groups_request::api_key, 0, 2},
    {kafka::offset_delete_request::api_key, 0, 0},
    {kafka::init_producer_id_request::api_key, 0, 4},
};

const served_api* find_served(int16_t key) {
  for (const auto& a : served_apis)
    if (a.key == key) return &a;
  return nullptr;
}

// KIP-511: client software names and versions are restricted to this pattern.
// [a-zA-Z0-9](?:[a-zA-Z0-9\-.]*[a-zA-Z0-9])?
bool valid_software_field(const std::string& s) {
  auto alnum = [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
  };
  if (s.empty() || !alnum(s.front()) || !alnum(s.back())) return false;
  return std::all_of(s.begin(), s.end(), [&](char c) { return alnum(c) || c == '-' || c == '.'; });
}

}  // namespace

kafka_frontend::kafka_frontend(broker& b) : broker_(b) {}

kafka_frontend::~kafka_frontend() {
  stop();
}

void kafka_frontend::listen() {
  net::kafka_listener_config c;
  c.host = broker_.config_.kafka_listen.host;
  c.port = broker_.config_.kafka_listen.port;
  c.max_request_bytes = broker_.config_.max_request_bytes;
  listener_ = std::make_unique<net::kafka_listener>(
      broker_.shards_[0].runner->io(), c,
      [this](net::kafka_request in, net::kafka_listener::respond_fn respond) {
        on_request(std::move(in), std::move(respond));
      });
  listener_->listen();
}

uint16_t kafka_frontend::port() const {
  return listener_ ? listener_->local_port() : 0;
}

void kafka_frontend::stop() {
  *alive_ = false;
  if (listener_) listener_->stop();
}

void kafka_frontend::close(const request& rq, const std::string& why) {
  net::kafka_response r;
  r.close_reason = why;
  rq.respond(std::move(r));
}

void kafka_frontend::on_request(net::kafka_request in, net::kafka_listener::respond_fn respond) {
  request rq;
  rq.peer = std::move(in.peer);
  rq.respond = std::move(respond);
  rq.frame = std::make_shared<std::vector<std::byte>>(std::move(in.frame));
  kafka::reader head(*rq.frame);
  rq.api_key = head.get_int16();
  rq.api_version = head.get_int16();
  rq.correlation_id = head.get_int32();
  const served_api* api = find_served(rq.api_key);
  if (!api) {
    return close(rq, "unsupported api key " + std::to_string(rq.api_key) + " (version " +
                         std::to_string(rq.api_version) + ")");
  }
  const bool is_api_versions = rq.api_key == kafka::api_versions_request::api_key;
  if (!is_api_versions && (rq.api_version < api->min || rq.api_version > api->max)) {
    return close(rq, "unsupported version " + std::to_string(rq.api_version) + " of api key " +
                         std::to_string(rq.api_key));
  }
  kafka::reader in_body(*rq.frame);
  kafka::request_header header;
  const int16_t header_version = is_api_versions && rq.api_version > api->max
                                     ? int16_t(1)  // body ignored, header as far as we can tell
                                     : kafka::request_header_version(rq.api_key, rq.api_version);
  if (!header.decode(in_body, header_version))
    return close(rq, "malformed request header from " + rq.peer);
  rq.client_id = header.client_id.value_or("");

  auto decode = [&]<class M>(M& m) {
    if (m.decode(in_body, rq.api_version)) return true;
    close(rq, "malformed request (api key " + std::to_string(rq.api_key) + " version " +
                  std::to_string(rq.api_version) + ") from " + rq.peer + " (" + rq.client_id + ")");
    return false;
  };
  switch (rq.api_key) {
    case kafka::api_versions_request::api_key:
      return api_versions(rq, in_body);
// Every other API: decode its body, then its handler (named as the API).
#define KEEL_KAFKA_API(name)               \
  case kafka::name##_request::api_key: {   \
    kafka::name##_request m;               \
    if (decode(m)) name(rq, std::move(m)); \
    return;                                \
  }
      KEEL_KAFKA_API(metadata)
      KEEL_KAFKA_API(produce)
      KEEL_KAFKA_API(fetch)
      KEEL_KAFKA_API(list_offsets)
      KEEL_KAFKA_API(find_coordinator)
      KEEL_KAFKA_API(create_topics)
      KEEL_KAFKA_API(delete_topics)
      KEEL_KAFKA_API(offset_for_leader_epoch)
      KEEL_KAFKA_API(describe_configs)
      KEEL_KAFKA_API(create_partitions)
      KEEL_KAFKA_API(describe_cluster)
      KEEL_KAFKA_API(join_group)
      KEEL_KAFKA_API(sync_group)
      KEEL_KAFKA_API(heartbeat)
      KEEL_KAFKA_API(leave_group)
      KEEL_KAFKA_API(offset_commit)
      KEEL_KAFKA_API(offset_fetch)
      KEEL_KAFKA_API(list_groups)
      KEEL_KAFKA_API(describe_groups)
      KEEL_KAFKA_API(delete_groups)
      KEEL_KAFKA_API(offset_delete)
      KEEL_KAFKA_API(init_producer_id)
#undef KEEL_KAFKA_API
    default:
      return close(rq, "api key " + std::to_string(rq.api_key) + " has no handler");
  }
}

void kafka_frontend::api_versions(const request& rq, kafka::reader& in) {
  kafka::api_versions_response out;
  const served_api* self = find_served(kafka::api_versions_request::api_key);
  if (rq.api_version > self->max) {
    // KIP-511: a version we do not know gets a v0 body naming our range, so the client retries.
    out.error_code = error_code::unsupported_version;
    out.api_keys.push_back({kafka::api_versions_request::api_key, self->min, self->max});
    request v0 = rq;
    v0.api_version = 0;
    return answer(v0, out);
  }
  kafka::api_versions_request m;
  if (!m.decode(in, rq.api_version))
    return close(rq, "malformed ApiVersions request from " + rq.peer);
  if (rq.api_version >= 3 && (!valid_software_field(m.client_software_name) ||
                              !valid_software_field(m.client_software_version))) {
    out.error_code = error_code::invalid_request;
    return answer(rq, out);
  }
  for (const auto& a : served_apis)
    out.api_keys.push_back({a.key, a.min, a.max});
  answer(rq, out);
}

}  // namespace keel::server
