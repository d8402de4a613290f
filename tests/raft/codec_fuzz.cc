// libFuzzer entry point for the raft codec (built only with clang: -fsanitize=fuzzer).
//   build/<kind>/tests/raft/raft_codec_fuzz -max_total_time=60
// Any input must decode to an error or to a valid message that re-encodes and decodes equal.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <span>

#include "keel/raft/codec.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::span<const std::byte> in(reinterpret_cast<const std::byte*>(data), size);
  auto m = keel::raft::codec::decode(in);
  if (m.ok()) {
    if (!keel::raft::codec::validate(*m).ok()) std::abort();
    auto again = keel::raft::codec::decode(keel::raft::codec::encode(*m));
    if (!again.ok() || !(*again == *m)) std::abort();
  }
  auto frame = keel::raft::codec::decode_heartbeat_frame(in);
  if (frame.ok() && !frame->empty()) {
    auto again = keel::raft::codec::decode_heartbeat_frame(
        keel::raft::codec::encode_heartbeat_frame(*frame));
    if (!again.ok() || !(*again == *frame)) std::abort();
  }
  return 0;
}
