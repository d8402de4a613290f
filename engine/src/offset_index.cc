#include "keel/engine/offset_index.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace keel::engine {
namespace {

bool all_zero(const std::byte* p, size_t n) {
  for (size_t i = 0; i < n; ++i)
    if (p[i] != std::byte{0}) return false;
  return true;
}

template <class T>
T load(const std::byte* p) {
  T v;
  std::memcpy(&v, p, sizeof(T));
  return v;
}
template <class T>
void store(std::byte* p, T v) {
  std::memcpy(p, &v, sizeof(T));
}

}  // namespace

result<index_file> index_file::map_fd(int fd, const std::string& path, size_t entry_size,
                                      size_t map_bytes, bool writable) {
  auto map = file_map::map(fd, map_bytes, writable, path);
  ::close(fd);  // the map keeps the pages; no descriptor stays open per index
  if (!map) return std::move(map).err();
  index_file out;
  out.entry_size_ = entry_size;
  out.writable_ = writable;
  out.capacity_ = map_bytes / entry_size;
  out.map_ = std::move(map).value();
  // Lookups touch a few scattered pages; readahead would fault in (and zero) megabytes of the
  // preallocated tail for each of them.
  ::madvise(out.map_->data(), map_bytes, MADV_RANDOM);
  return out;
}

result<index_file> index_file::adopt(int fd, const std::string& path, size_t entry_size,
                                     size_t capacity_bytes) {
  KEEL_ASSERT(entry_size > 0 && capacity_bytes >= entry_size, "an index has room for entries");
  return map_fd(fd, path, entry_size, capacity_bytes - capacity_bytes % entry_size, true);
}

result<index_file> index_file::open(const std::string& path, size_t entry_size,
                                    size_t capacity_bytes, bool writable) {
  KEEL_ASSERT(entry_size > 0, "index entries have a size");
  const int fd = ::open(path.c_str(),
                        writable ? (O_RDWR | O_CREAT | O_CLOEXEC) : (O_RDONLY | O_CLOEXEC), 0644);
  if (fd < 0) return make_sys_error(errno, "open " + path);
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    const int e = errno;
    ::close(fd);
    return make_sys_error(e, "fstat " + path);
  }
  size_t file_bytes = static_cast<size_t>(st.st_size);
  size_t map_bytes = file_bytes - file_bytes % entry_size;
  if (writable) {
    map_bytes = std::max(map_bytes, capacity_bytes - capacity_bytes % entry_size);
    // Allocate the blocks, not just the size: a store through the map into a hole that the
    // filesystem cannot fill (a full disk) is a SIGBUS, so a full disk must fail here instead.
    int rc = ::fallocate(fd, 0, 0, static_cast<off_t>(map_bytes));
    if (rc != 0 && (errno == EOPNOTSUPP || errno == ENOSYS) && file_bytes < map_bytes)
      rc = ::ftruncate(fd, static_cast<off_t>(map_bytes));
    if (rc != 0) {
      const int e = errno;
      ::close(fd);
      return make_sys_error(e, "preallocate index " + path);
    }
  }
  if (map_bytes == 0) {
    ::close(fd);
    if (writable) return make_error(errc::invalid_argument, "index " + path + " has no room");
    index_file out;  // a closed segment with no entries: nothing to map
    out.entry_size_ = entry_size;
    return out;
  }
  auto mapped = map_fd(fd, path, entry_size, map_bytes, writable);
  if (!mapped) return mapped;
  index_file out = std::move(mapped).value();
  if (file_bytes == 0) return out;  // just created: no entries
  // Entries increase and the tail is zero: binary-search the first all-zero entry.
  size_t lo = 0, hi = out.capacity_;
  while (lo < hi) {
    const size_t mid = lo + (hi - lo) / 2;
    if (all_zero(out.entry(mid), entry_size))
      hi = mid;
    else
      lo = mid + 1;
  }
  out.count_ = lo;
  return out;
}

void index_file::truncate(size_t n) {
  KEEL_ASSERT(n <= count_, "truncate an index to at most its length");
  if (n == count_) return;
  KEEL_ASSERT(writable_, "only a writable index is truncated");
  std::memset(map_->data() + n * entry_size_, 0, (count_ - n) * entry_size_);
  count_ = n;
}

status index_file::sync() const {
  if (!map_) return ok_status();
  if (::msync(map_->data(), map_->size(), MS_SYNC) != 0)
    return make_sys_error(errno, "msync index");
  return ok_status();
}

