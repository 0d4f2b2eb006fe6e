// The CUDA RoPE-delta kernel against the CPU reference (kernels/cpu/rope_delta)
// on the same bf16-rounded block.
#define BOOST_TEST_MODULE kernels_cuda_rope_delta
#define BOOST_TEST_NO_MAIN
#include <cuda_bf16.h>

#include <cmath>
#include <random>
#include <vector>

#include "kernels/cpu/rope.hpp"
#include "kernels/cpu/rope_delta.hpp"
#include "kernels/cuda/check.hpp"
#include "kernels/cuda/rope.cuh"
#include "kernels/cuda/rope_delta.cuh"
#include "kernels/model/config.hpp"
#include "platform/cuda_copy.hpp"
#include "platform/cuda_memory.hpp"
#include "tests/kernels/cuda/gpu_main.hpp"

namespace {

using namespace kvflow;

std::vector<float> bf16_block(std::size_t n, unsigned seed) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<float> d(-1.0f, 1.0f);
  std::vector<float> v(n);
  for (auto& x : v) x = __bfloat162float(__float2bfloat16(d(gen)));
  return v;
}

}  // namespace

BOOST_AUTO_TEST_CASE(rope_delta_matches_the_cpu_reference) {
  const auto c = model::preset("llama-3-8b");  // scaled RoPE, 8 kv heads of 128
  model::kv_shape s{3, c.kv_heads, 96, c.head_dim, model::dtype::f32};
  const auto inv = cuda::rope_inv_freq(c);
  for (int delta : {1, 777, 16000, -300}) {
    const int begin = 10, count = 70;
    auto ref = bf16_block(s.bytes() / 4, 5);
    std::vector<__nv_bfloat16> host(ref.size());
    for (std::size_t i = 0; i < ref.size(); ++i) host[i] = __float2bfloat16(ref[i]);
    platform::device_buffer d_block(host.size() * sizeof(__nv_bfloat16)), d_inv(inv.size() * sizeof(float));
    platform::copy_now(d_block.data(), host.data(), d_block.size(), cudaMemcpyHostToDevice);
    platform::copy_now(d_inv.data(), inv.data(), d_inv.size(), cudaMemcpyHostToDevice);
    KVFLOW_CUDA_CHECK(cuda::launch_rope_delta(d_block.as<__nv_bfloat16>(), s.layers, s.kv_heads, s.tokens, s.head_dim,
                                              begin, count, delta, d_inv.as<float>(), nullptr));
    platform::copy_now(host.data(), d_block.data(), d_block.size(), cudaMemcpyDeviceToHost);
    cpu::rope_delta_block(ref.data(), s, begin, count, delta, inv.data());
    double num = 0, den = 0;
    bool untouched_same = true;
    for (int l = 0; l < s.layers; ++l)
      for (int kv = 0; kv < 2; ++kv)
        for (int h = 0; h < s.kv_heads; ++h)
          for (int t = 0; t < s.tokens; ++t)
            for (int d = 0; d < s.head_dim; ++d) {
              const std::size_t o = s.offset(l, kv, h, t, d);
              const float got = __bfloat162float(host[o]);
              if (kv == 0 && t >= begin && t < begin + count) {
                num += (got - ref[o]) * (got - ref[o]);
                den += ref[o] * ref[o];
              } else {
                untouched_same = untouched_same && got == ref[o];
              }
            }
    const double rel = std::sqrt(num / den);
    BOOST_TEST_MESSAGE("delta " << delta << ": rel err " << rel);
    BOOST_TEST(rel < 5e-3, "delta " << delta);
    BOOST_TEST(untouched_same, "delta " << delta);
  }
  BOOST_TEST(cuda::launch_rope_delta(nullptr, 1, 1, 4, 8, 2, 3, 1, nullptr, nullptr) == cudaErrorInvalidValue);
}
