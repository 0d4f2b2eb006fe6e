// CUDA IPC between two processes on one GPU: this suite starts itself again
// as the receiver, hands it a KvAnnounce with the handle of a device
// allocation, and the receiver maps it, copies the pieces (one call
// contiguous, one per chunk and layer paged) and reports the checksum.

#define BOOST_TEST_MODULE devices.gpu.ipc
#include <boost/test/unit_test.hpp>

#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <utility>
#include <vector>

#include "devices/gpu/ipc.hpp"
#include "devices/net/transport.hpp"
#include "messages/error.hpp"
#include "messages/pd_codec.hpp"
#include "platform/cuda.hpp"
#include "platform/cuda_check.hpp"
#include "platform/cuda_copy.hpp"
#include "platform/cuda_memory.hpp"

extern char** environ;

using namespace kvflow;
using namespace kvflow::devices;

namespace {

// The receiver: reads an announce on stdin, answers "ipc-answer <calls> <checksum>".
int receive() {
  std::vector<char> bytes;
  char buf[4096];
  for (std::size_t n; (n = std::fread(buf, 1, sizeof buf, stdin)) > 0;) bytes.insert(bytes.end(), buf, buf + n);
  auto a = msg::decode_kv_announce(bytes);
  if (!a) {
    std::printf("bad announce: %s\n", a.error().what());
    return 1;
  }
  net::request_kv r{a->shape, a->chunk_tokens};
  auto pieces = a->contiguous ? net::contiguous_pieces(r, a->layer_begin, a->layer_end)
                              : net::per_block_pieces(r, a->layer_begin, a->layer_end);
  ipc_mapping src(a->ipc_handle);
  platform::device_buffer dst(r.shape.bytes());
  auto calls = copy_pieces(dst.data(), src.data(), pieces, nullptr);
  std::vector<std::uint8_t> host(a->bytes);
  platform::copy_now(host.data(), dst.as<std::uint8_t>() + pieces.front().offset, a->bytes, cudaMemcpyDeviceToHost);
  // Boost.Test writes to stdout too: the answer carries a marker.
  std::printf("ipc-answer %u %llu\n", calls, static_cast<unsigned long long>(net::checksum(host.data(), host.size())));
  return 0;
}

struct require_device {
  require_device() {
    if (std::getenv("KVFLOW_IPC_RECEIVER")) std::exit(receive());
    if (!platform::cuda_device_available()) {
      std::printf("devices.gpu.ipc: no CUDA device found, skipping\n");
      std::exit(77);
    }
  }
};

// Starts the receiver with `announce` on its stdin; returns its answer.
std::string run_receiver(const std::vector<char>& announce) {
  int in[2], out[2];
  BOOST_REQUIRE(pipe(in) == 0 && pipe(out) == 0);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, in[0], STDIN_FILENO);
  posix_spawn_file_actions_adddup2(&fa, out[1], STDOUT_FILENO);
  posix_spawn_file_actions_addclose(&fa, in[1]);
  posix_spawn_file_actions_addclose(&fa, out[0]);
  std::vector<std::string> env{"KVFLOW_IPC_RECEIVER=1"};
  for (char** e = environ; *e; ++e) env.emplace_back(*e);
  std::vector<char*> envp;
  for (auto& e : env) envp.push_back(e.data());
  envp.push_back(nullptr);
  char arg0[] = "ipc_receiver";
  char* argv[] = {arg0, nullptr};
  pid_t child = 0;
  BOOST_REQUIRE(posix_spawn(&child, "/proc/self/exe", &fa, nullptr, argv, envp.data()) == 0);
  posix_spawn_file_actions_destroy(&fa);
  close(in[0]);
  close(out[1]);
  BOOST_REQUIRE(write(in[1], announce.data(), announce.size()) == static_cast<ssize_t>(announce.size()));
  close(in[1]);
  std::string answer;
  char buf[256];
  for (ssize_t n; (n = read(out[0], buf, sizeof buf)) > 0;) answer.append(buf, static_cast<std::size_t>(n));
  close(out[0]);
  int status = 0;
  waitpid(child, &status, 0);
  BOOST_TEST(WIFEXITED(status));
  BOOST_TEST(WEXITSTATUS(status) == 0, "receiver: " << answer);
  return answer;
}

}  // namespace

BOOST_TEST_GLOBAL_FIXTURE(require_device);

BOOST_AUTO_TEST_CASE(receiver_copies_the_exported_kv_in_one_call_or_per_block) {
  net::request_kv r{{4, 2, 1000, 64, model::dtype::bf16}, 256};
  const std::size_t bytes = r.shape.bytes();
  std::vector<std::uint8_t> host(bytes);
  for (std::size_t i = 0; i < bytes; ++i) host[i] = static_cast<std::uint8_t>(i * 131 + 17);
  platform::device_buffer src_mem(bytes);
  void* src = src_mem.data();
  platform::copy_now(src, host.data(), bytes, cudaMemcpyHostToDevice);
  for (bool contiguous : {true, false}) {
    msg::kv_announce a;
    a.shape = r.shape;
    a.chunk_tokens = r.chunk_tokens;
    a.layer_begin = 0;
    a.layer_end = 4;
    a.bytes = bytes;
    a.contiguous = contiguous;
    a.pieces = contiguous ? 1 : 16;
    a.ipc_handle = ipc_export(src);
    a.checksum = net::checksum(host.data(), bytes);
    auto answer = run_receiver(msg::encode(a));
    unsigned calls = 0;
    unsigned long long sum = 0;
    auto at = answer.find("ipc-answer ");
    BOOST_REQUIRE_MESSAGE(at != std::string::npos, "receiver said: " << answer);
    BOOST_REQUIRE(std::sscanf(answer.c_str() + at, "ipc-answer %u %llu", &calls, &sum) == 2);
    BOOST_TEST(calls == a.pieces);
    BOOST_TEST(sum == a.checksum);
  }
}

