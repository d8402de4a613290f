// Kafka wire primitives: a bounded big-endian reader and a gathering writer, the building blocks of
// the generated message codec (messages.h). The encodings are those of the Kafka protocol guide
// (../shared/kafka-protocol/README.md, section 1): fixed-width big-endian integers, unsigned
// varints for the flexible ("compact") lengths, zigzag varints inside record batches, and the
// tagged-field sections of flexible versions.
//
// reader: never throws, never reads past its span. Any read past the end, a negative length other
// than -1 (null), a count larger than the bytes left, a varint longer than 5 (10) bytes or one that
// overflows 32 (64) bits marks the reader failed. The failure is sticky: every later read returns a
// zero value, and the caller checks ok() once at the end. Nothing is allocated beyond what the
// bytes left could fill (a string of n bytes needs n bytes of input).
//
// writer: appends into an owned buffer, and put_external() inserts a view of bytes it does not
// own (record data served from the log's maps) without copying them. pieces() yields the output
// as runs in order, for a gathering socket write; the external bytes must outlive the writer's use.
#pragma once

#include <array>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <span>
#include <string>
#include <vector>

namespace keel::net::kafka {

using uuid = std::array<uint8_t, 16>;

// The value of a schema field of type `records`: batches of records, possibly in several pieces
// that are sent back to back. Decoding yields one piece that points into the reader's input (no
// copy), so a decoded record_set is valid only while that input is. Two record sets are equal
// when both are null or both carry the same bytes, however they are split.
struct record_set {
  bool null = false;
  std::vector<std::span<const std::byte>> pieces;

  size_t size() const;
  // The bytes joined into one buffer (tests and small cases; the hot path uses the pieces).
  std::vector<std::byte> flatten() const;
  bool operator==(const record_set& other) const;
};

class reader {
 public:
  reader() = default;
  explicit reader(std::span<const std::byte> in) : in_(in) {}

  bool ok() const { return ok_; }
  void fail() { ok_ = false; }
  size_t position() const { return at_; }
  size_t remaining() const { return in_.size() - at_; }
  bool at_end() const { return at_ == in_.size(); }

  int8_t get_int8() { return static_cast<int8_t>(get_be<uint8_t>()); }
  int16_t get_int16() { return static_cast<int16_t>(get_be<uint16_t>()); }
  int32_t get_int32() { return static_cast<int32_t>(get_be<uint32_t>()); }
  int64_t get_int64() { return static_cast<int64_t>(get_be<uint64_t>()); }
  uint16_t get_uint16() { return get_be<uint16_t>(); }
  uint32_t get_uint32() { return get_be<uint32_t>(); }
  bool get_bool() { return get_be<uint8_t>() != 0; }
  double get_float64() { return std::bit_cast<double>(get_be<uint64_t>()); }
  uuid get_uuid();

  // Unsigned LEB128, at most 5 bytes (32 bits) or 10 bytes (64 bits).
  uint32_t get_uvarint();
  uint64_t get_uvarlong();
  // Zigzag-encoded signed varints (record batches).
  int32_t get_varint();
  int64_t get_varlong();

  // n raw bytes, as a view into the input (empty and failed if fewer are left).
  std::span<const std::byte> get_raw(size_t n);

  // Strings, bytes and records: classic (int16/int32 length, -1 = null) when compact is false,
  // flexible (uvarint length+1, 0 = null) when true. The non-nullable forms fail on null.
  std::optional<std::string> get_nullable_string(bool compact);
  std::string get_string(bool compact);
  std::optional<std::vector<std::byte>> get_nullable_bytes(bool compact);
  std::vector<std::byte> get_bytes(bool compact);
  // A view of the bytes, null as nullopt: no copy.
  std::optional<std::span<const std::byte>> get_nullable_bytes_view(bool compact);
  record_set get_records(bool compact);

  // An array's element count: -1 for null, otherwise a count no larger than the bytes left (every
  // element takes at least one byte), else the reader fails and 0 is returned.
  int32_t get_array_length(bool compact);

  // A tagged-field section: the uvarint count, then per field its tag, its size and its value.
  // on_field(tag, sub) is called for each field with a reader over exactly its value; a failure
  // inside sub fails this reader. Unknown tags are left unread (skipped).
  template <class OnField>
  void get_tagged_fields(OnField&& on_field) {
    const uint32_t count = get_uvarint();
    if (ok_ && count > remaining()) fail();
    for (uint32_t i = 0; i < count && ok_; ++i) {
      const uint32_t tag = get_uvarint();
      const uint32_t size = get_uvarint();
      const auto value = get_raw(size);
      if (!ok_) break;
      reader sub(value);
      on_field(tag, sub);
      if (!sub.ok()) fail();
    }
  }

