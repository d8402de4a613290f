// keel-broker: parses the configuration, runs the broker, stops it gracefully on SIGTERM/SIGINT.
#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include "keel/server/broker.h"

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  if (!args.empty() && (args[0] == "--help" || args[0] == "-h")) {
    std::fputs(keel::server::usage().c_str(), stdout);
    return 0;
  }
  std::string error;
  auto config = keel::server::parse_broker_args(args, error);
  if (!config) {
    std::fprintf(stderr, "keel-broker: %s\n%s", error.c_str(), keel::server::usage().c_str());
    return 2;
  }
  // Signals are taken by this thread alone (sigwait): block them before any thread starts.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  ::signal(SIGPIPE, SIG_IGN);
  const std::string pid_file = config->data_dir + "/broker.pid";
  try {
    keel::server::broker b(*config);
    b.start();
    std::ofstream(pid_file) << ::getpid() << "\n";
    int sig = 0;
    sigwait(&stop_signals, &sig);
    std::fprintf(stderr, "keel-broker: signal %d: stopping (leaderships move away first)\n", sig);
    b.stop();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "keel-broker: %s\n", e.what());
    return 1;
  }
  ::unlink(pid_file.c_str());
  std::fprintf(stderr, "keel-broker: stopped cleanly\n");
  return 0;
}
