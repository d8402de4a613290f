#include "keel/server/liveness.h"

#include "keel/engine/assert.h"
#include "keel/net/wire.h"

namespace keel::server {

std::vector<std::byte> encode_broker_heartbeat(const broker_heartbeat& h) {
  std::vector<std::byte> out;
  net::wire_writer w(out);
  w.put<int32_t>(h.broker);
  w.put<uint8_t>(h.shutting_down ? 1 : 0);
  return out;
}

std::optional<broker_heartbeat> decode_broker_heartbeat(std::span<const std::byte> body,
                                                        int32_t peer, std::string& error) {
  net::wire_reader r(body);
  broker_heartbeat h;
  h.broker = r.get<int32_t>();
  const uint8_t shutting_down = r.get<uint8_t>();
  if (!r.ok() || !r.at_end() || shutting_down > 1) {
    error = "malformed heartbeat";
    return std::nullopt;
  }
  if (h.broker != peer) {
    error = "heartbeat for broker " + std::to_string(h.broker) + " arrived from broker " +
            std::to_string(peer) + ": a broker heartbeats only for itself";
    return std::nullopt;
  }
  h.shutting_down = shutting_down != 0;
  return h;
}

broker_liveness::broker_liveness(std::chrono::milliseconds session_timeout)
    : session_timeout_(session_timeout) {
  KEEL_ASSERT(session_timeout.count() > 0, "a session timeout must be positive");
}

void broker_liveness::elected(clock::time_point now) {
  // Heartbeats of an earlier term say nothing about now, and proposals of that term are either
  // in the log already or lost; either way the new term decides afresh.
  last_heartbeat_.clear();
  shutting_down_.clear();
  in_flight_.clear();
  grace_end_ = now + session_timeout_;
}

bool broker_liveness::in_flight(int32_t broker, clock::time_point now) const {
  auto it = in_flight_.find(broker);
  return it != in_flight_.end() && now - it->second < session_timeout_;
}

void broker_liveness::start(int32_t broker, clock::time_point now) {
  in_flight_[broker] = now;
}

void broker_liveness::done(int32_t broker) {
  in_flight_.erase(broker);
}

bool broker_liveness::heartbeat(const metadata_state& state, int32_t broker, bool shutting_down,
                                clock::time_point now) {
  auto& last = last_heartbeat_[broker];
  if (now > last) last = now;
  shutting_down_[broker] = shutting_down;
  if (shutting_down) return false;
  auto it = state.brokers().find(broker);
  if (it == state.brokers().end() || !it->second.fenced || in_flight(broker, now)) return false;
  start(broker, now);
  return true;
}

std::vector<int32_t> broker_liveness::to_fence(const metadata_state& state, int32_t self,
                                               clock::time_point now) {
  std::vector<int32_t> out;
  for (const auto& [id, b] : state.brokers()) {
    if (b.fenced || in_flight(id, now)) continue;
    const auto sd = shutting_down_.find(id);
    const bool leaving = sd != shutting_down_.end() && sd->second;
    // The leader's own broker runs the controller: alive unless it is shutting down.
    if (id == self && !leaving) continue;
    bool silent = false;
    if (id != self && now >= grace_end_) {
      // A broker never heard in this term has had the grace since the election, which is over.
      const auto h = last_heartbeat_.find(id);
      silent = h == last_heartbeat_.end() || now - h->second >= session_timeout_;
    }
    if (!leaving && !silent) continue;
    start(id, now);
    out.push_back(id);
  }
  return out;
}

}  // namespace keel::server
