// Always-on invariant checks. A failed invariant is a programming error: it names the
// condition, the place and the values that matter, then aborts. Never compiled out.
#pragma once

#include <cstdio>
#include <cstdlib>

namespace keel::engine::detail {
[[noreturn]] inline void invariant_failed(const char* condition, const char* file, int line,
                                          const char* message) {
  std::fprintf(stderr, "keel: invariant failed: %s (%s) at %s:%d\n", condition, message, file,
               line);
  std::fflush(stderr);
  std::abort();
}
}  // namespace keel::engine::detail

// KEEL_ASSERT(condition, message): message is a string literal saying what broke.
#define KEEL_ASSERT(condition, message)                                                  \
  do {                                                                                   \
    if (!(condition)) [[unlikely]]                                                       \
      ::keel::engine::detail::invariant_failed(#condition, __FILE__, __LINE__, message); \
  } while (0)
