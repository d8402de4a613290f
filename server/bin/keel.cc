// keel: the command-line tool. `keel cluster up|down|status`, `keel topic create|delete|list`
// (the admin protocol, RPC port), `keel topic describe`, `keel produce`, `keel consume` and
// `keel bench produce|consume` (the Kafka protocol, keel_kafka.cc). Run `keel help` for the flags.
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "cli_flags.h"
#include "keel/net/admin_client.h"
#include "keel/server/config.h"
#include "keel_kafka.h"

namespace fs = std::filesystem;
using namespace keel;

namespace {

using cli::die;
using cli::flags;
using cli::parse;

const char* help_text = R"(usage: keel <command> [flags]
  cluster up     [--brokers N] [--data-dir DIR] [--kafka-port P] [--rpc-port P] [--shards N]
                 [--flush POLICY] [--broker-config FILE] [--detach]
                 start a local cluster (3 brokers, Kafka ports 9092.., RPC ports 19092.., data
                 under ./data); stays in the foreground until Ctrl-C unless --detach;
                 --shards: per broker (default: a new broker gets the cores divided among the
                 brokers, at least 1; an existing one keeps its count);
                 --broker-config: a keel-broker config file (name = value) for every broker
  cluster down   [--data-dir DIR]             stop a detached cluster gracefully
  cluster status [--bootstrap HOST:PORT] [--json]
  topic create NAME [--partitions N] [--replication-factor N] [--bootstrap HOST:PORT]
  topic delete NAME [--bootstrap HOST:PORT]
  topic list     [--bootstrap HOST:PORT] [--json]
  topic describe NAME [--bootstrap KAFKA_HOST:PORT] [--json]
                 partitions, leader, replicas and ISR (Kafka Metadata)
  produce TOPIC [--partition N] [--key-separator SEP] [--acks -1|0|1] [--bootstrap HOST:PORT,..]
                 one record per line of standard input; with a separator, the part of the line
                 before it is the record's key
  consume TOPIC [--partition N] [--from earliest|latest|OFFSET] [--count N]
                 [--key-separator SEP] [--bootstrap HOST:PORT,..]
                 prints one value per line (key SEP value with a separator); without --count,
                 stops once caught up with the high watermark
  group list     [--bootstrap HOST:PORT,..] [--json]
                 every consumer group (ListGroups on every broker): state, protocol type,
                 coordinator
  group describe GROUP [--bootstrap HOST:PORT,..] [--json]
                 state, protocol, members (client id, host, assigned partitions), committed
                 offsets and lag (high watermark - committed) per partition
  group delete GROUP [--bootstrap HOST:PORT,..]
                 deletes an inactive group and its committed offsets
  group reset-offsets GROUP --topic T (--to-earliest | --to-latest | --to-offset N |
                 --to-timestamp MS) [--execute] [--bootstrap HOST:PORT,..]
                 prints the new offset of every partition of T; commits them only with
                 --execute, and only while the group has no active members
  bench produce --topic T [--bootstrap HOST:PORT,..] [--partitions N [--replication-factor N]]
                 [--record-bytes 1024] [--batch-records 64] [--records M | --seconds 10]
                 [--acks -1] [--in-flight 4] [--connections 1] [--rate RECORDS_PER_S] [--json]
                 produces batches to every partition (--partitions creates the topic), with
                 --in-flight requests outstanding per partition and --connections connections
                 per broker; prints records/s, MB/s and latency p50/p99/p99.9 every second and
                 at the end. With --rate, latency counts from each batch's intended send time.
  bench consume --topic T [--bootstrap HOST:PORT,..] [--max-bytes 4194304] [--records M] [--json]
                 fetches every partition from its start to its end as of now
  bench commit  --topic T [--group G] [--concurrency 64] [--commits M | --seconds 10] [--json]
                 simple OffsetCommits (one partition each) to one group, so one coordinator;
                 commits/s and latency p50/p99/p99.9
Addresses: cluster status and topic create/delete/list speak the admin protocol to a broker's
RPC address (default 127.0.0.1:19092); topic describe, produce, consume, group and bench speak the
Kafka protocol to a comma-separated list of Kafka addresses (default 127.0.0.1:9092).
)";

