#include "apps/node_cluster.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <sstream>

#include "messages/error.hpp"
#include "messages/log.hpp"
#include "platform/unique_fd.hpp"

namespace kvflow::app {
namespace {

std::atomic<int> clusters_made{0};

bool shell_ok(const std::string& cmd) { return std::system((cmd + " >/dev/null 2>&1").c_str()) == 0; }

// tbf needs a bucket of at least one timer tick of the rate; 1 MB at 10
// Gbit/s and up keeps a TCP stream at 95% of the shape (TOOLCHAIN.md).
std::string tbf(const std::string& dev, double gbps) {
  auto bytes_per_ms = gbps * 1e9 / 8 / 1000;
  auto burst = std::clamp(bytes_per_ms, 16e3, 1e6);
  std::ostringstream c;
  c << "tc qdisc replace dev " << dev << " root tbf rate " << static_cast<long long>(gbps * 1e6) << "kbit burst "
    << static_cast<long long>(burst) << " latency 10ms";
  return c.str();
}

// Namespaces (and their links) left by a test or bench that was killed
// before it could clean up: kvflow-PID-N where PID is gone.
void remove_stale_namespaces() {
  FILE* p = popen("ip netns list 2>/dev/null", "r");
  if (!p) return;
  char line[256];
  std::vector<std::string> stale;
  while (fgets(line, sizeof line, p)) {
    int pid = 0, n = 0;
    if (std::sscanf(line, "kvflow-%d-%d", &pid, &n) == 2 && pid > 0 && ::kill(pid, 0) != 0 && errno == ESRCH)
      stale.push_back("kvflow-" + std::to_string(pid) + "-" + std::to_string(n));
  }
  pclose(p);
  for (auto& ns : stale) shell_ok("ip netns del " + ns);
}

}  // namespace

void run_checked(const std::string& cmd) {
  auto full = cmd + " 2>&1";
  FILE* p = popen(full.c_str(), "r");
  if (!p) throw error(errc::io_failure, "cannot run: " + cmd);
  std::string out;
  char buf[256];
  while (fgets(buf, sizeof buf, p)) out += buf;
  int rc = pclose(p);
  if (rc != 0) throw error(errc::io_failure, "'" + cmd + "' failed: " + out);
}

credentials make_credentials(const std::string& dir, const std::vector<std::string>& names) {
  std::filesystem::create_directories(dir);
  credentials c;
  c.dir = dir;
  c.ca = dir + "/ca.pem";
  c.ca_key = dir + "/ca.key";
  // P-256 keys: made in milliseconds, and TLS 1.2's ECDHE-ECDSA suites are
  // in CAF's "HIGH:!aNULL:!MD5" list.
  const std::string ec = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
  run_checked("openssl req -x509 " + ec + " -days 2 -subj /CN=kvflow-cluster-ca -keyout " + c.ca_key + " -out " + c.ca);
  for (std::size_t i = 0; i < names.size(); ++i) {
    auto& n = names[i];
    auto csr = dir + "/" + n + ".csr";
    run_checked("openssl req " + ec + " -subj /CN=" + n + " -keyout " + c.key(n) + " -out " + csr);
    run_checked("openssl x509 -req -days 2 -set_serial " + std::to_string(1000 + i) + " -in " + csr + " -CA " + c.ca +
                " -CAkey " + c.ca_key + " -out " + c.cert(n));
    std::filesystem::remove(csr);
  }
  return c;
}

node_cluster::node_cluster(node_cluster_options options) : opt_(std::move(options)) {
  if (opt_.nodes < 1) throw error(errc::invalid_argument, "a cluster needs a node");
  // `ip netns exec` runs the program itself: /proc/self/exe would name ip.
  if (opt_.kvflow_exe == "/proc/self/exe") opt_.kvflow_exe = std::filesystem::read_symlink(opt_.kvflow_exe).string();
  bool can = opt_.use_netns && ::geteuid() == 0 && shell_ok("command -v ip") && shell_ok("command -v tc");
  if (can) remove_stale_namespaces();
  auto k = clusters_made++;
  auto pid = static_cast<int>(::getpid());
  if (can) {
    ns_ = "kvflow-" + std::to_string(pid) + "-" + std::to_string(k);
    host_dev_ = "kvh" + std::to_string(pid % 100000) + "x" + std::to_string(k % 100);
    node_dev_ = "kvn" + std::to_string(pid % 100000) + "x" + std::to_string(k % 100);
    auto subnet = "10." + std::to_string(200 + k % 50) + "." + std::to_string(pid % 250);
    host_ip_ = subnet + ".1";
    node_ip_ = subnet + ".2";
    try {
      run_checked("ip netns add " + ns_);
    } catch (const error& e) {
      logger("app")->warn("node cluster: no network namespace ({}), using loopback", e.what());
      ns_.clear();
      host_dev_.clear();
    }
  }
  try {
    if (!ns_.empty()) {
      run_checked("ip link add " + host_dev_ + " type veth peer name " + node_dev_);
      run_checked("ip link set " + node_dev_ + " netns " + ns_);
      run_checked("ip addr add " + host_ip_ + "/24 dev " + host_dev_);
      run_checked("ip link set " + host_dev_ + " up");
      run_checked("ip -n " + ns_ + " addr add " + node_ip_ + "/24 dev " + node_dev_);
      run_checked("ip -n " + ns_ + " link set " + node_dev_ + " up");
      run_checked("ip -n " + ns_ + " link set lo up");
      if (opt_.mtu > 0) {
        run_checked("ip link set dev " + host_dev_ + " mtu " + std::to_string(opt_.mtu));
        run_checked("ip -n " + ns_ + " link set dev " + node_dev_ + " mtu " + std::to_string(opt_.mtu));
      }
      if (opt_.gbps > 0) shape(opt_.gbps);
    }
    if (!ns_.empty() || opt_.tls) {
      auto dir =
          std::filesystem::temp_directory_path() / ("kvflow-certs-" + std::to_string(pid) + "-" + std::to_string(k));
      creds_ = make_credentials(dir.string(), {"node", "client"});
    }
    for (int i = 0; i < opt_.nodes; ++i) start_node(i);
  } catch (...) {
    cleanup();
    throw;
  }
}

node_cluster::~node_cluster() { cleanup(); }

void node_cluster::start_node(int i) {
  std::vector<std::string> args;
  std::string host = ns_.empty() ? "127.0.0.1" : node_ip_;
  if (!ns_.empty()) args = {"ip", "netns", "exec", ns_};
  std::vector<std::string> node = {opt_.kvflow_exe, "--log-level",
                                   "warn",          "node",
                                   "--host",        host,
                                   "--port",        "0",
                                   "--node-id",     "n" + std::to_string(i),
                                   "--ucx-tls",     "tcp",
                                   "--ucx-devices", ns_.empty() ? "lo" : node_dev_};
  if (!creds_.dir.empty())
    node.insert(node.end(), {"--cert", creds_.cert("node"), "--key", creds_.key("node"), "--ca", creds_.ca});
  args.insert(args.end(), node.begin(), node.end());
  args.insert(args.end(), opt_.node_args.begin(), opt_.node_args.end());
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  int out[2];
  if (pipe(out) != 0) throw error(errc::io_failure, "pipe for node " + std::to_string(i));
  auto parent = ::getpid();
  pid_t child = ::fork();
  if (child == 0) {
    // The node dies with this process, also when it is killed: nodes never
    // outlive a test or bench that was stopped.
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(127);
    ::dup2(out[1], STDOUT_FILENO);
    ::close(out[0]);
    ::close(out[1]);
    ::execvp(argv[0], argv.data());
    ::_exit(127);
  }
  close(out[1]);
  if (child < 0) {
    close(out[0]);
    throw error(errc::io_failure, "cannot start " + args.front() + " for node " + std::to_string(i));
  }
  pids_.push_back(child);
  FILE* f = fdopen(out[0], "r");
  outs_.push_back(f);
  char line[256] = {};
  char addr[128] = {};
  unsigned port = 0;
  if (!f || !fgets(line, sizeof line, f) || std::sscanf(line, "listening %127[^:]:%u", addr, &port) != 2)
    throw error(errc::peer_down, "node " + std::to_string(i) + " did not report its port");
  members_.push_back("n" + std::to_string(i) + " " + addr + ":" + std::to_string(port));
  if (std::find(opt_.node_args.begin(), opt_.node_args.end(), "--stage-layers") == opt_.node_args.end()) return;
  // A node serving a stage reports the stage's port on the next line.
  if (!fgets(line, sizeof line, f) || std::sscanf(line, "stage listening %127[^:]:%u", addr, &port) != 2)
    throw error(errc::peer_down, "node " + std::to_string(i) + " did not report its stage's port");
  stage_members_.push_back(std::string(addr) + ":" + std::to_string(port));
  stage_reports_.push_back(line);
}

void node_cluster::signal(int node, int sig) { ::kill(pid(node), sig); }

bool node_cluster::shape(double gbps) {
  if (ns_.empty()) return false;
  if (gbps > 0)
    run_checked("ip netns exec " + ns_ + " " + tbf(node_dev_, gbps));
  else
    shell_ok("ip netns exec " + ns_ + " tc qdisc del dev " + node_dev_ + " root");
  return true;
}

double node_cluster::measure_gbps(std::size_t bytes, int streams) {
  if (ns_.empty() || streams < 1 || !shell_ok("command -v python3")) return 0;
  platform::unique_fd listener(::socket(AF_INET, SOCK_STREAM, 0));
  const int s = listener.get();
  sockaddr_in a{};
  a.sin_family = AF_INET;
  inet_pton(AF_INET, host_ip_.c_str(), &a.sin_addr);
  socklen_t len = sizeof a;
  if (s < 0 || ::bind(s, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || ::listen(s, streams) != 0 ||
      ::getsockname(s, reinterpret_cast<sockaddr*>(&a), &len) != 0)
    return 0;
  std::ostringstream py;
  py << "import socket; s=socket.create_connection(('" << host_ip_ << "'," << ntohs(a.sin_port)
     << ")); b=bytearray(1<<20); n=" << bytes / static_cast<std::size_t>(streams)
     << "\nwhile n>0:\n k=min(n,len(b)); s.sendall(memoryview(b)[:k]); n-=k\ns.close()";
  // One sender process a stream (threads would share one interpreter lock).
  for (int i = 0; i < streams; ++i) {
    std::string cmd = "ip netns exec " + ns_ + " python3 -c \"" + py.str() + "\" &";
    if (std::system(cmd.c_str()) != 0) return 0;
  }
  // Accepts the streams as their senders start (one may start well after
  // another) while reading the ones already there; the clock starts at the
  // first bytes read, which do not count (they arrived before it started).
  std::vector<platform::unique_fd> conns;
  std::vector<pollfd> fds{{s, POLLIN, 0}};
  std::vector<char> buf(1 << 20);
  std::size_t got = 0;
  auto start = std::chrono::steady_clock::now();
  bool first = true;
  int accepted = 0, open = 0;
  while (accepted < streams || open > 0) {
    if (::poll(fds.data(), fds.size(), 30000) <= 0) break;
    for (std::size_t k = 1; k < fds.size(); ++k) {
      auto& p = fds[k];
      if (p.fd < 0 || !(p.revents & (POLLIN | POLLHUP | POLLERR))) continue;
      auto n = ::recv(p.fd, buf.data(), buf.size(), 0);
      if (n <= 0) {
        p.fd = -1;  // poll skips it; conns closes it
        --open;
        continue;
      }
      if (first) {
        start = std::chrono::steady_clock::now();
        first = false;
      } else {
        got += static_cast<std::size_t>(n);
      }
    }
    if (fds[0].fd >= 0 && (fds[0].revents & POLLIN)) {
      int c = ::accept(s, nullptr, nullptr);
      if (c < 0) break;
      conns.emplace_back(c);
      fds.push_back({c, POLLIN, 0});
      ++open;
      if (++accepted == streams) fds[0].fd = -1;
    }
  }
  listener.reset();
  conns.clear();
  double s_elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return s_elapsed > 0 ? got * 8.0 / s_elapsed / 1e9 : 0;
}

std::string node_cluster::describe() const {
  std::ostringstream o;
  o << pids_.size() << " kvflow node(s) ";
  if (ns_.empty())
    o << "on loopback";
  else
    o << "in namespace " << ns_ << " behind veth " << host_dev_ << " (" << host_ip_ << ") <-> " << node_dev_ << " ("
      << node_ip_ << ")";
  if (opt_.gbps > 0 && !ns_.empty()) o << " shaped to " << opt_.gbps << " Gbit/s";
  if (opt_.mtu > 0 && !ns_.empty()) o << ", MTU " << opt_.mtu;
  return o.str();
}

void node_cluster::cleanup() noexcept {
  for (auto p : pids_) {
    ::kill(p, SIGCONT);
    ::kill(p, SIGKILL);
  }
  for (auto p : pids_) ::waitpid(p, nullptr, 0);
  pids_.clear();
  for (auto* f : outs_)
    if (f) fclose(f);
  outs_.clear();
  if (!ns_.empty()) {
    shell_ok("ip netns del " + ns_);
    shell_ok("ip link del " + host_dev_);
    ns_.clear();
  }
  if (!creds_.dir.empty()) {
    std::error_code ec;
    std::filesystem::remove_all(creds_.dir, ec);
  }
}

}  // namespace kvflow::app
