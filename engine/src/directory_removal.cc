#include "keel/engine/directory_removal.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>

#include <cerrno>
#include <cstring>

#include "keel/engine/assert.h"
#include "warning.h"

namespace keel::engine {
namespace {

// Lists everything under `dir`: files (anything that is not a directory, symbolic links
// included) into `files`, and the directories in post-order (children before their parent) into
// `directories`, `dir` last. Returns 0, or the errno of the first directory that could not be
// listed (it is still listed in `directories`; its removal then reports what is wrong).
int list_tree(const std::string& dir, std::deque<std::string>& files,
              std::vector<std::string>& directories) {
  int first_error = 0;
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  DIR* d = fd >= 0 ? ::fdopendir(fd) : nullptr;
  if (d != nullptr) {
    while (dirent* e = ::readdir(d)) {
      const std::string name = e->d_name;
      if (name == "." || name == "..") continue;
      const std::string path = dir + "/" + name;
      bool is_dir = e->d_type == DT_DIR;
      if (e->d_type == DT_UNKNOWN) {
        struct stat st {};
        is_dir = ::lstat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
      }
      if (is_dir) {
        if (int err = list_tree(path, files, directories); err != 0 && first_error == 0)
          first_error = err;
      } else {
        files.push_back(path);
      }
    }
    ::closedir(d);
  } else {
    first_error = errno;
    if (fd >= 0) ::close(fd);
  }
  directories.push_back(dir);
  return first_error;
}

}  // namespace

directory_removal::directory_removal(io_ring& ring) : ring_(ring) {}

directory_removal::~directory_removal() {
  KEEL_ASSERT(idle(), "directory removals finish before their owner goes");
}

void directory_removal::start(const std::string& dir, int parent_fd) {
  jobs_.emplace_back();
  job& j = jobs_.back();
  j.self = this;
  j.root = dir;
  j.parent_fd = parent_fd;
  j.synced = parent_fd < 0;
  j.it = std::prev(jobs_.end());
  if (int err = list_tree(dir, j.files, j.directories); err != 0) {
    if (err == ENOENT && j.files.empty() && j.directories.size() == 1) {
      j.directories.clear();  // already gone (a crash after the last step)
    } else {
      warn("delete " + dir + ": cannot list it: " + std::strerror(err));
      j.failed = true;
      ++failures_;
    }
  }
  pump();
}

void directory_removal::abandon() {
  for (job& j : jobs_) {
    j.files.clear();
    j.directories_done = j.directories.size();
    j.failed = true;  // not removed whole; not a failure either
  }
  pump();
}

void directory_removal::pump() {
  if (pumping_) {
    pump_again_ = true;
    return;
  }
  pumping_ = true;
  do {
    pump_again_ = false;
    // advance() erases only the job it is given, and completions that run inside it only
    // note themselves, so `next` stays valid.
    for (auto it = jobs_.begin(); it != jobs_.end();) {
      auto next = std::next(it);
      advance(*it);
      it = next;
    }
  } while (pump_again_);
  pumping_ = false;
}

void directory_removal::issue(job& j, std::string path, int flags, bool parent_sync) {
  j.in_flight.emplace_back();
  removal_op& op = j.in_flight.back();
  op.complete = &directory_removal::on_done;
  op.owner = &j;
  op.path = std::move(path);
  op.parent_sync = parent_sync;
  op.self = std::prev(j.in_flight.end());
  ++in_flight_;
  if (parent_sync)
    ring_.prep_fsync(&op, j.parent_fd, false);
  else
    ring_.prep_unlinkat(&op, op.path.c_str(), flags);
}

void directory_removal::advance(job& j) {
  if (!j.synced) {
    // The rename that made the directory private is durable before anything goes.
    if (j.in_flight.empty() && !j.failed && in_flight_ < unlinks_in_flight_max)
      issue(j, j.root, 0, true);
    if (!j.in_flight.empty()) return;
    if (!j.failed) return;  // waiting for room
    j.files.clear();
    j.directories_done = j.directories.size();
  }
  while (in_flight_ < unlinks_in_flight_max && !j.files.empty()) {
    std::string path = std::move(j.files.front());
    j.files.pop_front();
    issue(j, std::move(path), 0, false);
  }
  if (!j.in_flight.empty() || !j.files.empty()) return;
  // Files first, then each directory after everything under it; after a failure the
  // directories stay (they are not empty) for the next open.
  if (!j.failed && j.directories_done < j.directories.size()) {
    if (in_flight_ < unlinks_in_flight_max)
      issue(j, j.directories[j.directories_done++], AT_REMOVEDIR, false);
    return;
  }
  if (!j.failed) ++directories_removed_;
  jobs_.erase(j.it);
}

void directory_removal::on_done(io_ring::operation* op, int result) {
  auto& r = *static_cast<removal_op*>(op);
  job& j = *r.owner;
  directory_removal& self = *j.self;
  if (r.parent_sync) {
    if (result != 0) {
      warn("delete " + j.root + ": cannot sync the directory that holds it (" +
           std::strerror(-result) + "); nothing deleted, left for the next open");
      j.failed = true;
      ++self.failures_;
      j.files.clear();
      j.directories_done = j.directories.size();
    }
    j.synced = true;
  } else if (result != 0 && result != -ENOENT) {
    warn("delete " + r.path + ": " + std::strerror(-result) + "; left for the next open");
    j.failed = true;
    ++self.failures_;
  }
  --self.in_flight_;
  j.in_flight.erase(r.self);
  self.pump();
}

}  // namespace keel::engine
