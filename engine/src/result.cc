#include "keel/engine/result.h"

#include <cerrno>
#include <cstring>

namespace keel::engine {

const char* to_string(errc code) {
  switch (code) {
    case errc::io_error:
      return "io_error";
    case errc::no_space:
      return "no_space";
    case errc::corrupt:
      return "corrupt";
    case errc::offset_out_of_range:
      return "offset_out_of_range";
    case errc::invalid_argument:
      return "invalid_argument";
    case errc::log_failed:
      return "log_failed";
    case errc::closed:
      return "closed";
    case errc::not_found:
      return "not_found";
    case errc::already_exists:
      return "already_exists";
    case errc::busy:
      return "busy";
  }
  return "unknown";
}

std::string error::describe() const {
  std::string out = to_string(code);
  out += ": ";
  out += message;
  if (sys_errno != 0) {
    out += " (";
    out += std::strerror(sys_errno);
    out += ")";
  }
  return out;
}

error make_error(errc code, std::string message) {
  return error{code, 0, std::move(message)};
}

error make_sys_error(int sys_errno, std::string message) {
  const errc code = (sys_errno == ENOSPC || sys_errno == EDQUOT) ? errc::no_space : errc::io_error;
  return error{code, sys_errno, std::move(message)};
}

}  // namespace keel::engine
