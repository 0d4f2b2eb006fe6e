#define BOOST_TEST_MODULE platform.cuda_copy
#define BOOST_TEST_NO_MAIN
#include <boost/test/unit_test.hpp>

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "messages/error.hpp"
#include "platform/cuda_check.hpp"
#include "platform/cuda_copy.hpp"
#include "platform/cuda_memory.hpp"
#include "tests/kernels/cuda/gpu_main.hpp"

using namespace kvflow;
using namespace kvflow::platform;

namespace {

struct stream {
  cudaStream_t s = nullptr;
  stream() { KVFLOW_CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking)); }
  ~stream() { KVFLOW_CUDA_OK(cudaStreamDestroy(s)); }
};

}  // namespace

BOOST_AUTO_TEST_CASE(round_trip_with_tickets) {
  const std::size_t bytes = 3 << 20;
  pinned_host_buffer src(bytes), dst(bytes);
  device_buffer dev(bytes, 0), dev2(bytes, 0);
  auto* in = static_cast<std::uint8_t*>(src.data());
  for (std::size_t i = 0; i < bytes; ++i) in[i] = static_cast<std::uint8_t>(i * 31 + 7);
  std::memset(dst.data(), 0, bytes);
  stream a, b;
  copy_ticket up = copy_to_device(dev.data(), src.data(), bytes, a.s);
  enqueue_copy(dev2.data(), dev.data(), bytes, cudaMemcpyDeviceToDevice, a.s);
  // The copy back runs on another stream, ordered after a's work by ticket.
  ticket_after(a.s).order_before(b.s);
  copy_ticket down = copy_to_host(dst.data(), dev2.data(), bytes, b.s);
  while (!down.ready()) {
  }
  BOOST_TEST(up.ready());
  BOOST_TEST(std::memcmp(src.data(), dst.data(), bytes) == 0);
  copy_ticket moved(std::move(down));
  BOOST_TEST(down.event() == nullptr);
  BOOST_TEST(down.ready());  // an empty ticket is done
  moved.wait();
}

BOOST_AUTO_TEST_CASE(a_failed_copy_names_its_size_and_direction) {
  stream a;
  pinned_host_buffer src(16);
  device_buffer dev(16, 0);
  // A direction CUDA does not know: refused before anything is enqueued.
  try {
    enqueue_copy(dev.data(), src.data(), 16, static_cast<cudaMemcpyKind>(42), a.s);
    BOOST_FAIL("a copy of direction 42 was enqueued");
  } catch (const kvflow::error& e) {
    BOOST_TEST_MESSAGE(e.what());
    BOOST_TEST((e.code() == errc::cuda_failure));
    BOOST_TEST(std::string(e.what()).find("16 bytes of unknown direction") != std::string::npos);
  }
  BOOST_TEST(cudaGetLastError() == cudaSuccess);
  // Not sticky: the stream still copies.
  copy_to_device(dev.data(), src.data(), 16, a.s).wait();
  BOOST_CHECK_THROW(KVFLOW_CUDA_CHECK(cudaMemcpy(nullptr, src.data(), 1, cudaMemcpyHostToDevice)), kvflow::error);
}

BOOST_AUTO_TEST_CASE(copy_now_returns_with_the_bytes_landed) {
  // Pageable host memory on both ends: copy_now must not return before a
  // pageable host-to-device copy has really landed.
  const std::size_t bytes = (5 << 20) + 3;
  std::vector<std::uint8_t> in(bytes), back(bytes, 0);
  for (std::size_t i = 0; i < bytes; ++i) in[i] = static_cast<std::uint8_t>(i * 13 + 1);
  device_buffer dev(bytes, 0);
  copy_now(dev.data(), in.data(), bytes, cudaMemcpyHostToDevice);
  copy_now(back.data(), dev.data(), bytes, cudaMemcpyDeviceToHost);
  BOOST_TEST(std::memcmp(in.data(), back.data(), bytes) == 0);
  BOOST_CHECK_THROW(copy_now(dev.data(), in.data(), 16, static_cast<cudaMemcpyKind>(42)), kvflow::error);
}
