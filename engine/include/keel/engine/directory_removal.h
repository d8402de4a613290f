// directory_removal: deletes whole directories (a removed log's) through the ring. Unlinking a
// segment makes the kernel drop its page cache, a quarter of a second per GiB measured here, so
// the unlinks run on io_uring's workers instead of the calling thread (a shard serving other
// partitions). The caller first moves the directory out of the way (log_manager renames it to
// a name no log can have), so nothing else reaches it meanwhile; a crash part way leaves that
// directory, and the next open of the manager starts its removal again.
//
// Per directory: the parent is fsynced first when the caller names it (so the rename is
// durable before any file goes: a crash never brings back a log with files missing), the
// entries are listed on the calling thread (one readdir per directory; symbolic links are
// removed, never followed), the files are unlinked, then the directories, deepest first. At most
// `unlinks_in_flight_max` operations of all removals are in flight at once, so deleting a topic
// of many partitions does not flood the ring or io_uring's workers. A file or directory that
// cannot be removed is warned about with its path and the rest goes on; the directories that
// hold what is left stay for the next open.
#pragma once

#include <cstdint>
#include <deque>
#include <list>
#include <string>
#include <vector>

#include "keel/engine/io_ring.h"

namespace keel::engine {

class directory_removal {
 public:
  explicit directory_removal(io_ring& ring);
  ~directory_removal();  // the owner waits for idle() first (asserted)
  directory_removal(const directory_removal&) = delete;
  directory_removal& operator=(const directory_removal&) = delete;

  // Deletes `dir` and everything under it; `parent_fd` (or -1) is fsynced first.
  void start(const std::string& dir, int parent_fd = -1);
  // Stops issuing: what is queued stays on disk (for the next open); idle() once the operations
  // already in flight have completed. Used at close, so a large deletion does not hold up a stop.
  void abandon();
  bool idle() const { return jobs_.empty(); }
  // Directories removed whole, and paths that could not be removed (tests follow the work).
  uint64_t directories_removed() const { return directories_removed_; }
  uint64_t failures() const { return failures_; }

  static constexpr size_t unlinks_in_flight_max = 8;

 private:
  struct job;
  struct removal_op : io_ring::operation {
    job* owner = nullptr;
    std::string path;
    bool parent_sync = false;
    std::list<removal_op>::iterator self;
  };
  struct job {
    directory_removal* self = nullptr;
    std::string root;
    int parent_fd = -1;                    // fsynced before anything is removed
    bool synced = false;                   // the parent's fsync completed
    std::deque<std::string> files;         // not yet unlinked
    std::vector<std::string> directories;  // removed last, deepest first, one at a time
    size_t directories_done = 0;
    std::list<removal_op> in_flight;  // nodes stay put while the ring holds them
    std::list<job>::iterator it;
    bool failed = false;
  };

  // Issues what the jobs can, within the bound, and finishes the jobs that are done. Completions
  // that run inside it (a full queue makes the ring reap) only note themselves; it loops.
  void pump();
  void advance(job& j);  // may finish (erase) j
  void issue(job& j, std::string path, int flags, bool parent_sync);
  static void on_done(io_ring::operation* op, int result);

  io_ring& ring_;
  std::list<job> jobs_;
  size_t in_flight_ = 0;
  bool pumping_ = false;
  bool pump_again_ = false;
  uint64_t directories_removed_ = 0;
  uint64_t failures_ = 0;
};

}  // namespace keel::engine