std::unique_ptr<net::admin_client> connect_to(const flags& f) {
  auto hp = server::parse_host_port(f.get("bootstrap", "127.0.0.1:19092"));
  if (!hp) die("--bootstrap: expected host:port", 2);
  auto c = std::make_unique<net::admin_client>();
  if (!c->connect(hp->host, hp->port)) die(c->error());
  return c;
}

std::string json_escape(const std::string& s) {
  std::string out;
  for (char ch : s) {
    if (ch == '"' || ch == '\\') out += '\\';
    out += ch;
  }
  return out;
}

void print_cluster(const net::describe_cluster_response& d, bool json) {
  std::map<int32_t, int> leads;  // partitions led, per broker
  for (const auto& t : d.topics)
    for (const auto& p : t.partitions)
      if (p.leader >= 0) ++leads[p.leader];
  if (json) {
    std::printf("{\"controller\": %d, \"brokers\": [", d.controller);
    for (size_t i = 0; i < d.brokers.size(); ++i) {
      const auto& b = d.brokers[i];
      std::printf(
          "%s{\"id\": %d, \"kafka\": \"%s:%u\", \"rpc\": \"%s:%u\", \"alive\": %s, "
          "\"fenced\": %s, \"leaders\": %d}",
          i ? ", " : "", b.id, json_escape(b.kafka_host).c_str(), b.kafka_port,
          json_escape(b.rpc_host).c_str(), b.rpc_port, b.alive ? "true" : "false",
          b.alive ? "false" : "true", leads[b.id]);
    }
    std::printf("], \"topics\": [");
    for (size_t i = 0; i < d.topics.size(); ++i) {
      const auto& t = d.topics[i];
      std::printf("%s{\"name\": \"%s\", \"partitions\": [", i ? ", " : "",
                  json_escape(t.name).c_str());
      for (size_t j = 0; j < t.partitions.size(); ++j) {
        const auto& p = t.partitions[j];
        std::printf(
            "%s{\"partition\": %d, \"group\": %llu, \"leader\": %d, \"leader_epoch\": %lld, "
            "\"high_watermark\": %lld, \"replicas\": [",
            j ? ", " : "", p.partition, static_cast<unsigned long long>(p.group), p.leader,
            static_cast<long long>(p.leader_term), static_cast<long long>(p.high_watermark));
        for (size_t k = 0; k < p.replicas.size(); ++k)
          std::printf("%s%d", k ? ", " : "", p.replicas[k]);
        std::printf("]}");
      }
      std::printf("]}");
    }
    std::printf("]}\n");
    return;
  }
  std::printf("controller: %s\n",
              d.controller >= 0 ? std::to_string(d.controller).c_str() : "none elected");
  for (const auto& b : d.brokers)
    std::printf("broker %d  kafka %s:%u  rpc %s:%u  %s  leads %d partitions\n", b.id,
                b.kafka_host.c_str(), b.kafka_port, b.rpc_host.c_str(), b.rpc_port,
                b.alive ? "alive" : "fenced", leads[b.id]);
  for (const auto& t : d.topics) {
    std::printf("topic %s\n", t.name.c_str());
    for (const auto& p : t.partitions) {
      std::string reps;
      for (int32_t r : p.replicas)
        reps += (reps.empty() ? "" : ",") + std::to_string(r);
      std::printf("  partition %d  leader %d  epoch %lld  high watermark %lld  replicas %s\n",
                  p.partition, p.leader, static_cast<long long>(p.leader_term),
                  static_cast<long long>(p.high_watermark), reps.c_str());
    }
  }
}

// ---------------------------------------------------------------------------------------------
// cluster

struct local_broker {
  int id;
  fs::path dir;
  uint16_t kafka_port;
  uint16_t rpc_port;
};

pid_t running_pid(const fs::path& dir) {
  std::ifstream in(dir / "broker.pid");
  pid_t pid = 0;
  if (!(in >> pid) || pid <= 0) return 0;
  if (::kill(pid, 0) != 0) return 0;
  // A recycled pid is not our broker: it must be a keel-broker whose cwd-independent cmdline
  // names this data dir.
  std::ifstream cmd("/proc/" + std::to_string(pid) + "/cmdline");
  std::string all((std::istreambuf_iterator<char>(cmd)), std::istreambuf_iterator<char>());
  if (all.find("keel-broker") == std::string::npos) return 0;
  return pid;
}

