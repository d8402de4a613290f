// libFuzzer entry point for the Kafka request decoder (built only with clang: -fsanitize=fuzzer).
//   build/<kind>/tests/net/net_kafka_decode_fuzz tests/net/kafka_corpus -max_total_time=60
// The input is a request without its size prefix: the header (its version chosen from the api key
// and version that open it, as the broker does), then the body of any generated api key at any
// version. Whatever decodes must re-encode to bytes that decode and re-encode identically.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <span>

#include "keel/net/kafka/messages.h"
#include "keel/net/kafka/protocol.h"

namespace {

using namespace keel::net::kafka;

template <class T>
void check_stable(const T& m, int16_t version) {
  writer w;
  m.encode(w, version);
  const auto once = w.flatten();
  reader r(once);
  T again;
  if (!again.decode(r, version) || !r.at_end()) std::abort();
  writer w2;
  again.encode(w2, version);
  if (w2.flatten() != once) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::span<const std::byte> in(reinterpret_cast<const std::byte*>(data), size);
  reader peek(in);
  const int16_t api_key = peek.get_int16();
  const int16_t api_version = peek.get_int16();
  if (!peek.ok()) return 0;
  reader r(in);
  request_header header;
  const int16_t header_version = request_header_version(api_key, api_version);
  if (!header.decode(r, header_version)) return 0;
  check_stable(header, header_version);
  const api_info* api = find_api(api_key);
  if (api == nullptr || api_version < api->lowest_version || api_version > api->highest_version)
    return 0;
  visit_request_type(api_key, [&](auto t) {
    typename decltype(t)::type body;
    if (body.decode(r, api_version)) check_stable(body, api_version);
  });
  return 0;
}
