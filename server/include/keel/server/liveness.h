// broker_liveness: the controller leader's view of broker heartbeats, which decides when a broker
// is fenced or unfenced in the replicated metadata (KIP-631's broker heartbeats and fencing).
//
// Every broker sends a heartbeat to the controller leader every broker-heartbeat-interval-ms.
// Heartbeats are leader-local: they are never logged, and a new leader starts without any. The
// leader proposes fence_broker for a registered, unfenced broker that has been silent for a whole
// session timeout, and unfence_broker when a registered, fenced broker heartbeats (unless the
// heartbeat says the broker is shutting down: a controlled shutdown fences it at once).
//
// Rules and why:
// - A newly elected leader has no heartbeat history, so it gives every broker a full session
//   timeout from its election before fencing anyone; a broker that was alive all along heartbeats
//   to it well within that grace.
// - The leader's own broker is never fenced for silence while it leads: it runs the controller,
//   so it is alive by definition (its own heartbeats take the local path and unfence it if an
//   earlier leader had fenced it). It is fenced only when it announces its own shutdown.
// - Unfencing is driven by heartbeat arrivals, not by scanning: a heartbeat that reached the
//   leader before a fence committed must not undo the fence of a broker that then went silent.
// - At most one fencing proposal per broker is in flight; the broker (composition root) proposes
//   and reports back with done(); a proposal that gets no answer is forgotten after a session
//   timeout, so a lost reply never blocks liveness for good.
//
// Pure: no clock, no I/O; the caller passes the time. Lives on shard 0 next to the controller.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "keel/server/metadata.h"

namespace keel::server {

// A broker heartbeat (controller request kind 5): i32 broker id, u8 shutting down (0 or 1).
struct broker_heartbeat {
  int32_t broker = 0;
  bool shutting_down = false;
};
std::vector<std::byte> encode_broker_heartbeat(const broker_heartbeat& h);
// Decodes a heartbeat that arrived from broker `peer`: the id the inter-broker link's connection
// said hello with, or this broker's own id for its local heartbeats. nullopt with `error` set
// when the body is malformed or claims another broker's id (a broker heartbeats only for itself:
// a heartbeat naming broker B over A's link must not keep B unfenced).
std::optional<broker_heartbeat> decode_broker_heartbeat(std::span<const std::byte> body,
                                                        int32_t peer, std::string& error);

class broker_liveness {
 public:
  using clock = std::chrono::steady_clock;

  explicit broker_liveness(std::chrono::milliseconds session_timeout);

  // This broker became the controller leader at `now` (a new term): heartbeats seen in an earlier
  // term are forgotten and every broker gets a session timeout of grace.
  void elected(clock::time_point now);

  // A heartbeat from `broker` reached this leader. Returns true when the leader should propose
  // unfence_broker now (registered, fenced, not shutting down, nothing in flight); the caller
  // then proposes and calls done(). A shutting-down broker's heartbeat returns false and is
  // counted by shutting_down(), which the caller fences.
  bool heartbeat(const metadata_state& state, int32_t broker, bool shutting_down,
                 clock::time_point now);

  // Brokers to fence now: registered, unfenced, not `self`, no proposal in flight, silent for a
  // session timeout, and the grace after the election over; plus brokers (`self` too) that
  // announced a controlled shutdown and are not fenced yet. Each returned broker counts as in
  // flight until done().
  std::vector<int32_t> to_fence(const metadata_state& state, int32_t self, clock::time_point now);

  // The fencing proposal for `broker` finished (committed or not).
  void done(int32_t broker);

  std::chrono::milliseconds session_timeout() const { return session_timeout_; }

 private:
  bool in_flight(int32_t broker, clock::time_point now) const;
  void start(int32_t broker, clock::time_point now);

  std::chrono::milliseconds session_timeout_;
  // Fencing of anyone waits until then (the election plus a session timeout).
  clock::time_point grace_end_{};
  std::map<int32_t, clock::time_point> last_heartbeat_;
  std::map<int32_t, bool> shutting_down_;
  // broker -> when its fencing proposal went out.
  std::map<int32_t, clock::time_point> in_flight_;
};

}  // namespace keel::server
