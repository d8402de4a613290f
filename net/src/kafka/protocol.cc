#include "keel/net/kafka/protocol.h"

#include <cassert>
#include <limits>

namespace keel::net::kafka {

size_t record_set::size() const {
  size_t n = 0;
  for (const auto& p : pieces)
    n += p.size();
  return n;
}

std::vector<std::byte> record_set::flatten() const {
  std::vector<std::byte> out;
  out.reserve(size());
  for (const auto& p : pieces)
    out.insert(out.end(), p.begin(), p.end());
  return out;
}

bool record_set::operator==(const record_set& other) const {
  if (null != other.null) return false;
  if (null) return true;
  return size() == other.size() && flatten() == other.flatten();
}

uuid reader::get_uuid() {
  uuid v{};
  const auto b = get_raw(v.size());
  if (ok_) std::memcpy(v.data(), b.data(), v.size());
  return v;
}

uint64_t reader::get_uvarlong() {
  uint64_t v = 0;
  for (int i = 0; i < 10; ++i) {
    const auto b = get_be<uint8_t>();
    if (!ok_) return 0;
    // The tenth byte holds bit 63 only.
    if (i == 9 && b > 1) break;
    v |= static_cast<uint64_t>(b & 0x7f) << (7 * i);
    if ((b & 0x80) == 0) return v;
  }
  fail();
  return 0;
}

uint32_t reader::get_uvarint() {
  uint32_t v = 0;
  for (int i = 0; i < 5; ++i) {
    const auto b = get_be<uint8_t>();
    if (!ok_) return 0;
    // The fifth byte holds bits 28-31 only.
    if (i == 4 && b > 0x0f) break;
    v |= static_cast<uint32_t>(b & 0x7f) << (7 * i);
    if ((b & 0x80) == 0) return v;
  }
  fail();
  return 0;
}

int32_t reader::get_varint() {
  const uint32_t u = get_uvarint();
  return static_cast<int32_t>((u >> 1) ^ (~(u & 1) + 1));
}

int64_t reader::get_varlong() {
  const uint64_t u = get_uvarlong();
  return static_cast<int64_t>((u >> 1) ^ (~(u & 1) + 1));
}

std::span<const std::byte> reader::get_raw(size_t n) {
  if (!take(n)) return {};
  return in_.subspan(at_ - n, n);
}

int64_t reader::get_length(bool compact, bool wide) {
  int64_t n;
  if (compact) {
    n = static_cast<int64_t>(get_uvarint()) - 1;
  } else {
    n = wide ? get_int32() : get_int16();
  }
  if (!ok_) return 0;
  if (n < -1 || (n > 0 && static_cast<uint64_t>(n) > remaining())) {
    fail();
    return 0;
  }
  return n;
}

std::optional<std::span<const std::byte>> reader::get_nullable_bytes_view(bool compact) {
  const int64_t n = get_length(compact, true);
  if (!ok_ || n < 0) return std::nullopt;
  return get_raw(static_cast<size_t>(n));
}

std::optional<std::string> reader::get_nullable_string(bool compact) {
  const int64_t n = get_length(compact, false);
  if (!ok_ || n < 0) return std::nullopt;
  const auto b = get_raw(static_cast<size_t>(n));
  return std::string(reinterpret_cast<const char*>(b.data()), b.size());
}

std::string reader::get_string(bool compact) {
  auto s = get_nullable_string(compact);
  if (!s) {
    fail();
    return {};
  }
  return std::move(*s);
}

std::optional<std::vector<std::byte>> reader::get_nullable_bytes(bool compact) {
  const auto b = get_nullable_bytes_view(compact);
  if (!b) return std::nullopt;
  return std::vector<std::byte>(b->begin(), b->end());
}

std::vector<std::byte> reader::get_bytes(bool compact) {
  auto b = get_nullable_bytes(compact);
  if (!b) {
    fail();
    return {};
  }
  return std::move(*b);
}

record_set reader::get_records(bool compact) {
  record_set r;
  const auto b = get_nullable_bytes_view(compact);
  if (!ok_) return r;
  if (!b) {
    r.null = true;
  } else if (!b->empty()) {
    r.pieces.push_back(*b);
  }
  return r;
}

int32_t reader::get_array_length(bool compact) {
  int64_t n;
  if (compact) {
    n = static_cast<int64_t>(get_uvarint()) - 1;
  } else {
    n = get_int32();
  }
  if (!ok_) return 0;
  if (n < -1 || (n > 0 && static_cast<uint64_t>(n) > remaining())) {
    fail();
    return 0;
  }
  return static_cast<int32_t>(n);
}

void writer::put_uvarlong(uint64_t v) {
  std::byte b[10];
  size_t n = 0;
  while (v >= 0x80) {
    b[n++] = static_cast<std::byte>((v & 0x7f) | 0x80);
    v >>= 7;
  }
  b[n++] = static_cast<std::byte>(v);
  put_raw(std::span<const std::byte>(b, n));
}

void writer::put_raw(std::span<const std::byte> bytes) {
  if (bytes.empty()) return;
  if (runs_.empty() || runs_.back().external) {
    runs_.push_back(run{false, nullptr, owned_.size(), 0});
  }
  owned_.insert(owned_.end(), bytes.begin(), bytes.end());
  runs_.back().size += bytes.size();
  size_ += bytes.size();
}

void writer::put_external(std::span<const std::byte> bytes) {
  if (bytes.empty()) return;
  runs_.push_back(run{true, bytes.data(), 0, bytes.size()});
  size_ += bytes.size();
}

void writer::put_length(int64_t length, bool compact, bool wide) {
  assert(length >= -1);
  if (compact) {
    put_uvarint(static_cast<uint32_t>(length + 1));
  } else if (wide) {
    assert(length <= std::numeric_limits<int32_t>::max());
    put_int32(static_cast<int32_t>(length));
  } else {
    assert(length <= std::numeric_limits<int16_t>::max());
    put_int16(static_cast<int16_t>(length));
  }
}

void writer::put_string(const std::string& s, bool compact) {
  put_length(static_cast<int64_t>(s.size()), compact, false);
  put_raw(std::as_bytes(std::span(s)));
}

void writer::put_nullable_string(const std::optional<std::string>& s, bool compact) {
  if (!s) {
    put_length(-1, compact, false);
  } else {
    put_string(*s, compact);
  }
}

void writer::put_bytes(std::span<const std::byte> b, bool compact) {
  put_length(static_cast<int64_t>(b.size()), compact, true);
  put_raw(b);
}

void writer::put_nullable_bytes(const std::optional<std::vector<std::byte>>& b, bool compact) {
  if (!b) {
    put_length(-1, compact, true);
  } else {
    put_bytes(*b, compact);
  }
}

void writer::put_records(const record_set& records, bool compact) {
  if (records.null) {
    put_length(-1, compact, true);
    return;
  }
  put_length(static_cast<int64_t>(records.size()), compact, true);
  for (const auto& p : records.pieces)
    put_external(p);
}

void writer::put_array_length(int32_t count, bool compact) {
  assert(count >= -1);
  if (compact) {
    put_uvarint(static_cast<uint32_t>(count + 1));
  } else {
    put_int32(count);
  }
}

void writer::append(const writer& other) {
  for (const auto& r : other.runs_) {
    if (r.external) {
      put_external(std::span<const std::byte>(r.data, r.size));
    } else {
      put_raw(std::span<const std::byte>(other.owned_.data() + r.offset, r.size));
    }
  }
}

void writer::patch_int32(size_t position, int32_t value) {
  size_t at = 0;
  for (const auto& r : runs_) {
    if (position < at + r.size) {
      assert(!r.external && position + 4 <= at + r.size);
      const auto u = static_cast<uint32_t>(value);
      std::byte* p = owned_.data() + r.offset + (position - at);
      for (size_t i = 0; i < 4; ++i)
        p[i] = static_cast<std::byte>((u >> (8 * (3 - i))) & 0xff);
      return;
    }
    at += r.size;
  }
  assert(false && "patch_int32 past the end of the output");
}

std::vector<writer::piece> writer::pieces() const {
  std::vector<piece> out;
  out.reserve(runs_.size());
  for (const auto& r : runs_) {
    out.push_back(piece{r.external ? r.data : owned_.data() + r.offset, r.size});
  }
  return out;
}

std::vector<std::byte> writer::flatten() const {
  std::vector<std::byte> out;
  out.reserve(size_);
  for (const auto& p : pieces())
    out.insert(out.end(), p.data, p.data + p.size);
  return out;
}

}  // namespace keel::net::kafka