fs::path broker_binary() {
  std::error_code ec;
  const fs::path self = fs::read_symlink("/proc/self/exe", ec);
  const fs::path beside = self.parent_path() / "keel-broker";
  if (!ec && fs::exists(beside)) return beside;
  return "keel-broker";
}

// Whether a keel-broker config file sets `name` (its lines are `name = value`).
bool config_file_sets(const std::string& path, const std::string& name) {
  std::ifstream in(path);
  for (std::string line; std::getline(in, line);) {
    const auto eq = line.find('=');
    if (eq == std::string::npos) continue;
    std::string key = line.substr(0, eq);
    key.erase(0, key.find_first_not_of(" \t"));
    key.erase(key.find_last_not_of(" \t") + 1);
    if (key == name) return true;
  }
  return false;
}

// The shards of a new broker of a local cluster: the machine's cores split among its brokers
// (each broker alone would take one per core, and N brokers on one machine would each run a
// thread per core, contending for them). A broker whose data dir exists keeps its own count
// (settle_shards), so a cluster comes back as it was made.
std::optional<unsigned> local_shards(const local_broker& b, size_t brokers, const flags& f) {
  if (f.has("shards")) return std::nullopt;  // passed on as given
  if (f.has("broker-config") && config_file_sets(f.get("broker-config", ""), "shards"))
    return std::nullopt;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(b.dir, ec))
    if (e.path().filename().string().rfind("shard-", 0) == 0) return std::nullopt;
  const unsigned cores = std::max(1u, std::thread::hardware_concurrency());
  return std::max<unsigned>(1, cores / static_cast<unsigned>(std::max<size_t>(1, brokers)));
}

