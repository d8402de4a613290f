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
#include <span>
#include <string>

#include "keel/engine/file_replace.h"
#include "keel/engine/log.h"
#include "keel/server/metadata.h"
#include "keel/server/partition_host.h"

namespace keel::server {

class controller {
 public:
  using reply = std::function<void(const apply_result&)>;

  // `log` is the metadata group's engine log (kept by the caller); `sink` sends raft messages.
  // The state machine is snapshotted to `snapshot_path` every `snapshot_every` applied offsets,
  // and the log before the snapshot is dropped, so a restart reads one snapshot and a short log.
  // The file is written through the ring (engine::file_replace), never on the shard's thread.
  //
  // Snapshot file, little-endian: u64 magic 0x50414E5341544D45 ("EMTASNAP"), u32 bytes n, then
  // n bytes of snapshot image, then u64 XXH3-64 of everything before it. The image is what a
  // follower also receives in a log-start reset: i64 last applied offset, then
  // metadata_state::snapshot().
  static engine::result<std::unique_ptr<controller>> open(
      engine::log& log, engine::io_ring& ring, raft::core_options core, raft::membership voters,
      partition_host::message_sink sink, raft::random_source& random, std::string snapshot_path,
      int64_t snapshot_every = 4096);
  ~controller();  // waits for a snapshot write in flight
  controller(const controller&) = delete;
  controller& operator=(const controller&) = delete;

  void tick() { host_->tick(); }
  void step(const raft::message& m) { host_->step(m); }
  partition_host& host() { return *host_; }
  bool is_leader() const { return host_->is_leader(); }
  // The broker id of the current controller, or -1.
  int32_t leader() const;
  raft::offset applied() const { return applied_; }
  raft::offset snapshot_offset() const { return snapshot_offset_; }
  const metadata_state& state() const { return state_; }
  // Runs after commands applied (the broker reconciles its partitions).
  void on_change(std::function<void()> fn) { on_change_ = std::move(fn); }

  // Controller side: proposes `command` and calls `done` once it applied (or failed to commit).
  void submit(std::vector<std::byte> command, reply done);
  // Controller side: checks and plans a topic, then submits it. `live` are the brokers to use.
  void create_topic(const std::string& name, int32_t partitions, int16_t replication_factor,
                    const std::map<std::string, std::string>& configs,
                    const std::vector<int32_t>& live, reply done);
  // Controller side: grows topic `name` to `total` partitions, placed over `live`.
  void create_partitions(const std::string& name, int32_t total, const std::vector<int32_t>& live,
                         reply done);

 private:
  controller() = default;
  void apply_committed(raft::offset high_watermark);

  struct snapshotter final : raft::snapshot_hook {
    controller* owner = nullptr;
    raft::shared_bytes snapshot_at(raft::offset through) override;
  };
  // Writes image() as the snapshot file; `done` (if any) runs once it is durable or failed.
  // The held snapshot (snapshot_at) and snapshot_offset() move when it is durable.
  void save_snapshot(std::function<void(const std::string& error)> done);
  // False (state unchanged) when the image does not decode.
  bool restore_image(std::span<const std::byte> image);
  raft::shared_bytes image() const;

  snapshotter snapshotter_;
  std::string snapshot_path_;
  engine::io_ring* ring_ = nullptr;
  int snapshot_directory_fd_ = -1;
  std::unique_ptr<engine::file_replace> snapshot_file_;
  raft::shared_bytes snapshot_image_;  // the image of the snapshot file (what resets send)
  bool closing_ = false;
  int64_t snapshot_every_ = 4096;
  raft::offset snapshot_offset_ = raft::offset::none();
  bool compacting_ = false;
  std::unique_ptr<partition_host> host_;
  engine::log* log_ = nullptr;
  metadata_state state_;
  raft::offset applied_ = raft::offset::none();
  std::multimap<raft::offset, std::pair<raft::term_id, reply>> waiting_;  // by offset
  std::function<void()> on_change_;
};

}  // namespace keel::server