status index_file::trim(const std::string& path) const {
  if (::truncate(path.c_str(), static_cast<off_t>(count_ * entry_size_)) != 0)
    return make_sys_error(errno, "trim index " + path);
  return ok_status();
}

offset_index::entry offset_index::at(size_t i) const {
  KEEL_ASSERT(i < count(), "index entry in range");
  const std::byte* p = file_->entry(i);
  return {base_.plus(load<uint32_t>(p)), load<uint32_t>(p + 4)};
}

std::optional<offset_index::entry> offset_index::floor(offset target) const {
  size_t lo = 0, hi = count();  // first entry with offset > target
  while (lo < hi) {
    const size_t mid = lo + (hi - lo) / 2;
    if (at(mid).base_offset <= target)
      lo = mid + 1;
    else
      hi = mid;
  }
  if (lo == 0) return std::nullopt;
  return at(lo - 1);
}

std::optional<offset_index::entry> offset_index::floor_position(uint64_t position) const {
  size_t lo = 0, hi = count();  // first entry with position > position
  while (lo < hi) {
    const size_t mid = lo + (hi - lo) / 2;
    if (at(mid).position <= position)
      lo = mid + 1;
    else
      hi = mid;
  }
  if (lo == 0) return std::nullopt;
  return at(lo - 1);
}

void offset_index::append(offset batch_base, uint32_t position) {
  KEEL_ASSERT(!full(), "append to a full offset index");
  KEEL_ASSERT(position > 0, "the first batch of a segment is never indexed");
  KEEL_ASSERT(count() == 0 ||
                  (at(count() - 1).base_offset < batch_base && at(count() - 1).position < position),
              "offset index entries strictly increase");
  const int64_t rel = batch_base.value() - base_.value();
  KEEL_ASSERT(rel >= 0 && rel <= UINT32_MAX, "relative offset fits 32 bits");
  std::byte* p = file_->mutable_entry(count());
  store<uint32_t>(p, static_cast<uint32_t>(rel));
  store<uint32_t>(p + 4, position);
  file_->push_back_count();
}

void offset_index::truncate_from(offset from) {
  size_t n = count();
  while (n > 0 && at(n - 1).base_offset >= from)
    --n;
  file_->truncate(n);
}

bool offset_index::sane(uint64_t log_bytes) const {
  for (size_t i = 0; i < count(); ++i) {
    const entry e = at(i);
    if (e.position == 0 || e.position >= log_bytes) return false;
    if (i > 0 && (at(i - 1).base_offset >= e.base_offset || at(i - 1).position >= e.position))
      return false;
  }
  return true;
}

time_index::entry time_index::at(size_t i) const {
  KEEL_ASSERT(i < count(), "time index entry in range");
  const std::byte* p = file_->entry(i);
  return {timestamp_ms(load<int64_t>(p)), base_.plus(load<uint32_t>(p + 8))};
}

std::optional<time_index::entry> time_index::last() const {
  if (count() == 0) return std::nullopt;
  return at(count() - 1);
}

std::optional<time_index::entry> time_index::floor_before(timestamp_ms target) const {
  size_t lo = 0, hi = count();  // first entry with timestamp >= target
  while (lo < hi) {
    const size_t mid = lo + (hi - lo) / 2;
    if (at(mid).timestamp < target)
      lo = mid + 1;
    else
      hi = mid;
  }
  if (lo == 0) return std::nullopt;
  return at(lo - 1);
}

bool time_index::maybe_append(timestamp_ms timestamp, offset batch_base) {
  if (full() || timestamp.value() <= 0) return false;
  if (auto l = last(); l && (l->timestamp >= timestamp || l->base_offset >= batch_base))
    return false;
  const int64_t rel = batch_base.value() - base_.value();
  KEEL_ASSERT(rel >= 0 && rel <= UINT32_MAX, "relative offset fits 32 bits");
  std::byte* p = file_->mutable_entry(count());
  store<int64_t>(p, timestamp.value());
  store<uint32_t>(p + 8, static_cast<uint32_t>(rel));
  file_->push_back_count();
  return true;
}

void time_index::truncate_from(offset from) {
  size_t n = count();
  while (n > 0 && at(n - 1).base_offset >= from)
    --n;
  file_->truncate(n);
}

bool time_index::sane() const {
  for (size_t i = 1; i < count(); ++i) {
    if (at(i - 1).timestamp >= at(i).timestamp || at(i - 1).base_offset >= at(i).base_offset)
      return false;
  }
  return true;
}

}  // namespace keel::engine
