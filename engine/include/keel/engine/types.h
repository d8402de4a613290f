// Strong types for the engine's domain values, so an offset never crosses a call as a term.
#pragma once

#include <compare>
#include <cstdint>
#include <functional>
#include <limits>

namespace keel::engine {

// A tagged integer: comparable with its own kind, arithmetic only through explicit helpers.
template <class Tag, class Rep>
class tagged {
 public:
  using rep = Rep;
  constexpr tagged() = default;
  constexpr explicit tagged(Rep v) : value_(v) {}
  constexpr Rep value() const { return value_; }
  constexpr auto operator<=>(const tagged&) const = default;

 private:
  Rep value_{};
};

// Position of an entry in a log; the Raft index and the Kafka offset. Starts at 0.
struct offset_tag {};
struct offset : tagged<offset_tag, int64_t> {
  using tagged::tagged;
  constexpr offset next() const { return offset(value() + 1); }
  constexpr offset prev() const { return offset(value() - 1); }
  constexpr offset plus(int64_t n) const { return offset(value() + n); }
  static constexpr offset none() { return offset(-1); }  // "before the first offset"
};

// Raft term (served to Kafka clients as the partition leader epoch).
struct term_tag {};
struct term_id : tagged<term_tag, int64_t> {
  using tagged::tagged;
};

// Milliseconds since the Unix epoch, as Kafka timestamps are.
struct timestamp_tag {};
struct timestamp_ms : tagged<timestamp_tag, int64_t> {
  using tagged::tagged;
  static constexpr timestamp_ms none() { return timestamp_ms(-1); }
};

}  // namespace keel::engine

template <>
struct std::hash<keel::engine::offset> {
  size_t operator()(keel::engine::offset o) const noexcept {
    return std::hash<int64_t>()(o.value());
  }
};
