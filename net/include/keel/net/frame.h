// The inter-broker frame: how every message between two brokers travels on a TCP connection.
//
// Layout, little-endian, 16-byte header then payload:
//   offset size field
//        0    4 length     bytes that follow this field: 12 + payload bytes
//        4    2 version    1
//        6    2 type       what the payload is (message_type); opaque to the framing
//        8    8 checksum   XXH3-64 of bytes [4, 8) followed by the payload
//       16    n payload
//
// A frame longer than the receiver's maximum, of another version, or whose checksum fails is a
// protocol error: the receiver drops the connection and logs why; it never trusts the bytes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace keel::net {

inline constexpr size_t frame_header_size = 16;
inline constexpr uint16_t frame_version = 1;
inline constexpr uint32_t frame_default_max_bytes = 64u << 20;

// Appends one encoded frame to `out`.
void encode_frame(std::vector<std::byte>& out, uint16_t type, std::span<const std::byte> payload);
// Completes a frame built in place: `frame` holds frame_header_size bytes of room followed by
// the payload; fills in the header and checksum (no copy of the payload).
void seal_frame(std::vector<std::byte>& frame, uint16_t type);

// Incremental decoder for a byte stream: feed() what arrived, then take frames with next().
class frame_decoder {
 public:
  enum class status { frame, need_more, error };
  struct frame_view {
    uint16_t type = 0;
    std::span<const std::byte> payload;  // valid until the next feed(), prepare() or next()
  };

  explicit frame_decoder(uint32_t max_frame_bytes = frame_default_max_bytes)
      : max_frame_bytes_(max_frame_bytes) {}

  void feed(std::span<const std::byte> bytes);
  // Reading straight into the decoder (no copy through another buffer): room for at least
  // `min_bytes` more (all the free room, possibly more), then commit() what arrived there.
  std::span<std::byte> prepare(size_t min_bytes);
  void commit(size_t n);
  // The next complete frame, need_more, or error (then error_message() says why; the stream is
  // unusable from there on).
  status next(frame_view& out);
  const std::string& error_message() const { return error_; }
  size_t buffered() const { return end_ - consumed_; }
  // The bytes fed but not yet taken as frames (to hand a stream over to another decoder).
  std::span<const std::byte> pending() const {
    return std::span(buffer_).subspan(consumed_, end_ - consumed_);
  }

 private:
  // [consumed_, end_) holds bytes not yet taken as frames; [end_, size) is free room (kept
  // allocated: growing zero-fills only once).
  std::vector<std::byte> buffer_;
  size_t consumed_ = 0;
  size_t end_ = 0;
  uint32_t max_frame_bytes_;
  std::string error_;
};

}  // namespace keel::net
