// `kvflow pd-bench`: moves one request's KV from a prefill process to a
// decode process the two ways FlowKV compares, contiguous (one call per
// layer range) and per block (one call per chunk and layer), over CUDA IPC
// on one GPU or through host memory over UCX, and measures the path's raw
// rate in the same run (a plain cudaMemcpy of the same bytes; a plain TCP
// stream over the same link). Both processes run this command: the sender
// starts the receiver itself (loopback, or a CUDA IPC peer), or connects to
// one started elsewhere (`--role recv` in another network namespace).

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <future>
#include <iostream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "apps/commands.hpp"
#include "devices/host/pinned_buffer.hpp"
#include "devices/net/kv_transfer.hpp"
#include "kernels/model/config.hpp"
#include "kernels/model/kv_layout.hpp"
#include "messages/error.hpp"
#include "messages/pd_codec.hpp"
#include "platform/cuda.hpp"
#include "platform/unique_fd.hpp"
#ifdef KVFLOW_HAVE_CUDA
#include "devices/gpu/ipc.hpp"
#include "platform/cuda_check.hpp"
#include "platform/cuda_copy.hpp"
#include "platform/cuda_memory.hpp"
#endif

extern char** environ;

namespace kvflow::app {
namespace {

struct pd_bench_options {
  std::string role = "send";  // send | recv | ipc-recv (internal)
  std::vector<std::string> paths{"host_ucx"};
  std::string model = "llama-3-8b";
  std::vector<int> contexts{8192};
  std::vector<int> chunk_tokens{256};
  int layer_ranges = 1;
  int repeats = 3;
  std::string connect;  // host:port of a receiver started elsewhere
  std::string listen = "127.0.0.1:0";
  std::string ucx_tls = "tcp";
  std::string ucx_devices;
  std::string device_name;
  std::string link;  // how the network path is made, for the records
  std::string out;
  bool verify = true;
};

// ---- control frames: a tag byte, then a Cap'n Proto message ---------------

constexpr char tag_announce = 'A', tag_raw = 'R', tag_quit = 'Q';

void write_all(int fd, const void* p, std::size_t n) {
  const auto* b = static_cast<const char*>(p);
  while (n > 0) {
    ssize_t w = ::write(fd, b, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) throw error(errc::io_failure, std::string("pd-bench: write: ") + std::strerror(errno));
    b += w;
    n -= static_cast<std::size_t>(w);
  }
}

bool read_all(int fd, void* p, std::size_t n) {
  auto* b = static_cast<char*>(p);
  while (n > 0) {
    ssize_t r = ::read(fd, b, n);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return false;
    b += r;
    n -= static_cast<std::size_t>(r);
  }
  return true;
}

void send_frame(int fd, char tag, const std::vector<char>& body) {
  std::uint32_t n = static_cast<std::uint32_t>(body.size() + 1);
  write_all(fd, &n, sizeof n);
  write_all(fd, &tag, 1);
  write_all(fd, body.data(), body.size());
}

// False at end of stream; throws on a frame over the cap.
bool recv_frame(int fd, char& tag, std::vector<char>& body) {
  std::uint32_t n = 0;
  if (!read_all(fd, &n, sizeof n)) return false;
  if (n == 0 || n > msg::max_pd_frame_bytes)
    throw error(errc::frame_too_large, "pd-bench: control frame of " + std::to_string(n) + " bytes");
  if (!read_all(fd, &tag, 1)) return false;
  body.resize(n - 1);
  return read_all(fd, body.data(), body.size());
}

msg::pd_reply expect_reply(int fd) {
  char tag = 0;
  std::vector<char> body;
  if (!recv_frame(fd, tag, body)) throw error(errc::peer_down, "pd-bench: the receiver closed the control link");
  auto r = msg::decode_pd_reply(body);
  if (!r) throw r.error();
  if (!r->ok) throw error(errc::io_failure, "pd-bench: receiver: " + r->why);
  return *r;
}

std::uint64_t steady_ns() {
  return static_cast<std::uint64_t>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
          .count());
}

// ---- sockets ----------------------------------------------------------------

std::pair<std::string, int> split_host_port(const std::string& s) {
  auto colon = s.rfind(':');
  if (colon == std::string::npos) throw error(errc::invalid_argument, "expected HOST:PORT, got '" + s + "'");
  return {s.substr(0, colon), std::stoi(s.substr(colon + 1))};
}

sockaddr_in address_of(const std::string& host, int port) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<std::uint16_t>(port));
  if (inet_pton(AF_INET, host.c_str(), &a.sin_addr) != 1)
    throw error(errc::invalid_argument, "pd-bench: not an IPv4 address: " + host);
  return a;
}

