#include <algorithm>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/random_init.cuh"

namespace kvflow::cuda {
namespace {

int grid_for(std::size_t n) { return static_cast<int>(std::min<std::size_t>((n + 255) / 256, 8192)); }

// splitmix64 is a counter generator: output number k of a stream whose state
// starts at s0 is mix(s0 + k * golden), so every element is independent.
template <typename T>
__global__ void fill_uniform_kernel(T* p, std::size_t n, std::uint64_t s0, float center, float scale) {
  for (std::size_t i = blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::size_t>(gridDim.x) * blockDim.x) {
    const std::uint64_t r = splitmix64(s0 + (i + 1) * splitmix64_gamma);  // output number i + 2
    const float u = static_cast<float>(r >> 40) * (1.0f / 16777216.0f);
    const float v = __fadd_rn(center, __fmul_rn(scale, __fsub_rn(2.0f * u, 1.0f)));  // no FMA, as on the host
    if constexpr (sizeof(T) == 4) {
      p[i] = v;
    } else {
      p[i] = __float2bfloat16(v);
    }
  }
}

__global__ void to_bf16_kernel(const float* src, bf16* dst, std::size_t n) {
  for (std::size_t i = blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::size_t>(gridDim.x) * blockDim.x)
    dst[i] = __float2bfloat16(src[i]);
}

template <typename T>
cudaError_t launch_fill(T* p, std::size_t n, std::uint64_t seed, std::uint64_t tensor, float center, float scale,
                        cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  fill_uniform_kernel<T><<<grid_for(n), 256, 0, stream>>>(p, n, seed ^ (tensor * 0xd1b54a32d192ed03ull), center, scale);
  return cudaGetLastError();
}

}  // namespace

cudaError_t launch_fill_uniform(bf16* p, std::size_t n, std::uint64_t seed, std::uint64_t tensor, float center,
                                float scale, cudaStream_t stream) {
  return launch_fill(p, n, seed, tensor, center, scale, stream);
}

cudaError_t launch_fill_uniform_f32(float* p, std::size_t n, std::uint64_t seed, std::uint64_t tensor, float center,
                                    float scale, cudaStream_t stream) {
  return launch_fill(p, n, seed, tensor, center, scale, stream);
}

cudaError_t launch_to_bf16(const float* src, bf16* dst, std::size_t n, cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  to_bf16_kernel<<<grid_for(n), 256, 0, stream>>>(src, dst, n);
  return cudaGetLastError();
}

}  // namespace kvflow::cuda
