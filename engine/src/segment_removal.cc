#include "keel/engine/segment_removal.h"

#include <cerrno>
#include <cstring>

#include "keel/engine/assert.h"
#include "warning.h"

namespace keel::engine {

segment_removal::segment_removal(io_ring& ring, int directory_fd, std::string record_path,
                                 failed_fn failed)
    : ring_(ring),
      record_(ring, directory_fd, std::move(record_path)),
      failed_(std::move(failed)) {}

segment_removal::~segment_removal() {
  KEEL_ASSERT(idle(), "segment removals finish before their log goes");
}

void segment_removal::start(std::vector<std::byte> record,
                            std::vector<std::shared_ptr<segment>> gone) {
  record_.start(std::move(record), [this, gone = std::move(gone)](const status& st) {
    if (!st) {
      failed_(st.err());  // the segments stay: the start on disk is still the old one
      return;
    }
    remove(gone);
  });
}

void segment_removal::remove(const std::vector<std::shared_ptr<segment>>& gone) {
  for (const auto& seg : gone) {
    for (const char* ext : segment_file_extensions) {
      unlinks_.emplace_back();
      unlink_op& op = unlinks_.back();
      op.complete = &segment_removal::on_unlinked;
      op.owner = this;
      op.path = seg->path(ext);
      op.self = std::prev(unlinks_.end());
      ring_.prep_unlinkat(&op, op.path.c_str());
    }
  }
}

void segment_removal::on_unlinked(io_ring::operation* op, int result) {
  auto& u = *static_cast<unlink_op*>(op);
  segment_removal& self = *u.owner;
  if (result == 0) {
    ++self.files_removed_;
  } else if (result != -ENOENT) {
    // Left behind below the persisted start: the next open deletes it.
    warn("delete " + u.path + ": " + std::strerror(-result));
  }
  self.unlinks_.erase(u.self);
}

}  // namespace keel::engine
