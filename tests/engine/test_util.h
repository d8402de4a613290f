// Helpers shared by the engine tests: temporary directories on the real filesystem, payloads
// derived from their offsets, and synchronous wrappers around the asynchronous append path.
#pragma once

#include <gtest/gtest.h>
#include <stdlib.h>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "keel/engine/engine.h"

namespace keel::engine::test {

// A fresh directory under the test temporary directory (the real disk), removed afterwards.
class temp_dir {
 public:
  temp_dir() {
    const char* base = std::getenv("KEEL_TEST_TMPDIR");
    std::string pattern = (base ? std::string(base) + "/" : ::testing::TempDir()) + "keel-XXXXXX";
    std::vector<char> buf(pattern.begin(), pattern.end());
    buf.push_back('\0');
    if (::mkdtemp(buf.data()) == nullptr) std::abort();
    path_ = buf.data();
  }
  ~temp_dir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  temp_dir(const temp_dir&) = delete;
  temp_dir& operator=(const temp_dir&) = delete;
  const std::string& path() const { return path_; }
  std::string sub(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

// Deterministic bytes for the batch at `base`, `size` long: what a test appends and expects back.
inline std::string payload_for(int64_t base, size_t size, uint64_t salt = 0) {
  std::string out(size, '\0');
  uint64_t x = static_cast<uint64_t>(base) * 0x9E3779B97F4A7C15ull + salt + 1;
  for (size_t i = 0; i < size; ++i) {
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    out[i] = static_cast<char>((x * 0x2545F4914F6CDD1Dull) >> 56);
  }
  return out;
}

inline std::span<const std::byte> bytes_of(const std::string& s) {
  return std::as_bytes(std::span(s.data(), s.size()));
}

inline std::string string_of(std::span<const std::byte> b) {
  return std::string(reinterpret_cast<const char*>(b.data()), b.size());
}

// A batch_spec viewing `payload`, which must outlive it (a temporary string may not be passed;
// a string literal may).
inline batch_spec spec_of(std::span<const std::byte> payload, int64_t term = 1, int64_t ts = -1,
                          uint32_t offset_count = 1) {
  batch_spec b;
  b.term = term_id(term);
  b.max_timestamp = timestamp_ms(ts);
  b.offset_count = offset_count;
  b.payload = payload;
  return b;
}
inline batch_spec spec_of(const std::string& payload, int64_t term = 1, int64_t ts = -1,
                          uint32_t offset_count = 1) {
  return spec_of(bytes_of(payload), term, ts, offset_count);
}
batch_spec spec_of(std::string&& payload, int64_t term = 1, int64_t ts = -1,
                   uint32_t offset_count = 1) = delete;
template <size_t N>
batch_spec spec_of(const char (&literal)[N], int64_t term = 1, int64_t ts = -1,
                   uint32_t offset_count = 1) {
  return spec_of(std::as_bytes(std::span(literal, N - 1)), term, ts, offset_count);
}

// Appends and runs the ring until the append's callback fired; returns what the callback got.
inline result<append_ack> append_wait(log& l, io_ring& ring, const batch_spec& spec) {
  std::optional<result<append_ack>> got;
  auto r = l.append(spec, [&](const result<append_ack>& a) { got = a; });
  if (!r) return r;
  while (!got) {
    if (ring.in_flight() == 0) {
      ADD_FAILURE() << "append callback pending with nothing in flight";
      return make_error(errc::io_error, "stuck");
    }
    ring.wait();
  }
  return *got;
}

// Runs the ring until nothing this test started is in flight.
inline void drain(io_ring& ring) {
  ring.drain();
}

// Flushes and waits for the flush's callback.
inline status flush_wait(log& l, io_ring& ring) {
  std::optional<status> got;
  l.flush([&](const status& s) { got = s; });
  while (!got) {
    if (ring.in_flight() == 0) {
      ADD_FAILURE() << "flush callback pending with nothing in flight";
      return make_error(errc::io_error, "stuck");
    }
    ring.wait();
  }
  return *got;
}

// A batch copied out of a read.
struct stored_batch {
  batch_header header;
  std::string payload;
};

// The views of a read, decoded once (for indexing and for holding across later changes).
inline std::vector<batch_view> views_of(const read_result& r) {
  std::vector<batch_view> out;
  for (const batch_view& v : r.batches())
    out.push_back(v);
  return out;
}

// Reads everything readable from `from` (up to the written end), following next_offset.
inline result<std::vector<stored_batch>> read_all(const log& l, offset from,
                                                  uint64_t max_bytes = 64 << 10,
                                                  bool verify = true) {
  std::vector<stored_batch> out;
  for (;;) {
    auto r = l.read(from, max_bytes, l.written_offset(), read_options{verify});
    if (!r) return std::move(r).err();
    if (r->batches().empty()) break;
    for (const batch_view& v : r->batches())
      out.push_back({v.header, string_of(v.payload())});
    from = r->next_offset;
  }
  return out;
}

inline std::vector<stored_batch> read_all_ok(const log& l) {
  auto r = read_all(l, l.log_start());
  EXPECT_TRUE(r.ok()) << r.err().describe();
  return r ? std::move(r).value() : std::vector<stored_batch>{};
}

}  // namespace keel::engine::test
