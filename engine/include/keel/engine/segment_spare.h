// segment_spare: the files of a log's next segment, made ahead of its roll through the ring.
//
// A roll must not create and size files on the shard thread: open(O_CREAT) and fallocate can wait
// milliseconds for the filesystem's journal on a busy disk, and every append behind the roll
// would wait too. Once the active segment is half full the log asks for a spare: the ring creates
// `spare.log`, `spare.index` and `spare.timeindex` (openat) and sizes both indexes (fallocate).
// At the roll the log maps them as the new segment (segment::adopt) and the ring renames them to
// the segment's names. A log issues no sync while those renames run, so the directory's fsync
// that follows a roll covers them and nothing of the new segment is claimed durable before its
// names are. Recovery deletes spare files; a roll without a ready spare creates its files in
// place (a batch larger than a segment, a truncation's new segment, or a spare that failed).
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <string>

#include "keel/engine/io_ring.h"
#include "keel/engine/log_config.h"
#include "keel/engine/segment.h"
#include "keel/engine/types.h"

namespace keel::engine {

class segment_spare {
 public:
  segment_spare(io_ring& ring, std::string dir, const log_config& config);
  ~segment_spare();  // closes a spare not taken; the owner waits for idle() first
  segment_spare(const segment_spare&) = delete;
  segment_spare& operator=(const segment_spare&) = delete;

  // Whether `name` (in a log directory) is one of a spare's files.
  static bool is_spare_file(const std::string& name);

  // Starts making a spare unless one is ready or being made (or the last attempt failed and no
  // roll came since: a full disk is not retried on every append).
  // Inline: the log asks on every append once its segment is half full. Not while the last
  // spare's files are being renamed: an open of the spare names could run before a rename and
  // hand out the file just taken.
  void prepare() {
    if (stage_ == stage::none && renames_in_flight_ == 0) start();
  }
  bool ready() const { return stage_ == stage::ready; }
  // The last attempt failed and no roll came since.
  bool failed() const { return stage_ == stage::failed; }
  // For segments of at most this reserve (the log's segment_bytes).
  uint64_t reserve_bytes() const { return reserve_bytes_; }
  // Nothing of this spare is in flight (creation or renames).
  bool idle() const { return in_flight_ == 0; }
  bool renaming() const { return renames_in_flight_ > 0; }
  // A roll happened: a failed attempt may be retried.
  void on_roll();

  // Hands the ready spare's files over and renames them through the ring to the names of the
  // segment based at `base`; `renamed` runs when the three renames completed, with 0 or the
  // first one's -errno.
  segment::prepared_files take(offset base, std::function<void(int)> renamed);

 private:
  enum class stage { none, opening, sizing, ready, failed };
  struct step {
    io_ring::operation op;  // first: the ring hands back &op, which is this step
    segment_spare* owner = nullptr;
    int file = 0;  // 0 .log, 1 .index, 2 .timeindex
  };
  void start();
  // One step of the current stage completed: true once the whole stage did, without error (a
  // failed stage closes the files and marks the spare failed).
  bool step_done(int result);
  static void on_opened(io_ring::operation* op, int result);
  static void on_sized(io_ring::operation* op, int result);
  static void on_renamed(io_ring::operation* op, int result);
  void close_files();

  io_ring& ring_;
  std::string dir_;
  uint64_t reserve_bytes_;
  std::array<size_t, 2> index_bytes_{};  // offset index, time index
  stage stage_ = stage::none;
  std::array<std::string, 3> spare_paths_;
  std::array<std::string, 3> target_paths_;
  std::array<int, 3> fds_{-1, -1, -1};
  std::array<step, 3> open_steps_;
  std::array<step, 2> size_steps_;
  std::array<step, 3> rename_steps_;
  int steps_left_ = 0;  // of the current stage
  int first_error_ = 0;
  size_t in_flight_ = 0;
  int renames_in_flight_ = 0;
  int rename_error_ = 0;
  std::function<void(int)> renamed_;
};

}  // namespace keel::engine
