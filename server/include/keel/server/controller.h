// controller: the cluster-metadata Raft group (group 0) on this broker, and the state machine it
// drives. Lives on shard 0.
//
// Every broker that hosts a replica of group 0 applies its committed commands, in order, to a
// metadata_state and tells the broker (on_change) so it can create, start or remove its local
// partition groups. The replica that leads group 0 is the controller: it checks and plans topic
// changes, proposes them, and answers the request once the command has applied, with the
// outcome every broker computed the same way.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>

#include "keel/engine/log.h"
#include "keel/server/metadata.h"
#include "keel/server/partition_host.h"

namespace keel::server {

class controller {
 public:
  using reply = std::function<void(const apply_result&)>;

  // `log` is the metadata group's engine log (kept by the caller); `sink` sends raft messages.
  static engine::result<std::unique_ptr<controller>> open(engine::log& log, engine::io_ring& ring,
                                                          raft::core_options core,
                                                          raft::membership voters,
                                                          partition_host::message_sink sink,
                                                          raft::random_source& random);

  void tick() { host_->tick(); }
  void step(const raft::message& m) { host_->step(m); }
  partition_host& host() { return *host_; }
  bool is_leader() const { return host_->is_leader(); }
  // The broker id of the current controller, or -1.
  int32_t leader() const;
  const metadata_state& state() const { return state_; }
  // Runs after commands applied (the broker reconciles its partitions).
  void on_change(std::function<void()> fn) { on_change_ = std::move(fn); }

  // Controller side: proposes `command` and calls `done` once it applied (or failed to commit).
  void submit(std::vector<std::byte> command, reply done);
  // Controller side: checks and plans a topic, then submits it. `live` are the brokers to use.
  void create_topic(const std::string& name, int32_t partitions, int16_t replication_factor,
                    const std::map<std::string, std::string>& configs,
                    const std::vector<int32_t>& live, reply done);

 private:
  controller() = default;
  void apply_committed(raft::offset high_watermark);

  std::unique_ptr<partition_host> host_;
  engine::log* log_ = nullptr;
  metadata_state state_;
  raft::offset applied_ = raft::offset::none();
  std::multimap<raft::offset, std::pair<raft::term_id, reply>> waiting_;  // by offset
  std::function<void()> on_change_;
};

}  // namespace keel::server
