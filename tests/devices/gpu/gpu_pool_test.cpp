#define BOOST_TEST_MODULE devices.gpu.gpu_pool
#include <boost/test/unit_test.hpp>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "devices/gpu/gpu_pool.hpp"
#include "devices/host/pinned_buffer.hpp"
#include "messages/error.hpp"
#include "platform/cuda.hpp"
#include "platform/cuda_check.hpp"
#include "platform/cuda_copy.hpp"

using namespace kvflow;
using namespace kvflow::devices;

namespace {
// GPU suites exit 77 (ctest: skipped) where no device is found.
struct require_device {
  require_device() {
    if (!platform::cuda_device_available()) {
      std::printf("devices.gpu.gpu_pool: no CUDA device found, skipping\n");
      std::exit(77);
    }
  }
};
}  // namespace

BOOST_TEST_GLOBAL_FIXTURE(require_device);

BOOST_AUTO_TEST_CASE(round_trip_through_pool_block) {
  const std::size_t bytes = 3 << 20;
  gpu_pool pool(0, 4 * bytes, bytes);
  BOOST_TEST(pool.block_count() == 4u);
  const std::int64_t blk = pool.allocate();
  BOOST_REQUIRE(blk >= 0);
  pinned_buffer src(bytes), dst(bytes);
  for (std::size_t i = 0; i < bytes; ++i) src.data()[i] = static_cast<std::uint8_t>(i * 31 + 7);
  cudaStream_t s;
  KVFLOW_CUDA_CHECK(cudaStreamCreate(&s));
  platform::copy_ticket up = platform::copy_to_device(pool.data(blk), src.data(), bytes, s);
  platform::copy_ticket down = platform::copy_to_host(dst.data(), pool.data(blk), bytes, s);
  while (!down.ready()) {
  }
  BOOST_TEST(up.ready());
  BOOST_TEST(std::memcmp(src.data(), dst.data(), bytes) == 0);
  pool.release(blk);
  BOOST_CHECK_THROW(pool.release(blk), kvflow::error);
  BOOST_CHECK_THROW(KVFLOW_CUDA_CHECK(cudaMemcpy(nullptr, src.data(), 1, cudaMemcpyHostToDevice)), kvflow::error);
  KVFLOW_CUDA_CHECK(cudaStreamDestroy(s));
}

// A pool larger than the device fails with the size and the device named,
// and the device still serves the next pool.
BOOST_AUTO_TEST_CASE(pool_beyond_device_memory_fails_cleanly) {
  std::size_t free_b = 0, total_b = 0;
  KVFLOW_CUDA_CHECK(cudaMemGetInfo(&free_b, &total_b));
  const std::size_t block = 64u << 20;
  const std::size_t too_much = (total_b / block + 2) * block;
  try {
    gpu_pool huge(0, too_much, block);
    BOOST_FAIL("a pool of " << too_much << " bytes on a device of " << total_b << " was allocated");
  } catch (const kvflow::error& e) {
    BOOST_TEST_MESSAGE(e.what());
    BOOST_TEST((e.code() == errc::capacity_exceeded));
    BOOST_TEST(std::string(e.what()).find(std::to_string(too_much) + " bytes") != std::string::npos);
    BOOST_TEST(std::string(e.what()).find("CUDA device 0") != std::string::npos);
  }
  gpu_pool ok(0, 4 * block, block);
  BOOST_TEST(ok.block_count() == 4u);
}
