// Raft's vocabulary: strong types for offsets, terms, node and group ids; the always-on assertion;
// errors as values. raft/ links nothing of ours, so it carries its own small copies of these.
#pragma once

#include <compare>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>
#include <utility>
#include <variant>

namespace keel::raft {

namespace detail {
[[noreturn]] inline void invariant_failed(const char* condition, const char* file, int line,
                                          const char* message) {
  std::fprintf(stderr, "keel::raft: invariant failed: %s (%s) at %s:%d\n", condition, message, file,
               line);
  std::fflush(stderr);
  std::abort();
}
}  // namespace detail

}  // namespace keel::raft

// KEEL_RAFT_ASSERT(condition, message): always on, in every build. A failure is a programming
// error in raft/ or a host that broke a documented contract; both must stop the process.
#define KEEL_RAFT_ASSERT(condition, message)                                           \
  do {                                                                                 \
    if (!(condition)) [[unlikely]]                                                     \
      ::keel::raft::detail::invariant_failed(#condition, __FILE__, __LINE__, message); \
  } while (0)

namespace keel::raft {

// A tagged integer: ordered against its own kind only; arithmetic through named helpers.
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

// Raft index == Kafka offset: the position of one record in the partition log. The first offset
// of a fresh log is 0; offset(-1) means "before the log" and has term 0.
struct offset_tag {};
struct offset : tagged<offset_tag, int64_t> {
  using tagged::tagged;
  constexpr offset next() const { return offset(value() + 1); }
  constexpr offset prev() const { return offset(value() - 1); }
  constexpr offset plus(int64_t n) const { return offset(value() + n); }
  static constexpr offset none() { return offset(-1); }
};

// Raft term (served to Kafka clients as the partition leader epoch). Term 0 precedes every
// election; no entry is ever written in term 0.
struct term_tag {};
struct term_id : tagged<term_tag, int64_t> {
  using tagged::tagged;
  constexpr term_id next() const { return term_id(value() + 1); }
};

// A broker's identity within the cluster. 0 is "nobody" (no vote, no known leader).
struct node_tag {};
struct node_id : tagged<node_tag, uint64_t> {
  using tagged::tagged;
  static constexpr node_id none() { return node_id(0); }
  constexpr bool is_none() const { return value() == 0; }
};

// One Raft group per partition (and group 0 for cluster metadata).
struct group_tag {};
struct group_id : tagged<group_tag, uint64_t> {
  using tagged::tagged;
};

constexpr offset min(offset a, offset b) {
  return a < b ? a : b;
}
constexpr offset max(offset a, offset b) {
  return a < b ? b : a;
}

enum class errc {
  not_leader,          // the operation needs the leader; error::leader_hint may name it
  busy,                // a limit is reached (uncommitted bytes, a transfer or config in progress)
  invalid_argument,    // the caller broke the API's contract in a recoverable way
  compacted,           // the offset lies before the log start
  unavailable,         // the offset lies after the log end
  malformed,           // bytes failed to decode (codec)
  unsupported_version  // a codec version this build does not read
};

const char* to_string(errc code);

struct error {
  errc code{};
  std::string message;
  node_id leader_hint;  // for not_leader: the leader this node believes in, if any

  std::string describe() const;
};

inline error make_error(errc code, std::string message) {
  return error{code, std::move(message), {}};
}

template <class T>
class [[nodiscard]] result {
 public:
  result(T value) : state_(std::in_place_index<0>, std::move(value)) {}  // NOLINT
  result(error err) : state_(std::in_place_index<1>, std::move(err)) {}  // NOLINT

  bool ok() const { return state_.index() == 0; }
  explicit operator bool() const { return ok(); }

  T& value() & {
    KEEL_RAFT_ASSERT(ok(), "result::value() on an error");
    return std::get<0>(state_);
  }
  const T& value() const& {
    KEEL_RAFT_ASSERT(ok(), "result::value() on an error");
    return std::get<0>(state_);
  }
  T&& value() && {
    KEEL_RAFT_ASSERT(ok(), "result::value() on an error");
    return std::get<0>(std::move(state_));
  }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }

  const error& err() const& {
    KEEL_RAFT_ASSERT(!ok(), "result::err() on a value");
    return std::get<1>(state_);
  }

 private:
  std::variant<T, error> state_;
};

struct ok_t {};
using status = result<ok_t>;
inline status ok_status() {
  return ok_t{};
}

}  // namespace keel::raft

template <>
struct std::hash<keel::raft::node_id> {
  size_t operator()(keel::raft::node_id n) const noexcept {
    return std::hash<uint64_t>()(n.value());
  }
};
