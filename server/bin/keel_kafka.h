// The keel tool's commands that speak the Kafka protocol through keel::net::kafka::client:
// produce, consume, topic describe, bench produce, bench consume.
#pragma once

#include "cli_flags.h"

namespace keel::cli {

int kafka_produce(const flags& f);
int kafka_consume(const flags& f);
int kafka_topic_describe(const flags& f);
int bench_produce(const flags& f);
int bench_consume(const flags& f);

}  // namespace keel::cli
