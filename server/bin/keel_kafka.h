// The keel tool's commands that speak the Kafka protocol through keel::net::kafka::client:
// produce, consume, topic describe, group list|describe|delete|reset-offsets, bench produce,
// bench consume, bench commit.
#pragma once

#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>
#include <functional>

#include "cli_flags.h"
#include "keel/net/kafka/client.h"

namespace keel::cli {

// The client settings from --bootstrap (comma-separated Kafka addresses) and --connections.
net::kafka::client_config config_from(const flags& f);
// Runs one coroutine to completion on a fresh io_context and returns its exit code.
int run(std::function<boost::asio::awaitable<int>(boost::asio::io_context&)> body);

int kafka_produce(const flags& f);
int kafka_consume(const flags& f);
int kafka_topic_describe(const flags& f);
int bench_produce(const flags& f);
int bench_consume(const flags& f);
int bench_commit(const flags& f);

// keel_groups.cc
int group_list(const flags& f);
int group_describe(const flags& f);
int group_delete(const flags& f);
int group_reset_offsets(const flags& f);

}  // namespace keel::cli
