// keel-loopback-tcp: pushes bytes through one TCP connection over 127.0.0.1 from a sender
// process to a receiver process (1 MiB writes and reads) for a few seconds, and prints the
// receiver's throughput: `loopback_tcp_mb_per_s=<v> bytes=<n> seconds=<s>`. Usage:
//   keel-loopback-tcp [--seconds S]
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

int main(int argc, char** argv) {
  double seconds = 5;
  for (int i = 1; i + 1 < argc; i += 2)
    if (std::string(argv[i]) == "--seconds") seconds = std::atof(argv[i + 1]);
  const int listener = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  if (listener < 0 || ::bind(listener, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      ::listen(listener, 1) != 0 ||
      ::getsockname(listener, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    std::perror("keel-loopback-tcp: listen");
    return 1;
  }
  constexpr size_t chunk = 1 << 20;
  const pid_t sender = ::fork();
  if (sender == 0) {
    const int s = ::socket(AF_INET, SOCK_STREAM, 0);
    if (::connect(s, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) ::_exit(1);
    std::vector<char> buf(chunk, 'k');
    // Until the receiver closes (EPIPE) or the time is up.
    ::signal(SIGPIPE, SIG_IGN);
    const auto end = std::chrono::steady_clock::now() +
                     std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                         std::chrono::duration<double>(seconds + 5));
    while (std::chrono::steady_clock::now() < end)
      if (::write(s, buf.data(), buf.size()) <= 0) break;
    ::_exit(0);
  }
  const int c = ::accept(listener, nullptr, nullptr);
  if (c < 0) {
    std::perror("keel-loopback-tcp: accept");
    return 1;
  }
  std::vector<char> buf(chunk);
  uint64_t bytes = 0;
  const auto start = std::chrono::steady_clock::now();
  const auto end = start + std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                               std::chrono::duration<double>(seconds));
  auto now = start;
  while (now < end) {
    const ssize_t n = ::read(c, buf.data(), buf.size());
    if (n <= 0) break;
    bytes += static_cast<uint64_t>(n);
    now = std::chrono::steady_clock::now();
  }
  ::close(c);
  int status = 0;
  ::kill(sender, SIGTERM);
  ::waitpid(sender, &status, 0);
  const double elapsed = std::chrono::duration<double>(now - start).count();
  std::printf("loopback_tcp_mb_per_s=%.1f bytes=%llu seconds=%.2f\n", bytes / elapsed / 1e6,
              static_cast<unsigned long long>(bytes), elapsed);
  return bytes > 0 ? 0 : 1;
}
