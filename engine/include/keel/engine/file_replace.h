// file_replace: replaces a small file whole and durably through the ring, so a shard never
// blocks on the filesystem to do it. The steps, each on the ring: create `<path>.tmp`, write the
// bytes and fdatasync them (linked), close, rename over `<path>`, fsync the directory. A crash
// at any point leaves the old file or the new one whole (a stray `.tmp` is the owner's to
// delete at open). One replacement runs at a time; images queued meanwhile collapse into the
// newest, which runs next, and each caller's `done` runs with the result of the replacement that
// carried its image or a newer one, in the order the images were queued.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "keel/engine/io_ring.h"
#include "keel/engine/result.h"

namespace keel::engine {

class file_replace {
 public:
  using done_fn = std::function<void(const status&)>;
  // `directory_fd` is the open directory holding `path`; it must outlive this.
  file_replace(io_ring& ring, int directory_fd, std::string path);
  ~file_replace();  // the owner waits for idle() first
  file_replace(const file_replace&) = delete;
  file_replace& operator=(const file_replace&) = delete;

  // Queues `bytes` to become the file's content; `done` runs once they are durable under the
  // file's name, or with the step that failed.
  void start(std::vector<std::byte> bytes, done_fn done);
  bool idle() const { return !running_ && waiting_.empty(); }
  // Replacements carried out (or failed) so far.
  uint64_t replacements() const { return replacements_; }
  const std::string& path() const { return path_; }

 private:
  enum class stage { opening, writing, closing, renaming, syncing_directory };
  struct step : io_ring::operation {
    file_replace* owner = nullptr;
    bool is_sync = false;  // of the writing stage: the fdatasync (else the write)
  };
  void run_next();
  void on_step(const step& s, int result);
  void finish(status st);
  static void on_complete(io_ring::operation* op, int result);

  io_ring& ring_;
  int directory_fd_;
  std::string path_;
  std::string tmp_path_;
  bool running_ = false;
  bool finishing_ = false;        // finish() is telling the callers of the replacement that ended
  std::vector<std::byte> bytes_;  // the image being written
  std::vector<done_fn> running_done_;  // told when it is done
  std::vector<std::byte> waiting_bytes_;
  std::vector<done_fn> waiting_;  // non-empty: an image waits in waiting_bytes_
  stage stage_ = stage::opening;
  int fd_ = -1;
  int error_ = 0;  // the first failure of the writing stage (-errno)
  int steps_left_ = 0;
  const char* failed_step_ = "";
  uint64_t replacements_ = 0;
  step write_op_, sync_op_, other_op_;
};

}  // namespace keel::engine
