// The keel tool's flag parsing and error exit, shared by its command files.
#pragma once

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>
#include <vector>

namespace keel::cli {

struct flags {
  std::vector<std::string> positional;
  std::map<std::string, std::string> named;
  bool has(const std::string& k) const { return named.count(k) > 0; }
  std::string get(const std::string& k, const std::string& d) const {
    auto it = named.find(k);
    return it == named.end() ? d : it->second;
  }
  long long get_int(const std::string& k, long long d) const {
    auto it = named.find(k);
    if (it == named.end()) return d;
    try {
      size_t used = 0;
      long long v = std::stoll(it->second, &used);
      if (used == it->second.size()) return v;
    } catch (...) {
    }
    std::fprintf(stderr, "keel: --%s: expected an integer, got '%s'\n", k.c_str(),
                 it->second.c_str());
    std::exit(2);
  }
};

inline flags parse(int argc, char** argv, int from) {
  static const std::vector<std::string> switches = {"detach", "json", "execute", "to-earliest",
                                                    "to-latest"};
  flags f;
  for (int i = from; i < argc; ++i) {
    std::string a = argv[i];
    if (a.rfind("--", 0) == 0) {
      std::string name = a.substr(2), value = "true";
      if (auto eq = name.find('='); eq != std::string::npos) {
        value = name.substr(eq + 1);
        name = name.substr(0, eq);
      } else if (std::find(switches.begin(), switches.end(), name) == switches.end()) {
        if (i + 1 >= argc) {
          std::fprintf(stderr, "keel: --%s needs a value\n", name.c_str());
          std::exit(2);
        }
        value = argv[++i];
      }
      f.named[name] = value;
    } else {
      f.positional.push_back(a);
    }
  }
  return f;
}

[[noreturn]] inline void die(const std::string& message, int code = 1) {
  std::fprintf(stderr, "keel: %s\n", message.c_str());
  std::exit(code);
}

}  // namespace keel::cli
