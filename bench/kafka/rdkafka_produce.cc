// keel-rdkafka-produce: librdkafka's producer driven the way `keel bench produce` drives ours
// (fixed-size records spread round-robin over every partition, acks as given, batches of about
// --batch-records records), so our client is not the only judge of the broker. Usage:
//   keel-rdkafka-produce --bootstrap H:P[,..] --topic T --partitions N [--record-bytes 1024]
//                        [--batch-records 64] [--in-flight 4] [--seconds 10] [--acks -1]
// Prints `rdkafka_produce records_per_s=<v> mb_per_s=<v> p50_ms=<v> p99_ms=<v> p999_ms=<v>
// records=<n> errors=<n>`. Latency is from enqueue to delivery report.
#include <librdkafka/rdkafka.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "keel/server/latency_histogram.h"

namespace {

using clock_type = std::chrono::steady_clock;

struct totals {
  keel::server::latency_histogram latency;
  uint64_t delivered = 0;
  uint64_t errors = 0;
  std::string first_error;
  clock_type::time_point last_delivery;
};

int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(clock_type::now().time_since_epoch())
      .count();
}

void on_delivery(rd_kafka_t*, const rd_kafka_message_t* m, void* opaque) {
  auto& t = *static_cast<totals*>(opaque);
  if (m->err) {
    if (t.errors++ == 0) t.first_error = rd_kafka_err2str(m->err);
    return;
  }
  const auto sent = reinterpret_cast<intptr_t>(m->_private);
  t.latency.record(static_cast<uint64_t>(now_ns() - sent));
  ++t.delivered;
  t.last_delivery = clock_type::now();
}

bool set(rd_kafka_conf_t* conf, const char* key, const std::string& value) {
  char err[512];
  if (rd_kafka_conf_set(conf, key, value.c_str(), err, sizeof err) != RD_KAFKA_CONF_OK) {
    std::fprintf(stderr, "keel-rdkafka-produce: %s=%s: %s\n", key, value.c_str(), err);
    return false;
  }
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  std::string bootstrap = "127.0.0.1:9092", topic = "bench", acks = "-1";
  int partitions = 1, record_bytes = 1024, batch_records = 64, in_flight = 4;
  double seconds = 10;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string k = argv[i], v = argv[i + 1];
    if (k == "--bootstrap")
      bootstrap = v;
    else if (k == "--topic")
      topic = v;
    else if (k == "--partitions")
      partitions = std::atoi(v.c_str());
    else if (k == "--record-bytes")
      record_bytes = std::atoi(v.c_str());
    else if (k == "--batch-records")
      batch_records = std::atoi(v.c_str());
    else if (k == "--seconds")
      seconds = std::atof(v.c_str());
    else if (k == "--in-flight")
      in_flight = std::atoi(v.c_str());
    else if (k == "--acks")
      acks = v;
    else {
      std::fprintf(stderr, "keel-rdkafka-produce: unknown flag %s\n", k.c_str());
      return 2;
    }
  }
  totals t;
  rd_kafka_conf_t* conf = rd_kafka_conf_new();
  const std::string batch_bytes = std::to_string(batch_records * (record_bytes + 16) + 61);
  if (!set(conf, "bootstrap.servers", bootstrap) || !set(conf, "acks", acks) ||
      !set(conf, "linger.ms", "5") || !set(conf, "batch.size", batch_bytes) ||
      !set(conf, "batch.num.messages", std::to_string(batch_records)) ||
      !set(conf, "compression.type", "none") || !set(conf, "enable.idempotence", "false") ||
      // Bound the local queue like `keel bench produce` bounds its requests in flight, so the
      // latency is the broker's and not a queue's the driver filled itself.
      !set(conf, "queue.buffering.max.messages",
           std::to_string(partitions * in_flight * batch_records)) ||
      !set(conf, "queue.buffering.max.kbytes", "1048576") ||
      !set(conf, "max.in.flight.requests.per.connection", "5"))
    return 2;
  rd_kafka_conf_set_dr_msg_cb(conf, on_delivery);
  rd_kafka_conf_set_opaque(conf, &t);
  char err[512];
  rd_kafka_t* rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof err);
  if (!rk) {
    std::fprintf(stderr, "keel-rdkafka-produce: %s\n", err);
    return 1;
  }
  std::vector<char> value(static_cast<size_t>(record_bytes));
  for (size_t i = 0; i < value.size(); ++i)
    value[i] = static_cast<char>('a' + i % 26);
  const auto start = clock_type::now();
  const auto end = start + std::chrono::duration_cast<clock_type::duration>(
                               std::chrono::duration<double>(seconds));
  uint64_t produced = 0;
  while (clock_type::now() < end) {
    const int32_t partition = static_cast<int32_t>(
        (produced / static_cast<uint64_t>(batch_records)) % static_cast<uint64_t>(partitions));
    const rd_kafka_resp_err_t e = rd_kafka_producev(
        rk, RD_KAFKA_V_TOPIC(topic.c_str()), RD_KAFKA_V_PARTITION(partition),
        RD_KAFKA_V_VALUE(value.data(), value.size()), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
        RD_KAFKA_V_OPAQUE(reinterpret_cast<void*>(static_cast<intptr_t>(now_ns()))),
        RD_KAFKA_V_END);
    if (e == RD_KAFKA_RESP_ERR__QUEUE_FULL) {
      rd_kafka_poll(rk, 1);
      continue;
    }
    if (e) {
      std::fprintf(stderr, "keel-rdkafka-produce: %s\n", rd_kafka_err2str(e));
      break;
    }
    ++produced;
    rd_kafka_poll(rk, 0);
  }
  rd_kafka_flush(rk, 30000);
  const double elapsed = std::chrono::duration<double>(t.last_delivery - start).count();
  const double rps = elapsed > 0 ? static_cast<double>(t.delivered) / elapsed : 0;
  if (t.errors)
    std::fprintf(stderr, "keel-rdkafka-produce: %llu delivery errors, first: %s\n",
                 static_cast<unsigned long long>(t.errors), t.first_error.c_str());
  std::printf(
      "rdkafka_produce records_per_s=%.0f mb_per_s=%.2f p50_ms=%.2f p99_ms=%.2f p999_ms=%.2f "
      "records=%llu errors=%llu\n",
      rps, rps * record_bytes / 1e6, t.latency.percentile(50) / 1e6, t.latency.percentile(99) / 1e6,
      t.latency.percentile(99.9) / 1e6, static_cast<unsigned long long>(t.delivered),
      static_cast<unsigned long long>(t.errors));
  rd_kafka_destroy(rk);
  return t.delivered > 0 ? 0 : 1;
}
