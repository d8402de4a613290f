// Shared by the Kafka API handlers (kafka_*.cc): the response encoder and small helpers.
// Private to server/src.
#pragma once

#include <string>
#include <utility>

#include "keel/net/kafka/errors.h"
#include "keel/net/kafka/protocol.h"
#include "keel/server/kafka_frontend.h"

namespace keel::server {

// A response assembled from parts answered on several shards: the request is answered when
// `outstanding` drops to zero. It starts at 1, held by the caller until every part is under way.
template <class Response>
struct gathered_response {
  Response response;
  int outstanding = 1;
};

template <class Body>
void kafka_frontend::answer(const request& rq, const Body& body,
                            std::shared_ptr<const void> keep_alive) {
  auto w = std::make_shared<net::kafka::writer>();
  w->put_int32(rq.correlation_id);
  if (net::kafka::response_header_version(rq.api_key, rq.api_version) >= 1) w->put_uvarint(0);
  body.encode(*w, rq.api_version);
  net::kafka_response r;
  for (const auto& p : w->pieces())
    r.pieces.emplace_back(p.data, p.size);
  // The writer owns the encoded bytes; keep_alive owns what the external pieces point into.
  r.keep_alive =
      std::make_shared<std::pair<std::shared_ptr<net::kafka::writer>, std::shared_ptr<const void>>>(
          std::move(w), std::move(keep_alive));
  rq.respond(std::move(r));
}

}  // namespace keel::server