BOOST_AUTO_TEST_CASE(a_handle_of_the_wrong_size_is_refused) {
  BOOST_CHECK_THROW(ipc_mapping(std::vector<std::uint8_t>(10)), kvflow::error);
}

BOOST_AUTO_TEST_CASE(device_relayout_equals_the_host_one_and_inverts) {
  // 3 layers, 2 heads, 70 tokens in chunks of 32 (the last one short), bf16.
  net::request_kv r{{3, 2, 70, 16, model::dtype::bf16}, 32};
  std::vector<std::vector<std::uint8_t>> host(static_cast<std::size_t>(r.chunks()));
  std::vector<const void*> host_ptrs, dev_ptrs;
  std::vector<void*> back_ptrs;
  std::vector<platform::device_buffer> mem;  // owns dev_ptrs' and back_ptrs' memory
  for (int c = 0; c < r.chunks(); ++c) {
    auto& h = host[static_cast<std::size_t>(c)];
    h.resize(r.chunk_shape(c).bytes());
    for (std::size_t i = 0; i < h.size(); ++i)
      h[i] = static_cast<std::uint8_t>(i * 7 + static_cast<std::size_t>(c) * 31);
    host_ptrs.push_back(h.data());
    auto& d = mem.emplace_back(h.size());
    platform::copy_now(d.data(), h.data(), h.size(), cudaMemcpyHostToDevice);
    dev_ptrs.push_back(d.data());
    auto& b = mem.emplace_back(h.size());
    KVFLOW_CUDA_CHECK(cudaMemset(b.data(), 0, h.size()));
    back_ptrs.push_back(b.data());
  }
  for (auto [lb, le] : {std::pair{0, 3}, std::pair{1, 2}}) {
    std::vector<std::uint8_t> want(r.shape.bytes(), 0), got(r.shape.bytes(), 1);
    net::pack_chunks(r, host_ptrs, want.data(), lb, le);
    platform::device_buffer span_mem(r.shape.bytes());
    void* span = span_mem.data();
    KVFLOW_CUDA_CHECK(cudaMemset(span, 0, r.shape.bytes()));
    BOOST_TEST(pack_chunks_device(r, dev_ptrs, span, lb, le, nullptr) == static_cast<std::uint32_t>(r.chunks()));
    platform::copy_now(got.data(), span, got.size(), cudaMemcpyDeviceToHost);
    const auto at = r.shape.span_offset_bytes(lb), n = r.shape.span_bytes(lb, le);
    BOOST_TEST(std::equal(want.begin() + static_cast<std::ptrdiff_t>(at),
                          want.begin() + static_cast<std::ptrdiff_t>(at + n),
                          got.begin() + static_cast<std::ptrdiff_t>(at)));
    BOOST_TEST(unpack_chunks_device(r, span, back_ptrs, lb, le, nullptr) == static_cast<std::uint32_t>(r.chunks()));
    for (int c = 0; c < r.chunks(); ++c) {
      const auto cs = r.chunk_shape(c);
      std::vector<std::uint8_t> b(cs.bytes());
      platform::copy_now(b.data(), back_ptrs[static_cast<std::size_t>(c)], b.size(), cudaMemcpyDeviceToHost);
      const auto& h = host[static_cast<std::size_t>(c)];
      BOOST_TEST(std::equal(h.begin() + static_cast<std::ptrdiff_t>(cs.span_offset_bytes(lb)),
                            h.begin() + static_cast<std::ptrdiff_t>(cs.span_offset_bytes(le)),
                            b.begin() + static_cast<std::ptrdiff_t>(cs.span_offset_bytes(lb))),
                 "chunk " << c << " layers " << lb << ".." << le);
    }
  }
  BOOST_CHECK_THROW(pack_chunks_device(r, {dev_ptrs.front()}, nullptr, 0, 3, nullptr), kvflow::error);
}

BOOST_AUTO_TEST_CASE(an_export_of_this_process_maps_to_its_own_pointer) {
  platform::device_buffer mem(1 << 20);
  void* p = mem.data();
  {
    ipc_exported e(p);
    ipc_mapping m(e.handle());  // the driver refuses a handle of its own process
    BOOST_TEST(m.data() == p);
    ipc_exported moved(std::move(e));
    BOOST_TEST(e.handle().empty());
    BOOST_TEST(ipc_mapping(moved.handle()).data() == p);
  }
}