pid_t spawn_broker(const local_broker& b, size_t brokers, const std::string& seeds,
                   const flags& f) {
  const auto shards = local_shards(b, brokers, f);
  fs::create_directories(b.dir);
  std::vector<std::string> args = {broker_binary().string(),
                                   "--node-id",
                                   std::to_string(b.id),
                                   "--data-dir",
                                   fs::absolute(b.dir).string(),
                                   "--kafka-listen",
                                   "127.0.0.1:" + std::to_string(b.kafka_port),
                                   "--rpc-listen",
                                   "127.0.0.1:" + std::to_string(b.rpc_port),
                                   "--seeds",
                                   seeds};
  if (f.has("shards")) args.insert(args.end(), {"--shards", f.get("shards", "")});
  if (shards) args.insert(args.end(), {"--shards", std::to_string(*shards)});
  if (f.has("flush")) args.insert(args.end(), {"--flush", f.get("flush", "")});
  if (f.has("broker-config"))
    args.insert(args.end(), {"--config", fs::absolute(f.get("broker-config", "")).string()});
  const pid_t pid = ::fork();
  if (pid < 0) die("fork failed");
  if (pid == 0) {
    ::setsid();  // Ctrl-C reaches the tool, which stops the brokers in order
    const int log =
        ::open((b.dir / "broker.log").c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (log >= 0) {
      ::dup2(log, 1);
      ::dup2(log, 2);
    }
    const int null = ::open("/dev/null", O_RDONLY);
    if (null >= 0) ::dup2(null, 0);
    std::vector<char*> argv;
    for (auto& a : args)
      argv.push_back(a.data());
    argv.push_back(nullptr);
    ::execv(argv[0], argv.data());
    ::execvp(argv[0], argv.data());
    std::fprintf(stderr, "keel: cannot run %s\n", argv[0]);
    ::_exit(127);
  }
  return pid;
}

bool cluster_ready(const std::vector<local_broker>& brokers, std::string& why) {
  for (const auto& b : brokers) {
    net::admin_client c;
    if (!c.connect("127.0.0.1", b.rpc_port, std::chrono::milliseconds(300))) {
      why = "broker " + std::to_string(b.id) + " is not listening yet";
      return false;
    }
    c.set_timeout(std::chrono::milliseconds(1000));
    auto d = c.describe_cluster();
    if (!d) {
      why = "broker " + std::to_string(b.id) + ": " + c.error();
      return false;
    }
    if (d->controller < 0) {
      why = "no controller elected yet";
      return false;
    }
    size_t alive = 0;
    for (const auto& x : d->brokers)
      alive += x.alive;
    if (alive < brokers.size()) {
      why = std::to_string(alive) + " of " + std::to_string(brokers.size()) +
            " brokers registered and unfenced";
      return false;
    }
  }
  return true;
}

void stop_pids(const std::vector<std::pair<int, pid_t>>& pids) {
  for (auto& [id, pid] : pids)
    ::kill(pid, SIGTERM);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  for (auto& [id, pid] : pids) {
    while (::kill(pid, 0) == 0) {
      int status;
      ::waitpid(pid, &status, WNOHANG);
      if (std::chrono::steady_clock::now() > deadline) {
        std::fprintf(stderr, "keel: broker %d did not stop in 30 s: killed\n", id);
        ::kill(pid, SIGKILL);
        ::waitpid(pid, &status, 0);
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    std::printf("broker %d stopped\n", id);
  }
}

std::vector<local_broker> layout(const flags& f) {
  const int n = static_cast<int>(f.get_int("brokers", 3));
  if (n < 1 || n > 100) die("--brokers: expected 1 to 100", 2);
  const int kafka = static_cast<int>(f.get_int("kafka-port", 9092));
  const int rpc = static_cast<int>(f.get_int("rpc-port", 19092));
  const fs::path data = f.get("data-dir", "./data");
  std::vector<local_broker> out;
  for (int i = 1; i <= n; ++i)
    out.push_back({i, data / ("broker-" + std::to_string(i)), static_cast<uint16_t>(kafka + i - 1),
                   static_cast<uint16_t>(rpc + i - 1)});
  return out;
}

int cluster_up(const flags& f) {
  auto brokers = layout(f);
  std::string seeds;
  for (size_t i = 0; i < brokers.size() && i < 3; ++i)
    seeds += (i ? "," : "") + std::to_string(brokers[i].id) +
             "@127.0.0.1:" + std::to_string(brokers[i].rpc_port);
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  std::vector<std::pair<int, pid_t>> pids;
  for (const auto& b : brokers) {
    if (pid_t running = running_pid(b.dir)) {
      std::printf("broker %d already running (pid %d)\n", b.id, running);
      pids.emplace_back(b.id, running);
      continue;
    }
    pids.emplace_back(b.id, spawn_broker(b, brokers.size(), seeds, f));
    std::printf("broker %d starting (pid %d, log %s)\n", b.id, pids.back().second,
                (b.dir / "broker.log").c_str());
  }
  std::fflush(stdout);
  std::string why;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (!cluster_ready(brokers, why)) {
    for (auto& [id, pid] : pids) {
      int status;
      if (::waitpid(pid, &status, WNOHANG) == pid) {
        std::fprintf(stderr, "keel: broker %d exited during start-up; see %s\n", id,
                     (brokers[static_cast<size_t>(id - 1)].dir / "broker.log").c_str());
        stop_pids(pids);
        return 1;
      }
    }
    if (std::chrono::steady_clock::now() > deadline) {
      std::fprintf(stderr, "keel: the cluster is not ready after 60 s: %s\n", why.c_str());
      return 1;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  std::string bootstrap, rpc;
  for (const auto& b : brokers) {
    bootstrap +=
        (bootstrap.empty() ? "" : ",") + std::string("127.0.0.1:") + std::to_string(b.kafka_port);
    rpc += (rpc.empty() ? "" : ",") + std::string("127.0.0.1:") + std::to_string(b.rpc_port);
  }
  std::printf("\nKeel cluster ready: %zu brokers\n", brokers.size());
  std::printf("  bootstrap servers: %s\n", bootstrap.c_str());
  std::printf("  rpc (keel tool):   %s\n", rpc.c_str());
  std::printf("\nTry:\n  keel topic create demo --partitions 6 --replication-factor %d\n",
              static_cast<int>(std::min<size_t>(3, brokers.size())));
  std::printf(
      "  echo hello | keel produce demo --partition 0\n  keel consume demo --partition 0\n");
  std::printf("\nAny Kafka client works against the bootstrap servers, e.g. kcat:\n");
  std::printf("  kcat -b %s -L\n", bootstrap.c_str());
  std::printf("  seq 1 10 | kcat -b %s -P -t demo\n", bootstrap.c_str());
  std::printf("  kcat -b %s -C -t demo -o beginning -e\n", bootstrap.c_str());
  if (f.has("detach")) {
    std::printf("\ndetached; stop it with: keel cluster down --data-dir %s\n",
                f.get("data-dir", "./data").c_str());
    return 0;
  }
  std::printf("\nCtrl-C stops the cluster.\n");
  std::fflush(stdout);
  int sig = 0;
  sigwait(&stop_signals, &sig);
  std::printf("stopping...\n");
  stop_pids(pids);
  return 0;
}

int cluster_down(const flags& f) {
  const fs::path data = f.get("data-dir", "./data");
  std::vector<std::pair<int, pid_t>> pids;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(data, ec)) {
    const std::string name = e.path().filename().string();
    if (name.rfind("broker-", 0) != 0) continue;
    if (pid_t pid = running_pid(e.path())) pids.emplace_back(std::atoi(name.c_str() + 7), pid);
  }
  if (pids.empty()) {
    std::printf("no running brokers under %s\n", data.c_str());
    return 0;
  }
  stop_pids(pids);
  return 0;
}

// ---------------------------------------------------------------------------------------------

int topic(const flags& f) {
  if (f.positional.size() < 2) die("topic: expected create, delete or list", 2);
  const std::string& verb = f.positional[1];
  auto client = connect_to(f);
  auto& c = *client;
  if (verb == "list") {
    auto d = c.describe_cluster();
    if (!d) die(c.error());
    print_cluster(*d, f.has("json"));
    return 0;
  }
  if (f.positional.size() < 3) die("topic " + verb + ": expected a topic name", 2);
  const std::string name = f.positional[2];
  std::optional<net::topic_response> r;
  // The controller may be moving (an election): retry a few times on not_controller.
  for (int attempt = 0; attempt < 20; ++attempt) {
    r = verb == "create"   ? c.create_topic(name, static_cast<int32_t>(f.get_int("partitions", 1)),
                                            static_cast<int16_t>(f.get_int("replication-factor", 3)))
        : verb == "delete" ? c.delete_topic(name)
                           : (die("topic: unknown verb " + verb, 2), std::nullopt);
    if (!r) die(c.error());
    if (r->error != net::admin_error::not_controller && r->error != net::admin_error::timed_out)
      break;
    std::this_thread::sleep_for(std::chrono::milliseconds(250));
  }
  if (r->error != net::admin_error::none)
    die(std::string(net::to_string(r->error)) + ": " + r->message);
  std::printf("%s topic %s\n", verb == "create" ? "created" : "deleted", name.c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  ::signal(SIGPIPE, SIG_IGN);
  if (argc < 2 || std::string(argv[1]) == "help" || std::string(argv[1]) == "--help") {
    std::fputs(help_text, stdout);
    return argc < 2 ? 2 : 0;
  }
  const flags f = parse(argc, argv, 1);
  const std::string cmd = f.positional.empty() ? "" : f.positional[0];
  if (cmd == "cluster") {
    const std::string verb = f.positional.size() > 1 ? f.positional[1] : "";
    if (verb == "up") return cluster_up(f);
    if (verb == "down") return cluster_down(f);
    if (verb == "status") {
      auto client = connect_to(f);
      auto& c = *client;
      auto d = c.describe_cluster();
      if (!d) die(c.error());
      print_cluster(*d, f.has("json"));
      return 0;
    }
    die("cluster: expected up, down or status", 2);
  }
  if (cmd == "topic") {
    if (f.positional.size() > 1 && f.positional[1] == "describe")
      return cli::kafka_topic_describe(f);
    return topic(f);
  }
  if (cmd == "produce") return cli::kafka_produce(f);
  if (cmd == "consume") return cli::kafka_consume(f);
  if (cmd == "bench") {
    const std::string verb = f.positional.size() > 1 ? f.positional[1] : "";
    if (verb == "produce") return cli::bench_produce(f);
    if (verb == "consume") return cli::bench_consume(f);
    if (verb == "commit") return cli::bench_commit(f);
    die("bench: expected produce, consume or commit", 2);
  }
  if (cmd == "group") {
    const std::string verb = f.positional.size() > 1 ? f.positional[1] : "";
    if (verb == "list") return cli::group_list(f);
    if (verb == "describe") return cli::group_describe(f);
    if (verb == "delete") return cli::group_delete(f);
    if (verb == "reset-offsets") return cli::group_reset_offsets(f);
    die("group: expected list, describe, delete or reset-offsets", 2);
  }
  std::fputs(help_text, stderr);
  return 2;
}