 private:
  template <class U>
  U get_be() {
    if (!take(sizeof(U))) return 0;
    U v;
    std::memcpy(&v, in_.data() + at_ - sizeof(U), sizeof(U));
    if constexpr (std::endian::native == std::endian::little && sizeof(U) > 1) v = byteswap(v);
    return v;
  }
  template <class U>
  static U byteswap(U v) {
    U out = 0;
    for (size_t i = 0; i < sizeof(U); ++i) {
      out = static_cast<U>((out << 8) | (v & 0xff));
      v = static_cast<U>(v >> 8);
    }
    return out;
  }
  bool take(size_t n) {
    if (!ok_ || n > in_.size() - at_) {
      ok_ = false;
      return false;
    }
    at_ += n;
    return true;
  }
  // The length of a string/bytes: -1 for null, else a length that fits in what is left.
  int64_t get_length(bool compact, bool wide);

  std::span<const std::byte> in_;
  size_t at_ = 0;
  bool ok_ = true;
};

class writer {
 public:
  // One run of the output: owned bytes of the writer, or external bytes given to put_external.
  struct piece {
    const std::byte* data;
    size_t size;
  };

  void put_int8(int8_t v) { put_be(static_cast<uint8_t>(v)); }
  void put_int16(int16_t v) { put_be(static_cast<uint16_t>(v)); }
  void put_int32(int32_t v) { put_be(static_cast<uint32_t>(v)); }
  void put_int64(int64_t v) { put_be(static_cast<uint64_t>(v)); }
  void put_uint16(uint16_t v) { put_be(v); }
  void put_uint32(uint32_t v) { put_be(v); }
  void put_bool(bool v) { put_be(static_cast<uint8_t>(v ? 1 : 0)); }
  void put_float64(double v) { put_be(std::bit_cast<uint64_t>(v)); }
  void put_uuid(const uuid& v) { put_raw(std::as_bytes(std::span(v))); }

  void put_uvarint(uint32_t v) { put_uvarlong(v); }
  void put_uvarlong(uint64_t v);
  void put_varint(int32_t v) {
    put_uvarint((static_cast<uint32_t>(v) << 1) ^ static_cast<uint32_t>(v >> 31));
  }
  void put_varlong(int64_t v) {
    put_uvarlong((static_cast<uint64_t>(v) << 1) ^ static_cast<uint64_t>(v >> 63));
  }

  // Copies the bytes into the owned buffer.
  void put_raw(std::span<const std::byte> bytes);
  // Appends a view of bytes the writer does not own; they are not copied.
  void put_external(std::span<const std::byte> bytes);

  void put_string(const std::string& s, bool compact);
  void put_nullable_string(const std::optional<std::string>& s, bool compact);
  void put_bytes(std::span<const std::byte> b, bool compact);
  void put_nullable_bytes(const std::optional<std::vector<std::byte>>& b, bool compact);
  // The length prefix, then each piece via put_external (no copy).
  void put_records(const record_set& records, bool compact);
  // -1 writes a null array.
  void put_array_length(int32_t count, bool compact);
  void put_length(int64_t length, bool compact, bool wide);

  // Appends everything other wrote, in order (owned bytes copied, external views kept external).
  void append(const writer& other);

  // Total bytes written so far, owned and external.
  size_t size() const { return size_; }
  // Overwrites 4 owned bytes at a position of the output (e.g. a frame's size prefix, reserved
  // with put_int32(0) and patched once the size is known). The bytes must be owned, not external.
  void patch_int32(size_t position, int32_t value);
  // The output as runs in order. Valid until the next write (owned bytes may move).
  std::vector<piece> pieces() const;
  // The output joined into one buffer (copies the external bytes).
  std::vector<std::byte> flatten() const;

 private:
  struct run {
    bool external;
    const std::byte* data;  // external runs only
    size_t offset;          // owned runs only: where they start in owned_
    size_t size;
  };
  template <class U>
  void put_be(U v) {
    std::byte b[sizeof(U)];
    for (size_t i = 0; i < sizeof(U); ++i)
      b[i] = static_cast<std::byte>((v >> (8 * (sizeof(U) - 1 - i))) & 0xff);
    put_raw(std::span<const std::byte>(b, sizeof(U)));
  }

  std::vector<std::byte> owned_;
  std::vector<run> runs_;
  size_t size_ = 0;
};

}  // namespace keel::net::kafka
