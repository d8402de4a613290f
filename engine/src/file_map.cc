#include "keel/engine/file_map.h"

#include <sys/mman.h>

#include <cerrno>

namespace keel::engine {

result<std::shared_ptr<file_map>> file_map::map(int fd, size_t length, bool writable,
                                                const std::string& what) {
  KEEL_ASSERT(length > 0, "a map covers at least one byte");
  const int prot = writable ? (PROT_READ | PROT_WRITE) : PROT_READ;
  void* p = ::mmap(nullptr, length, prot, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) return make_sys_error(errno, "mmap " + what);
  return std::shared_ptr<file_map>(new file_map(static_cast<std::byte*>(p), length));
}

file_map::~file_map() {
  ::munmap(data_, size_);
}

std::span<const std::byte> file_map::bytes(size_t position, size_t length) const {
  KEEL_ASSERT(position <= size_ && length <= size_ - position, "a view inside its map");
  return {data_ + position, length};
}

}  // namespace keel::engine
