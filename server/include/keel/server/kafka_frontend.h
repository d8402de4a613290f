// kafka_frontend: the broker's Kafka API. It owns the Kafka listener (net::kafka_listener, on
// shard 0), decodes each request's header and body with the generated codec, serves it from the
// broker's parts, and encodes the response.
//
// Where the work happens: metadata, topics and configs are answered on shard 0 from the
// controller's state; a partition's produce, fetch and offset lookups run on the partition's own
// shard (posted there) and their results come back to shard 0, which assembles the response.
// Fetch responses carry views of the segment maps, not copies: the read results travel with the
// response and keep the maps alive until the socket write is done.
//
// API handlers are split by topic: kafka_frontend.cc (dispatch, ApiVersions), kafka_metadata.cc
// (Metadata, DescribeCluster, DescribeConfigs, topic administration), kafka_records.cc (Produce,
// Fetch, ListOffsets, OffsetForLeaderEpoch).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "keel/net/kafka/messages.h"
#include "keel/net/kafka_listener.h"

namespace keel::server {

class broker;
class group_coordinator;

class kafka_frontend {
 public:
  explicit kafka_frontend(broker& b);
  ~kafka_frontend();
  kafka_frontend(const kafka_frontend&) = delete;
  kafka_frontend& operator=(const kafka_frontend&) = delete;

  // Binds the listener (throws on failure: start-up only). Shard 0.
  void listen();
  uint16_t port() const;
  void stop();
  // On a follower replica's commit (its shard): its producer state follows the committed batches
  // and is snapshotted like the leader's, so a new leader rebuilds from a recent snapshot.
  void follow_producers(unsigned shard, uint64_t group);

  // One request being served: what it needs to answer, whatever thread finishes it.
  struct request {
    int16_t api_key = 0;
    int16_t api_version = 0;
    int32_t correlation_id = 0;
    std::string client_id;
    std::string peer;
    std::shared_ptr<std::vector<std::byte>> frame;  // owns the bytes the body's views point into
    net::kafka_listener::respond_fn respond;
  };

 private:
  void on_request(net::kafka_request in, net::kafka_listener::respond_fn respond);
  // Encodes `body` as the response to `rq` (header included); `keep_alive` holds what external
  // pieces of the body point into.
  template <class Body>
  void answer(const request& rq, const Body& body, std::shared_ptr<const void> keep_alive = {});
  void close(const request& rq, const std::string& why);

  void api_versions(const request& rq, net::kafka::reader& in);
  void metadata(const request& rq, net::kafka::metadata_request m);
  // The controller id clients are told (Metadata, DescribeCluster): see kafka_metadata.cc.
  int32_t controller_for_clients() const;
  // Asks the controller to create `topic` with the broker's defaults (auto.create.topics.enable).
  void request_auto_create(const std::string& topic);
  void describe_cluster(const request& rq, net::kafka::describe_cluster_request m);
  void describe_configs(const request& rq, net::kafka::describe_configs_request m);
  void create_topics(const request& rq, net::kafka::create_topics_request m);
  void delete_topics(const request& rq, net::kafka::delete_topics_request m);
  void create_partitions(const request& rq, net::kafka::create_partitions_request m);
  // Consumer groups (kafka_groups.cc).
  void find_coordinator(const request& rq, net::kafka::find_coordinator_request m);
  void join_group(const request& rq, net::kafka::join_group_request m);
  void sync_group(const request& rq, net::kafka::sync_group_request m);
  void heartbeat(const request& rq, net::kafka::heartbeat_request m);
  void leave_group(const request& rq, net::kafka::leave_group_request m);
  void offset_commit(const request& rq, net::kafka::offset_commit_request m);
  void offset_fetch(const request& rq, net::kafka::offset_fetch_request m);
  void list_groups(const request& rq, net::kafka::list_groups_request m);
  void describe_groups(const request& rq, net::kafka::describe_groups_request m);
  void delete_groups(const request& rq, net::kafka::delete_groups_request m);
  void offset_delete(const request& rq, net::kafka::offset_delete_request m);
  // Runs `fn` on the shard of the __consumer_offsets partition that `group` maps to, with its
  // coordinator, or with nullptr (on shard 0) when this broker hosts no replica of it.
  void with_coordinator(const std::string& group, std::function<void(group_coordinator*)> fn);
  void produce(const request& rq, net::kafka::produce_request m);
  void fetch(const request& rq, net::kafka::fetch_request m);
  void list_offsets(const request& rq, net::kafka::list_offsets_request m);
  void offset_for_leader_epoch(const request& rq, net::kafka::offset_for_leader_epoch_request m);
  void init_producer_id(const request& rq, net::kafka::init_producer_id_request m);
  // The same, `waited_ms` after it arrived (a re-init's id not yet in this broker's metadata).
  void init_producer_id_after(const request& rq, net::kafka::init_producer_id_request m,
                              int waited_ms);

  // Where a topic partition lives, seen from shard 0: an error, or its group and shard here.
  struct partition_location {
    int16_t error = 0;
    uint64_t group = 0;
    unsigned shard = 0;
  };
  partition_location locate(const std::string& topic, int32_t partition) const;
  // Runs `fn` on shard `k` (at once when that is shard 0, the caller's), or on shard 0.
  void run_on(unsigned k, std::function<void()> fn);
  void run_on_shard0(std::function<void()> fn);

  struct fetch_state;
  void fetch_round(std::shared_ptr<fetch_state> f);
  void fetch_answer(std::shared_ptr<fetch_state> f);

  broker& broker_;
  std::unique_ptr<net::kafka_listener> listener_;
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

}  // namespace keel::server
