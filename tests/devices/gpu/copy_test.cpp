#define BOOST_TEST_MODULE devices.gpu.copy
#include <boost/test/unit_test.hpp>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "devices/gpu/copy.hpp"
#include "devices/gpu/gpu_pool.hpp"
#include "devices/host/pinned_buffer.hpp"
#include "messages/error.hpp"
#include "platform/cuda.hpp"
#include "platform/cuda_check.hpp"

using namespace kvflow;
using namespace kvflow::devices;

namespace {
// GPU suites exit 77 (ctest: skipped) where no device is found.
struct require_device {
  require_device() {
    if (!platform::cuda_device_available()) {
      std::printf("devices.gpu.copy: no CUDA device found, skipping\n");
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
  copy_ticket up = copy_to_device(pool.data(blk), src.data(), bytes, s);
  copy_ticket down = copy_to_host(dst.data(), pool.data(blk), bytes, s);
  while (!down.ready()) {
  }
  BOOST_TEST(up.ready());
  BOOST_TEST(std::memcmp(src.data(), dst.data(), bytes) == 0);
  pool.release(blk);
  BOOST_CHECK_THROW(pool.release(blk), kvflow::error);
  BOOST_CHECK_THROW(KVFLOW_CUDA_CHECK(cudaMemcpy(nullptr, src.data(), 1, cudaMemcpyHostToDevice)), kvflow::error);
  KVFLOW_CUDA_CHECK(cudaStreamDestroy(s));
}
