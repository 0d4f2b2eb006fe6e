#define BOOST_TEST_MODULE platform.cuda_memory
#define BOOST_TEST_NO_MAIN
#include <boost/test/unit_test.hpp>

#include <cuda_runtime_api.h>

#include <string>
#include <utility>

#include "messages/error.hpp"
#include "platform/cuda_check.hpp"
#include "platform/cuda_memory.hpp"
#include "tests/kernels/cuda/gpu_main.hpp"

using namespace kvflow;
using namespace kvflow::platform;

namespace {

std::size_t free_device_bytes() {
  std::size_t free_b = 0, total_b = 0;
  KVFLOW_CUDA_CHECK(cudaMemGetInfo(&free_b, &total_b));
  return free_b;
}

std::size_t total_device_bytes() {
  std::size_t free_b = 0, total_b = 0;
  KVFLOW_CUDA_CHECK(cudaMemGetInfo(&free_b, &total_b));
  return total_b;
}

}  // namespace

BOOST_AUTO_TEST_CASE(device_buffer_owns_and_moves) {
  const std::size_t before = free_device_bytes();
  {
    device_buffer a(64u << 20, 0);
    BOOST_TEST(a.data() != nullptr);
    BOOST_TEST(a.size() == (64u << 20));
    BOOST_TEST(current_cuda_device() == 0);
    BOOST_TEST(free_device_bytes() + (64u << 20) <= before + (2u << 20));
    device_buffer b(std::move(a));
    BOOST_TEST(a.data() == nullptr);
    BOOST_TEST(a.size() == 0u);
    BOOST_TEST(b.size() == (64u << 20));
    a = std::move(b);
    BOOST_TEST(a.data() != nullptr);
    a.reset();
    BOOST_TEST(a.data() == nullptr);
    device_buffer one(0);  // zero bytes still gives a unique pointer
    BOOST_TEST(one.data() != nullptr);
  }
  BOOST_TEST(free_device_bytes() + (2u << 20) >= before);
}

// Out of memory is capacity_exceeded with the bytes and the device named, and
// it leaves nothing sticky: the next allocation on the device succeeds.
BOOST_AUTO_TEST_CASE(allocation_beyond_device_memory_fails_cleanly) {
  const std::size_t too_much = total_device_bytes() + (1ull << 30);
  try {
    device_buffer huge(too_much, 0);
    BOOST_FAIL("allocated " << too_much << " bytes");
  } catch (const kvflow::error& e) {
    BOOST_TEST_MESSAGE(e.what());
    BOOST_TEST((e.code() == errc::capacity_exceeded));
    const std::string what = e.what();
    BOOST_TEST(what.find(std::to_string(too_much) + " bytes") != std::string::npos);
    BOOST_TEST(what.find("CUDA device 0") != std::string::npos);
    BOOST_TEST(what.find("free of") != std::string::npos);
  }
  BOOST_TEST(cudaGetLastError() == cudaSuccess);
  device_buffer ok(1u << 20, 0);
  BOOST_TEST(ok.data() != nullptr);
  BOOST_TEST(device_free(nullptr));
}

BOOST_AUTO_TEST_CASE(a_device_that_does_not_exist_is_a_cuda_failure) {
  BOOST_CHECK_EXCEPTION(device_buffer(1, 1 << 20), kvflow::error, [](const kvflow::error& e) {
    return e.code() == errc::cuda_failure && std::string(e.what()).find("CUDA device 1048576") != std::string::npos;
  });
  BOOST_TEST(cudaGetLastError() == cudaSuccess);
}

BOOST_AUTO_TEST_CASE(pinned_host_buffer_is_page_locked) {
  pinned_host_buffer h(1u << 20);
  BOOST_REQUIRE(h.data() != nullptr);
  cudaPointerAttributes attr{};
  KVFLOW_CUDA_CHECK(cudaPointerGetAttributes(&attr, h.data()));
  BOOST_TEST(attr.type == cudaMemoryTypeHost);
  pinned_host_buffer moved(std::move(h));
  BOOST_TEST(h.data() == nullptr);
  BOOST_TEST(moved.size() == (1u << 20));
  void* p = try_pinned_alloc(4096);
  BOOST_TEST(p != nullptr);
  BOOST_TEST(pinned_free(p));
}
