// Errors as values for the hot path: result<T> holds either a T or an engine::error.
// (std::expected is C++23; this is the small subset Keel needs.)
#pragma once

#include <string>
#include <utility>
#include <variant>

#include "keel/engine/assert.h"

namespace keel::engine {

enum class errc {
  io_error,             // a system call failed; error::sys_errno says which errno
  no_space,             // ENOSPC or EDQUOT while writing or preallocating
  corrupt,              // bytes on disk failed validation (checksum, magic, offsets)
  offset_out_of_range,  // the offset lies outside [log start, next offset]
  invalid_argument,     // the caller broke the API's contract in a recoverable way
  log_failed,           // an earlier write or fsync failed; the log refuses appends
  closed,               // the log or ring was closed
  not_found,            // no such log, segment or entry
  already_exists,       // a log of that name exists
  busy,                 // staged bytes are at their bound; retry once completions ran
};

const char* to_string(errc code);

struct error {
  errc code{};
  int sys_errno = 0;    // the errno behind io_error / no_space, 0 otherwise
  std::string message;  // what failed, naming the file and offset where there is one

  std::string describe() const;
};

error make_error(errc code, std::string message);
error make_sys_error(int sys_errno, std::string message);  // no_space for ENOSPC/EDQUOT

template <class T>
class [[nodiscard]] result {
 public:
  result(T value) : state_(std::in_place_index<0>, std::move(value)) {}  // NOLINT
  result(error err) : state_(std::in_place_index<1>, std::move(err)) {}  // NOLINT

  bool ok() const { return state_.index() == 0; }
  explicit operator bool() const { return ok(); }

  T& value() & {
    KEEL_ASSERT(ok(), "result::value() on an error");
    return std::get<0>(state_);
  }
  const T& value() const& {
    KEEL_ASSERT(ok(), "result::value() on an error");
    return std::get<0>(state_);
  }
  T&& value() && {
    KEEL_ASSERT(ok(), "result::value() on an error");
    return std::get<0>(std::move(state_));
  }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }

  const error& err() const& {
    KEEL_ASSERT(!ok(), "result::err() on a value");
    return std::get<1>(state_);
  }
  error&& err() && {
    KEEL_ASSERT(!ok(), "result::err() on a value");
    return std::get<1>(std::move(state_));
  }

 private:
  std::variant<T, error> state_;
};

struct ok_t {};
// status: a result that carries no value.
using status = result<ok_t>;
inline status ok_status() {
  return ok_t{};
}

}  // namespace keel::engine
