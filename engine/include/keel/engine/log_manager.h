// log_manager: every partition log under one data directory, served by one thread's io_ring.
//
// Layout: <data_dir>/<log name>/ is one log (log.h). Names are what the owner chooses (the
// broker uses "<topic>-<partition>"): 1 to 200 characters of [A-Za-z0-9._-], not "." or "..".
// Open logs hold one descriptor each (their active segment's .log; maps need none), and closed
// segments are mapped only while used, at most mapped_segments_max at once across all logs,
// so thousands of logs fit the process's descriptor and map limits.
#pragma once

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "keel/engine/directory_removal.h"
#include "keel/engine/io_ring.h"
#include "keel/engine/log.h"
#include "keel/engine/log_config.h"
#include "keel/engine/segment_cache.h"

namespace keel::engine {

class log_manager {
 public:
  struct options {
    std::string data_dir;
    log_config defaults;                // for logs opened without their own config
    size_t mapped_segments_max = 4096;  // closed segments mapped at once, all logs
    // How often tick() applies retention; -1: never (an owner that keeps its own record of each
    // log's start, such as a Raft host, applies it through log::retention_start()).
    int64_t retention_check_interval_ms = 300000;
  };

  // Opens (recovering as needed) every log under data_dir, creating data_dir when absent.
  static result<std::unique_ptr<log_manager>> open(options opts, io_ring& ring);
  ~log_manager();
  log_manager(const log_manager&) = delete;
  log_manager& operator=(const log_manager&) = delete;

  // The log called `name`, opened (or created) with `config` if it is not open yet; if it is
  // open, `config`'s per-log settings apply from now on (log::reconfigure).
  result<log*> open_log(const std::string& name, std::optional<log_config> config = {});
  log* find(const std::string& name) const;
  // Deletes the log. Its directory is renamed at once to "<name>~deleted-<n>" (no log can have
  // that name, so `name` is free for a new log on return), and its files are deleted through
  // the ring (directory_removal.h): a partition of many GiB goes without stalling the thread.
  // A manager opened on a directory holding such a name finishes its removal.
  status remove(const std::string& name);
  // Removals whose files are still being deleted (tests follow them).
  const directory_removal& removals() const { return removals_; }
  std::vector<std::string> names() const;
  size_t size() const { return logs_.size(); }
  size_t mapped_segments() const { return cache_.mapped(); }

  // Interval flushes and segment_ms rolls of every log; retention every
  // retention_check_interval_ms.
  void tick();
  // Closes every log cleanly (each writes its clean-shutdown marker); removals not finished stop
  // after the operations in flight (the next open finishes them). The first error wins.
  status close();

  static bool valid_name(const std::string& name);
  // Whether a directory under data_dir is a removed log's, awaiting deletion.
  static bool removed_name(const std::string& name);

 private:
  log_manager(options opts, io_ring& ring);
  void stop_removals();

  options options_;
  io_ring& ring_;
  segment_cache cache_;
  std::map<std::string, std::unique_ptr<log>> logs_;
  int data_dir_fd_ = -1;  // fsynced before a removed log's files go
  directory_removal removals_;
  uint64_t removal_sequence_ = 0;
  int64_t last_retention_ms_ = 0;
};

}  // namespace keel::engine
