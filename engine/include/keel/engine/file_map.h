// A read-only or read-write memory map of a file region, unmapped when the last holder lets go.
// Views handed to readers hold a shared_ptr to the map, so a segment that is rolled, truncated
// or deleted while a reader still looks at it keeps its pages mapped until the reader is done.
#pragma once

#include <cstddef>
#include <memory>
#include <span>
#include <string>

#include "keel/engine/result.h"

namespace keel::engine {

class file_map {
 public:
  // Maps `length` bytes of `fd` from position 0. The length may exceed the file's size (pages
  // beyond the end must not be touched until the file has grown over them).
  static result<std::shared_ptr<file_map>> map(int fd, size_t length, bool writable,
                                               const std::string& what);
  ~file_map();
  file_map(const file_map&) = delete;
  file_map& operator=(const file_map&) = delete;

  std::byte* data() const { return data_; }
  size_t size() const { return size_; }
  std::span<const std::byte> bytes(size_t position, size_t length) const;

 private:
  file_map(std::byte* data, size_t size) : data_(data), size_(size) {}
  std::byte* data_;
  size_t size_;
};

}  // namespace keel::engine
