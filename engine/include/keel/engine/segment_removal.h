// segment_removal: a prefix truncation's file work, through the ring. The log moves its start
// and drops the segments below it from its list at once (views keep their pages); this then
// persists the new start (file_replace of the `log_start` record) and, once that is durable,
// unlinks the dropped segments' files. A crash before the record is durable leaves the old
// start with every segment whole; after it, open() deletes the segments below the start, so
// the directory is not synced after the unlinks. A record that cannot be written is reported
// to the owner (the log stops appends) and its segments stay on disk.
#pragma once

#include <functional>
#include <list>
#include <memory>
#include <string>
#include <vector>

#include "keel/engine/file_replace.h"
#include "keel/engine/io_ring.h"
#include "keel/engine/segment.h"

namespace keel::engine {

class segment_removal {
 public:
  using failed_fn = std::function<void(const error&)>;
  // `directory_fd` is the log's open directory; it must outlive this.
  segment_removal(io_ring& ring, int directory_fd, std::string record_path, failed_fn failed);
  ~segment_removal();  // the owner waits for idle() first
  segment_removal(const segment_removal&) = delete;
  segment_removal& operator=(const segment_removal&) = delete;

  // Persists `record` (the encoded log start), then deletes the files of `gone`.
  void start(std::vector<std::byte> record, std::vector<std::shared_ptr<segment>> gone);
  bool idle() const { return record_.idle() && unlinks_.empty(); }
  // Files unlinked so far (tests follow the work with it).
  uint64_t files_removed() const { return files_removed_; }

 private:
  struct unlink_op : io_ring::operation {
    segment_removal* owner = nullptr;
    std::string path;
    std::list<unlink_op>::iterator self;
  };
  void remove(const std::vector<std::shared_ptr<segment>>& gone);
  static void on_unlinked(io_ring::operation* op, int result);

  io_ring& ring_;
  file_replace record_;
  failed_fn failed_;
  std::list<unlink_op> unlinks_;  // in flight; list nodes stay put while the ring holds them
  uint64_t files_removed_ = 0;
};

}  // namespace keel::engine
