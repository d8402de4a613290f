// Little-endian binary writing and bounds-checked reading, for Keel's own formats (inter-broker
// messages, metadata commands and snapshots). A reader never reads past its span: every read
// past the end, every length beyond a stated bound, marks the reader failed, and the caller
// checks ok() once at the end.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

namespace keel::net {

class wire_writer {
 public:
  explicit wire_writer(std::vector<std::byte>& out) : out_(out) {}
  template <class T>
  requires std::is_integral_v<T>
  void put(T v) {
    const size_t at = out_.size();
    out_.resize(at + sizeof(T));
    std::memcpy(out_.data() + at, &v, sizeof(T));
  }
  void put_bytes(std::span<const std::byte> b) {
    put<uint32_t>(static_cast<uint32_t>(b.size()));
    out_.insert(out_.end(), b.begin(), b.end());
  }
  void put_string(const std::string& s) { put_bytes(std::as_bytes(std::span(s))); }

 private:
  std::vector<std::byte>& out_;
};

class wire_reader {
 public:
  explicit wire_reader(std::span<const std::byte> in) : in_(in) {}
  template <class T>
  requires std::is_integral_v<T> T get() {
    T v{};
    if (!take(sizeof(T))) return v;
    std::memcpy(&v, in_.data() + at_ - sizeof(T), sizeof(T));
    return v;
  }
  // A length-prefixed byte string of at most max_bytes.
  std::span<const std::byte> get_bytes(size_t max_bytes) {
    const auto n = get<uint32_t>();
    if (!ok_ || n > max_bytes || !take(n)) {
      ok_ = false;
      return {};
    }
    return in_.subspan(at_ - n, n);
  }
  std::string get_string(size_t max_bytes) {
    auto b = get_bytes(max_bytes);
    return std::string(reinterpret_cast<const char*>(b.data()), b.size());
  }
  // A count of items of at least min_item_bytes each: bounded by what is left, so a forged
  // count cannot make the caller reserve memory the input could never fill.
  uint32_t get_count(size_t min_item_bytes) {
    const auto n = get<uint32_t>();
    if (min_item_bytes > 0 && n > remaining() / min_item_bytes) ok_ = false;
    return ok_ ? n : 0;
  }
  bool ok() const { return ok_; }
  bool at_end() const { return at_ == in_.size(); }
  size_t remaining() const { return in_.size() - at_; }
  void fail() { ok_ = false; }

 private:
  bool take(size_t n) {
    if (!ok_ || n > in_.size() - at_) {
      ok_ = false;
      return false;
    }
    at_ += n;
    return true;
  }
  std::span<const std::byte> in_;
  size_t at_ = 0;
  bool ok_ = true;
};

}  // namespace keel::net
