#include "keel/engine/cache_window.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>

namespace keel::engine {

namespace {
constexpr uint64_t page_bytes = 4096;
// Drops smaller than this wait for more: one pair of operations per 4 MiB written at most.
constexpr uint64_t drop_step_bytes = 4u << 20;
}  // namespace

struct cache_window::descriptor {
  int fd = -1;
  explicit descriptor(int f) : fd(f) {}
  ~descriptor() {
    if (fd >= 0) ::close(fd);
  }
  descriptor(const descriptor&) = delete;
  descriptor& operator=(const descriptor&) = delete;
};

namespace {
// One drop in flight: madvise(MADV_DONTNEED) of the map's range, then fadvise(DONTNEED) of the
// file's. Owns what it points at until both complete; a failed step only leaves pages cached.
struct drop_op;
struct drop_step {
  io_ring::operation op;  // first: the ring hands back &op, which is this step
  drop_op* owner = nullptr;
};
struct drop_op {
  drop_step unmap;
  drop_step evict;
  std::shared_ptr<file_map> map;
  std::shared_ptr<void> fd;
  int pending = 2;
};

void step_done(io_ring::operation* op, int) {
  drop_op* d = reinterpret_cast<drop_step*>(op)->owner;
  if (--d->pending == 0) delete d;
}
}  // namespace

cache_window::cache_window(io_ring& ring, uint64_t window_bytes)
    : ring_(ring), window_(window_bytes) {
  KEEL_ASSERT(window_bytes > 0, "a cache window of 0 bytes means none: do not make one");
}

cache_window::tracked* cache_window::track(const segment& seg) {
  for (auto it = segments_.rbegin(); it != segments_.rend(); ++it) {
    if (it->seg == &seg && it->base == seg.base()) return &*it;
  }
  if (!seg.mapped() || seg.fd() < 0) return nullptr;
  const int fd = ::fcntl(seg.fd(), F_DUPFD_CLOEXEC, 0);
  if (fd < 0) return nullptr;  // out of descriptors: this segment's pages stay to the kernel
  tracked t;
  t.seg = &seg;
  t.base = seg.base();
  t.map = seg.map();
  t.fd = std::make_shared<descriptor>(fd);
  segments_.push_back(std::move(t));
  return &segments_.back();
}

void cache_window::on_durable(const segment& seg, uint64_t durable_end) {
  tracked* t = track(seg);
  if (t == nullptr) return;
  t->end = std::max(t->end, durable_end);
  trim();
}

void cache_window::on_sealed(const segment& seg) {
  tracked* t = track(seg);
  if (t == nullptr) return;
  t->end = seg.size();
  t->sealed = true;
  trim();
}

void cache_window::set_window(uint64_t bytes) {
  KEEL_ASSERT(bytes > 0, "a cache window of 0 bytes means none");
  window_ = bytes;
  trim();
}

void cache_window::trim() {
  uint64_t remaining = window_;
  for (auto it = segments_.rbegin(); it != segments_.rend(); ++it) {
    tracked& t = *it;
    const uint64_t keep_from = t.end > remaining ? t.end - remaining : 0;
    remaining -= std::min(remaining, t.end);
    const bool whole = t.sealed && keep_from == t.end;
    if (keep_from >= t.dropped + drop_step_bytes || (whole && keep_from > t.dropped))
      drop(t, keep_from);
  }
  // Sealed segments wholly dropped need no tracking (nor their descriptor).
  while (!segments_.empty() && segments_.front().sealed &&
         segments_.front().dropped >= segments_.front().end)
    segments_.pop_front();
}

void cache_window::drop(tracked& t, uint64_t to) {
  const uint64_t from = t.dropped / page_bytes * page_bytes;
  const uint64_t end = std::min<uint64_t>(to, t.map->size()) / page_bytes * page_bytes;
  t.dropped = to;
  if (end <= from) return;
  auto* d = new drop_op;
  d->map = t.map;
  d->fd = t.fd;
  d->unmap = {{step_done}, d};
  d->evict = {{step_done}, d};
  ring_.prep_madvise(&d->unmap.op, t.map->data() + from, end - from, MADV_DONTNEED, true);
  ring_.prep_fadvise(&d->evict.op, t.fd->fd, from, end - from, POSIX_FADV_DONTNEED, false);
  ++drops_issued_;
}

}  // namespace keel::engine