platform::unique_fd listen_on(const std::string& host, int port, int& bound_port) {
  platform::unique_fd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  int one = 1;
  setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  auto a = address_of(host, port);
  if (!fd || ::bind(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || ::listen(fd.get(), 4) != 0)
    throw error(errc::io_failure,
                "pd-bench: cannot listen on " + host + ":" + std::to_string(port) + ": " + std::strerror(errno));
  socklen_t len = sizeof a;
  getsockname(fd.get(), reinterpret_cast<sockaddr*>(&a), &len);
  bound_port = ntohs(a.sin_port);
  return fd;
}

platform::unique_fd connect_to(const std::string& host, int port) {
  auto a = address_of(host, port);
  // The receiver may still be starting (another namespace, another process).
  for (int attempt = 0; attempt < 100; ++attempt) {
    platform::unique_fd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (fd && ::connect(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) == 0) {
      int one = 1;
      setsockopt(fd.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      return fd;
    }
    ::usleep(50000);  // a retry interval while the peer starts, not a stand-in for work
  }
  throw error(errc::peer_down, "pd-bench: cannot connect to " + host + ":" + std::to_string(port));
}

// ---- the receiver (host path) ----------------------------------------------

int run_host_receiver(const pd_bench_options& o) {
  auto [host, port] = split_host_port(o.listen);
  int ctl_port = 0, data_port = 0;
  platform::unique_fd ctl = listen_on(host, port, ctl_port);
  platform::unique_fd data = listen_on(host, 0, data_port);
  std::printf("listening %s:%d\n", host.c_str(), ctl_port);
  std::fflush(stdout);
  platform::unique_fd conn(::accept(ctl.get(), nullptr, nullptr));
  if (!conn) throw error(errc::io_failure, "pd-bench: accept failed");
  const int fd = conn.get();
  devices::net::transport t({o.ucx_tls, o.ucx_devices});
  msg::pd_reply hello;
  hello.ok = true;
  hello.receiver = t.address();
  hello.why = std::to_string(data_port);  // the raw stream's port
  send_frame(fd, 'H', msg::encode(hello));
  devices::pinned_buffer dst;
  char tag = 0;
  std::vector<char> body;
  while (recv_frame(fd, tag, body) && tag != tag_quit) {
    auto a = msg::decode_kv_announce(body);
    msg::pd_reply reply;
    reply.ok = a.has_value();
    if (!a) {
      reply.why = a.error().what();
      send_frame(fd, 'r', msg::encode(reply));
      continue;
    }
    if (dst.size() < a->shape.bytes()) dst = devices::pinned_buffer(a->shape.bytes());
    std::memset(dst.data(), 0, a->bytes);  // a stale buffer must not pass the checksum
    if (tag == tag_raw) {
      send_frame(fd, 'r', msg::encode(reply));
      platform::unique_fd s(::accept(data.get(), nullptr, nullptr));
      bool ok = s && read_all(s.get(), dst.data(), a->bytes);
      reply.transfer_ns = steady_ns();
      reply.ok = ok;
      if (!ok) reply.why = "raw stream ended early";
    } else {
      devices::net::request_kv r{a->shape, a->chunk_tokens};
      auto pieces = a->contiguous ? devices::net::contiguous_pieces(r, a->layer_begin, a->layer_end)
                                  : devices::net::per_block_pieces(r, a->layer_begin, a->layer_end);
      std::promise<devices::net::moved> landed;
      auto f = landed.get_future();
      devices::net::expect_pieces(t, a->transfer_id, dst.data(), pieces,
                                  [&landed](devices::net::moved m) { landed.set_value(m); });
      send_frame(fd, 'r', msg::encode(reply));  // ready: the expects are posted
      if (f.wait_for(std::chrono::seconds(120)) != std::future_status::ready)
        throw error(errc::deadline_exceeded, "pd-bench: transfer did not land in 120 s");
      auto m = f.get();
      reply.ok = m.ok;
      reply.why = m.why;
      reply.transfer_ns = m.finished_ns;
      reply.tokens = {static_cast<std::int32_t>(m.calls)};
    }
    if (reply.ok && o.verify && a->checksum != 0 &&
        devices::net::checksum(dst.data() + a->shape.span_offset_bytes(a->layer_begin), a->bytes) != a->checksum) {
      reply.ok = false;
      reply.why = "checksum mismatch";
    }
    send_frame(fd, 'r', msg::encode(reply));
  }
  return 0;
}

// ---- records ----------------------------------------------------------------

struct measured {
  std::string path, transfer;
  int context = 0, chunk = 0;
  std::uint32_t calls = 0;
  std::uint64_t bytes = 0;
  std::vector<double> seconds, raw_seconds;
};

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v.size() % 2 ? v[v.size() / 2] : (v[v.size() / 2 - 1] + v[v.size() / 2]) / 2;
}

nlohmann::json record_of(const pd_bench_options& o, const measured& m) {
  const double s = median(m.seconds), raw = median(m.raw_seconds);
  const double gbps = s > 0 ? m.bytes * 8 / s / 1e9 : 0, raw_gbps = raw > 0 ? m.bytes * 8 / raw / 1e9 : 0;
  return {{"model", o.model},
          {"context_tokens", m.context},
          {"path", m.path},
          {"transfer", m.transfer},
          {"chunk_tokens", m.chunk},
          {"layer_ranges", o.layer_ranges},
          {"calls", m.calls},
          {"bytes", m.bytes},
          {"seconds", s},
          {"seconds_each", m.seconds},
          {"gbps", gbps},
          {"raw_seconds", raw},
          {"raw_gbps", raw_gbps},
          {"fraction_of_raw", raw_gbps > 0 ? gbps / raw_gbps : 0},
          {"raw", m.path == "cuda_ipc" ? "cudaMemcpy device to device, same bytes, one process"
                                       : "one TCP stream of the same bytes over the same link"},
          {"link", m.path == "cuda_ipc" ? "one GPU, two processes" : o.link},
          {"repeats", o.repeats},
          {"device", o.device_name}};
}

void fill_pattern(std::uint8_t* p, std::size_t n) {
  auto* w = reinterpret_cast<std::uint64_t*>(p);
  std::uint64_t x = 0x9e3779b97f4a7c15ull;
  for (std::size_t i = 0; i < n / 8; ++i) w[i] = (x += 0x9e3779b97f4a7c15ull) ^ (x >> 29);
}

// Transfer ids are fresh for every announce: the receiver refuses repeats.
std::uint64_t next_id = 1;

msg::kv_announce announce_of(const devices::net::request_kv& r, int lb, int le, bool contiguous, std::uint32_t pieces,
                             std::uint64_t checksum) {
  msg::kv_announce a;
  a.transfer_id = next_id;
  next_id += pieces + 1;
  a.shape = r.shape;
  a.chunk_tokens = r.chunk_tokens;
  a.layer_begin = lb;
  a.layer_end = le;
  a.bytes = r.shape.span_bytes(lb, le);
  a.contiguous = contiguous;
  a.pieces = pieces;
  a.checksum = checksum;
  return a;
}

// Layer ranges [b, e) splitting the model's layers into `n` nearly equal parts.
std::vector<std::pair<int, int>> ranges_of(int layers, int n) {
  n = std::max(1, std::min(n, layers));
  std::vector<std::pair<int, int>> out;
  for (int i = 0; i < n; ++i) out.push_back({layers * i / n, layers * (i + 1) / n});
  return out;
}

// ---- the sender (host path) --------------------------------------------------

pid_t spawn_self(const std::vector<std::string>& args, int stdin_fd, int stdout_fd) {
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  if (stdin_fd >= 0) posix_spawn_file_actions_adddup2(&fa, stdin_fd, STDIN_FILENO);
  if (stdout_fd >= 0) posix_spawn_file_actions_adddup2(&fa, stdout_fd, STDOUT_FILENO);
  std::vector<std::string> all{"kvflow", "--log-level", "warn", "pd-bench"};
  all.insert(all.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (auto& a : all) argv.push_back(a.data());
  argv.push_back(nullptr);
  pid_t child = 0;
  int rc = posix_spawn(&child, "/proc/self/exe", &fa, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  if (rc != 0) throw error(errc::io_failure, "pd-bench: cannot start the receiving process");
  return child;
}

std::vector<measured> run_host_sender(const pd_bench_options& o, const model::config& cfg) {
  std::string target = o.connect;
  pid_t child = -1;
  FILE* child_out = nullptr;
  if (target.empty()) {
    // A receiver of our own on loopback: a second process, as in production.
    int p[2];
    if (pipe(p) != 0) throw error(errc::io_failure, "pd-bench: pipe");
    child = spawn_self({"--role", "recv", "--listen", o.listen, "--ucx-tls", o.ucx_tls, "--ucx-devices",
                        o.ucx_devices.empty() ? "lo" : o.ucx_devices},
                       -1, p[1]);
    ::close(p[1]);
    child_out = fdopen(p[0], "r");
    char line[256] = {};
    unsigned port = 0;
    char host[64] = {};
    if (!fgets(line, sizeof line, child_out) || sscanf(line, "listening %63[^:]:%u", host, &port) != 2) {
      kill(child, SIGTERM);
      waitpid(child, nullptr, 0);
      throw error(errc::peer_down, "pd-bench: the receiving process did not report its port");
    }
    target = std::string(host) + ":" + std::to_string(port);
  }
  auto [host, port] = split_host_port(target);
  platform::unique_fd conn = connect_to(host, port);
  const int fd = conn.get();
  auto hello = expect_reply(fd);
  const int data_port = std::stoi(hello.why);
  devices::net::transport t({o.ucx_tls, o.ucx_devices.empty() && o.connect.empty() ? "lo" : o.ucx_devices});
  std::vector<measured> out;
  for (int ctx : o.contexts) {
    devices::net::request_kv full{model::kv_shape_of(cfg, ctx, model::dtype::bf16), 256};
    // Pinned staging: where a GPU's KV lands before it goes on the wire.
    devices::pinned_buffer src(full.shape.bytes());
    fill_pattern(src.data(), src.size());
    auto ranges = ranges_of(cfg.layers, o.layer_ranges);
    for (int chunk : o.chunk_tokens) {
      devices::net::request_kv r{full.shape, chunk};
      measured contiguous{"host_ucx", "contiguous", ctx, chunk, 0, full.shape.bytes(), {}, {}};
      measured per_block{"host_ucx", "per_block", ctx, chunk, 0, full.shape.bytes(), {}, {}};
      // A range's bytes lie at its span in the contiguous layout; per block,
      // only the whole model's range is one span to check.
      std::vector<std::uint64_t> sums;
      for (auto [lb, le] : ranges)
        sums.push_back(
            o.verify ? devices::net::checksum(src.data() + r.shape.span_offset_bytes(lb), r.shape.span_bytes(lb, le))
                     : 0);
      for (int rep = 0; rep < o.repeats; ++rep) {
        for (auto* m : {&contiguous, &per_block}) {
          const bool contig = m == &contiguous;
          std::uint64_t t0 = 0, last = 0;
          std::uint32_t calls = 0;
          for (std::size_t ri = 0; ri < ranges.size(); ++ri) {
            auto [lb, le] = ranges[ri];
            auto pieces =
                contig ? devices::net::contiguous_pieces(r, lb, le) : devices::net::per_block_pieces(r, lb, le);
            auto a = announce_of(r, lb, le, contig, static_cast<std::uint32_t>(pieces.size()),
                                 contig || ranges.size() == 1 ? sums[ri] : 0);
            send_frame(fd, tag_announce, msg::encode(a));
            expect_reply(fd);  // the receiver posted its expects
            if (t0 == 0) t0 = steady_ns();
            std::promise<devices::net::moved> sent;
            auto f = sent.get_future();
            devices::net::send_pieces(t, hello.receiver, a.transfer_id, src.data(), pieces,
                                      [&sent](devices::net::moved mv) { sent.set_value(mv); });
            auto mv = f.get();
            if (!mv.ok) throw error(errc::io_failure, "pd-bench: send failed: " + mv.why);
            auto landed = expect_reply(fd);
            last = landed.transfer_ns;
            calls += mv.calls;
          }
          m->calls = calls;
          m->seconds.push_back(static_cast<double>(last - t0) / 1e9);
        }
        // The raw rate: one plain TCP stream of the same bytes, same link.
        auto a = announce_of(r, 0, cfg.layers, true, 1, 0);
        send_frame(fd, tag_raw, msg::encode(a));
        expect_reply(fd);
        platform::unique_fd s = connect_to(host, data_port);
        const std::uint64_t t0 = steady_ns();
        write_all(s.get(), src.data(), a.bytes);
        auto landed = expect_reply(fd);
        s.reset();
        const double raw = static_cast<double>(landed.transfer_ns - t0) / 1e9;
        contiguous.raw_seconds.push_back(raw);
        per_block.raw_seconds.push_back(raw);
      }
      std::fprintf(
          stderr,
          "host_ucx %d tokens, chunk %d: contiguous %.3f s (%u calls), per_block %.3f s (%u calls), raw %.3f s\n", ctx,
          chunk, median(contiguous.seconds), contiguous.calls, median(per_block.seconds), per_block.calls,
          median(contiguous.raw_seconds));
      out.push_back(contiguous);
      out.push_back(per_block);
    }
  }
  send_frame(fd, tag_quit, {});
  conn.reset();
  if (child > 0) {
    int status = 0;
    waitpid(child, &status, 0);
    fclose(child_out);
  }
  return out;
}

// ---- CUDA IPC ---------------------------------------------------------------

#ifdef KVFLOW_HAVE_CUDA
// The decode side: maps the sender's allocation and copies from it.
int run_ipc_receiver() {
  std::unique_ptr<devices::ipc_mapping> mapped;
  std::vector<std::uint8_t> mapped_handle;
  platform::device_buffer dst, scratch;
  cudaStream_t stream = nullptr;
  cudaEvent_t start = nullptr, stop = nullptr;
  KVFLOW_CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  KVFLOW_CUDA_CHECK(cudaEventCreate(&start));
  KVFLOW_CUDA_CHECK(cudaEventCreate(&stop));
  char tag = 0;
  std::vector<char> body;
  while (recv_frame(STDIN_FILENO, tag, body) && tag != tag_quit) {
    msg::pd_reply reply;
    try {
      auto a = msg::decode_kv_announce(body);
      if (!a) throw a.error();
      if (dst.size() < a->shape.bytes()) {
        dst.reset();
        scratch.reset();
        dst = platform::device_buffer(a->shape.bytes());
        scratch = platform::device_buffer(a->shape.bytes());
      }
      std::uint32_t calls = 0;
      KVFLOW_CUDA_CHECK(cudaMemsetAsync(dst.data(), 0, a->shape.bytes(), stream));
      if (tag == tag_raw) {
        // A plain cudaMemcpy of the same bytes inside this process.
        KVFLOW_CUDA_CHECK(cudaEventRecord(start, stream));
        platform::enqueue_copy(scratch.data(), dst.data(), a->bytes, cudaMemcpyDeviceToDevice, stream);
        KVFLOW_CUDA_CHECK(cudaEventRecord(stop, stream));
        calls = 1;
      } else {
        if (!mapped || mapped_handle != a->ipc_handle) {
          mapped.reset();
          mapped = std::make_unique<devices::ipc_mapping>(a->ipc_handle);
          mapped_handle = a->ipc_handle;
        }
        devices::net::request_kv r{a->shape, a->chunk_tokens};
        auto pieces = a->contiguous ? devices::net::contiguous_pieces(r, a->layer_begin, a->layer_end)
                                    : devices::net::per_block_pieces(r, a->layer_begin, a->layer_end);
        KVFLOW_CUDA_CHECK(cudaEventRecord(start, stream));
        calls = devices::copy_pieces(dst.data(), mapped->data(), pieces, stream);
        KVFLOW_CUDA_CHECK(cudaEventRecord(stop, stream));
      }
      KVFLOW_CUDA_CHECK(cudaEventSynchronize(stop));
      float ms = 0;
      KVFLOW_CUDA_CHECK(cudaEventElapsedTime(&ms, start, stop));
      reply.ok = true;
      reply.transfer_ns = static_cast<std::uint64_t>(static_cast<double>(ms) * 1e6);
      reply.tokens = {static_cast<std::int32_t>(calls)};
      if (tag != tag_raw && a->checksum != 0) {
        std::vector<std::uint8_t> host(a->bytes);
        platform::copy_now(host.data(), dst.as<std::uint8_t>() + a->shape.span_offset_bytes(a->layer_begin), a->bytes,
                           cudaMemcpyDeviceToHost);
        if (devices::net::checksum(host.data(), host.size()) != a->checksum) {
          reply.ok = false;
          reply.why = "checksum mismatch";
        }
      }
    } catch (const std::exception& e) {
      reply.ok = false;
      reply.why = e.what();
    }
    send_frame(STDOUT_FILENO, 'r', msg::encode(reply));
  }
  mapped.reset();
  return 0;
}

std::vector<measured> run_ipc_sender(const pd_bench_options& o, const model::config& cfg) {
  int to_child[2], from_child[2];
  if (pipe(to_child) != 0 || pipe(from_child) != 0) throw error(errc::io_failure, "pd-bench: pipe");
  // posix_spawn execs a fresh image: the receiver's CUDA context is its own.
  pid_t child = spawn_self({"--role", "ipc-recv"}, to_child[0], from_child[1]);
  ::close(to_child[0]);
  ::close(from_child[1]);
  const int wfd = to_child[1], rfd = from_child[0];
  std::vector<measured> out;
  // Every exported allocation stays until the receiver quits: it may still
  // map the previous one.
  std::vector<platform::device_buffer> sources;
  auto finish = [&](bool killed) {
    if (killed) kill(child, SIGTERM);
    ::close(wfd);
    ::close(rfd);
    waitpid(child, nullptr, 0);
    sources.clear();
  };
  try {
    for (int ctx : o.contexts) {
      const auto shape = model::kv_shape_of(cfg, ctx, model::dtype::bf16);
      sources.emplace_back(shape.bytes());
      void* src = sources.back().data();
      std::vector<std::uint8_t> host(shape.bytes());
      fill_pattern(host.data(), host.size());
      platform::copy_now(src, host.data(), host.size(), cudaMemcpyHostToDevice);
      auto handle = devices::ipc_export(src);
      auto ranges = ranges_of(cfg.layers, o.layer_ranges);
      for (int chunk : o.chunk_tokens) {
        devices::net::request_kv r{shape, chunk};
        measured contiguous{"cuda_ipc", "contiguous", ctx, chunk, 0, shape.bytes(), {}, {}};
        measured per_block{"cuda_ipc", "per_block", ctx, chunk, 0, shape.bytes(), {}, {}};
        // One unmeasured, checked round first: mapping and first touch are
        // paid once per allocation.
        for (int rep = -1; rep < o.repeats; ++rep) {
          for (auto* m : {&contiguous, &per_block}) {
            const bool contig = m == &contiguous;
            double seconds = 0;
            std::uint32_t calls = 0;
            for (auto [lb, le] : ranges) {
              auto n = contig ? 1u : static_cast<std::uint32_t>(r.chunks() * (le - lb));
              const bool check = o.verify && rep == -1 && (contig || ranges.size() == 1);
              auto a = announce_of(
                  r, lb, le, contig, n,
                  check ? devices::net::checksum(host.data() + shape.span_offset_bytes(lb), shape.span_bytes(lb, le))
                        : 0);
              a.ipc_handle = handle;
              send_frame(wfd, tag_announce, msg::encode(a));
              auto got = expect_reply(rfd);
              seconds += static_cast<double>(got.transfer_ns) / 1e9;
              calls += got.tokens.empty() ? 0u : static_cast<std::uint32_t>(got.tokens[0]);
            }
            m->calls = calls;
            if (rep >= 0) m->seconds.push_back(seconds);
          }
          auto a = announce_of(r, 0, cfg.layers, true, 1, 0);
          send_frame(wfd, tag_raw, msg::encode(a));
          auto raw = expect_reply(rfd);
          if (rep >= 0) {
            contiguous.raw_seconds.push_back(static_cast<double>(raw.transfer_ns) / 1e9);
            per_block.raw_seconds.push_back(static_cast<double>(raw.transfer_ns) / 1e9);
          }
        }
        std::fprintf(stderr,
                     "cuda_ipc %d tokens, chunk %d: contiguous %.4f s (%u calls), per_block %.4f s (%u calls), "
                     "raw %.4f s\n",
                     ctx, chunk, median(contiguous.seconds), contiguous.calls, median(per_block.seconds),
                     per_block.calls, median(contiguous.raw_seconds));
        out.push_back(contiguous);
        out.push_back(per_block);
      }
    }
    send_frame(wfd, tag_quit, {});
  } catch (...) {
    finish(true);
    throw;
  }
  finish(false);
  return out;
}
#endif

int run_pd_bench(const pd_bench_options& o) {
  if (o.role == "recv") return run_host_receiver(o);
#ifdef KVFLOW_HAVE_CUDA
  if (o.role == "ipc-recv") return run_ipc_receiver();
#endif
  if (o.role != "send") throw error(errc::invalid_argument, "pd-bench: --role must be send or recv");
  const auto cfg = model::preset(o.model);
  std::vector<measured> all;
  for (const auto& p : o.paths) {
    if (p == "host_ucx") {
      auto m = run_host_sender(o, cfg);
      all.insert(all.end(), m.begin(), m.end());
    } else if (p == "cuda_ipc") {
#ifdef KVFLOW_HAVE_CUDA
      if (!platform::cuda_device_available()) throw error(errc::unsupported, "pd-bench: cuda_ipc needs a GPU");
      auto m = run_ipc_sender(o, cfg);
      all.insert(all.end(), m.begin(), m.end());
#else
      throw error(errc::unsupported, "pd-bench: cuda_ipc needs a CUDA build");
#endif
    } else {
      throw error(errc::invalid_argument, "pd-bench: unknown path '" + p + "' (cuda_ipc or host_ucx)");
    }
  }
  nlohmann::json records = nlohmann::json::array();
  for (auto& m : all) records.push_back(record_of(o, m));
  if (o.out.empty()) {
    std::cout << records.dump(2) << "\n";
  } else {
    std::ofstream f(o.out);
    f << records.dump(2) << "\n";
    if (!f) throw error(errc::io_failure, "pd-bench: cannot write " + o.out);
  }
  return 0;
}

}  // namespace

command_runner add_pd_bench_command(CLI::App& app) {
  auto o = std::make_shared<pd_bench_options>();
  auto* c = app.add_subcommand(
      "pd-bench",
      "Measure moving one request's KV from a prefill to a decode process: contiguous (one call per layer range) "
      "against per block (one call per chunk and layer), over CUDA IPC on one GPU or host memory over UCX, beside "
      "the path's raw rate measured in the same run");
  c->add_option("--paths", o->paths, "cuda_ipc and/or host_ucx")->delimiter(',')->capture_default_str();
  c->add_option("--model", o->model, "model preset whose KV shape is moved (bf16)")->capture_default_str();
  c->add_option("--contexts", o->contexts, "prompt lengths in tokens")->delimiter(',')->capture_default_str();
  c->add_option("--chunk-tokens", o->chunk_tokens,
                "per-block baseline: tokens per block (one call per block and layer)")
      ->delimiter(',')
      ->capture_default_str();
  c->add_option("--layer-ranges", o->layer_ranges, "contiguous: layer ranges moved (one call each)")
      ->check(CLI::Range(1, 4096))
      ->capture_default_str();
  c->add_option("--repeats", o->repeats, "measurements per point (the median is reported)")
      ->check(CLI::Range(1, 1000))
      ->capture_default_str();
  c->add_option("--role", o->role, "send (default), or recv: serve as the receiving process (host_ucx)")
      ->capture_default_str();
  c->add_option("--connect", o->connect,
                "host_ucx: HOST:PORT of a receiver started with --role recv (default: start one on loopback)");
  c->add_option("--listen", o->listen, "--role recv: IPv4 HOST:PORT to listen on (port 0: any)")->capture_default_str();
  c->add_option("--ucx-tls", o->ucx_tls, "UCX transports (UCX_TLS syntax)")->capture_default_str();
  c->add_option("--ucx-devices", o->ucx_devices, "UCX network devices (default: lo for a loopback receiver)");
  c->add_option("--device-name", o->device_name, "device named in the records");
  c->add_option("--link", o->link, "how the network link is made, for the records")->capture_default_str();
  c->add_option("--out", o->out, "JSON records file (default: stdout)");
  c->add_flag("!--no-verify", o->verify, "skip the checksum of every landed transfer");
  return [o] {
    if (o->link.empty()) o->link = o->connect.empty() ? "loopback" : "network";
    return run_pd_bench(*o);
  };
}

}  // namespace kvflow::app
