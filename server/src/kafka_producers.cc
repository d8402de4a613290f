// Kafka API for idempotent producers: InitProducerId (non-transactional only). The per-partition
// producer state is checked in the produce path (kafka_records.cc, producer_state.h).
#include <boost/asio/steady_timer.hpp>
#include <climits>
#include <cstdio>
#include <memory>

#include "kafka_support.h"
#include "keel/server/broker.h"

namespace keel::server {

namespace kafka = net::kafka;
namespace error_code = net::kafka::error_code;

void kafka_frontend::init_producer_id(const request& rq, kafka::init_producer_id_request m) {
  init_producer_id_after(rq, std::move(m), 0);
}

void kafka_frontend::init_producer_id_after(const request& rq, kafka::init_producer_id_request m,
                                            int waited_ms) {
  kafka::init_producer_id_response out;
  out.producer_id = -1;
  out.producer_epoch = -1;
  if (m.transactional_id) {
    // No transaction coordinator yet. librdkafka treats TRANSACTIONAL_ID_AUTHORIZATION_FAILED as
    // fatal at once (the application sees the error), where COORDINATOR_NOT_AVAILABLE would be
    // retried every 500 ms for as long as the client lives. The response has no message field:
    // the reason goes to the broker's log.
    std::fprintf(stderr,
                 "keel: kafka: InitProducerId from %s (%s) with transactional.id '%s' refused: "
                 "transactions are not supported\n",
                 rq.peer.c_str(), rq.client_id.c_str(), m.transactional_id->c_str());
    out.error_code = error_code::transactional_id_authorization_failed;
    return answer(rq, out);
  }
  const bool reinit = m.producer_id >= 0 || m.producer_epoch >= 0;  // v3+ (KIP-360)
  if (reinit) {
    if (m.producer_id < 0 || m.producer_epoch < 0) {
      out.error_code = error_code::invalid_request;
      return answer(rq, out);
    }
    if (m.producer_id >= broker_.controller_->state().next_producer_id()) {
      // Not handed out, as far as this broker's metadata knows; it may lag the controller (an
      // id just allocated through another broker), so it is asked again for a while first.
      constexpr int wait_step_ms = 50, wait_max_ms = 2000;
      if (waited_ms < wait_max_ms) {
        auto timer = std::make_shared<boost::asio::steady_timer>(
            broker_.shards_[0].runner->io(), std::chrono::milliseconds(wait_step_ms));
        timer->async_wait([this, rq, m, waited_ms, timer,
                           alive = alive_](const boost::system::error_code&) mutable {
          if (*alive) init_producer_id_after(rq, std::move(m), waited_ms + wait_step_ms);
        });
        return;
      }
      out.error_code = error_code::invalid_producer_id_mapping;  // never handed out
      return answer(rq, out);
    }
    // Non-transactional producers keep no coordinator state: the epoch is bumped as asked; the
    // partitions fence older epochs. At the end of the epochs, a new id.
    if (m.producer_epoch < INT16_MAX - 1) {
      out.producer_id = m.producer_id;
      out.producer_epoch = static_cast<int16_t>(m.producer_epoch + 1);
      return answer(rq, out);
    }
  }
  broker_.next_producer_id([this, rq, alive = alive_](int64_t id, const std::string& error) {
    if (!*alive) return;
    kafka::init_producer_id_response out;
    if (id < 0) {
      // Retriable: librdkafka asks again (any broker) after a backoff.
      (void)error;
      out.error_code = error_code::coordinator_not_available;
      out.producer_id = -1;
      out.producer_epoch = -1;
    } else {
      out.producer_id = id;
      out.producer_epoch = 0;
    }
    answer(rq, out);
  });
}

}  // namespace keel::server
