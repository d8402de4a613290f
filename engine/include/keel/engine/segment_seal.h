// segment_seal: cuts each rolled segment's three files to their content through the ring.
//
// A rolled segment's .log ends in preallocated zeros and its indexes in unused entries. Cutting
// them (ftruncate) and closing the .log can wait on the filesystem's journal, and the last close
// of a file cut shorter starts its writeback on ext4: none of that may run on the shard thread.
// A seal opens the two index files, cuts all three, then closes them, each step on the ring.
// Seals run one at a time in roll order, so a log that records "sealed up to here" when a seal
// completes (log.h, the `sealed` record) never names a segment whose files are still uncut.
// A kernel without IORING_OP_FTRUNCATE (before 6.9) cuts inline instead.
#pragma once

#include <array>
#include <deque>
#include <functional>
#include <memory>
#include <string>

#include "keel/engine/io_ring.h"
#include "keel/engine/segment.h"

namespace keel::engine {

class segment_seal {
 public:
  // `sealed` runs for each segment once its seal completed: with 0, or the -errno of cutting its
  // .log (index files that could not be cut only keep unused zero entries, which their readers
  // skip; they are warned about).
  using sealed_fn = std::function<void(const std::shared_ptr<segment>&, int error)>;
  segment_seal(io_ring& ring, sealed_fn sealed);
  ~segment_seal();  // the owner waits for idle() first
  segment_seal(const segment_seal&) = delete;
  segment_seal& operator=(const segment_seal&) = delete;

  // Seals `seg` (the log's rolled segment, all of it written) after the seals queued before.
  void start(std::shared_ptr<segment> seg);
  bool idle() const { return jobs_.empty(); }

 private:
  enum class stage { opening, cutting, closing };
  struct step {
    io_ring::operation op;  // first: the ring hands back &op, which is this step
    segment_seal* owner = nullptr;
    int file = 0;  // 0 .log, 1 .index, 2 .timeindex
  };
  struct job {
    std::shared_ptr<segment> seg;
    std::array<std::string, 3> paths;
    std::array<int, 3> fds{-1, -1, -1};
    std::array<uint64_t, 3> bytes{};
    int log_error = 0;
  };
  void run_front();
  void cut();
  void close_files();
  void finish();
  static void on_step(io_ring::operation* op, int result);

  io_ring& ring_;
  sealed_fn sealed_;
  std::deque<job> jobs_;  // the front one runs
  std::array<step, 3> steps_;
  stage stage_ = stage::opening;
  int steps_left_ = 0;
};

}  // namespace keel::engine
