#include <algorithm>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/random_init.cuh"

namespace kvflow::cuda {
namespace {

int grid_for(std::size_t n) { return static_cast<int>(std::min<std::size_t>((n + 255) / 256, 8192)); }

__global__ void fill_uniform_kernel(bf16* p, std::size_t n, std::uint64_t key, float scale) {
  for (std::size_t i = blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::size_t>(gridDim.x) * blockDim.x) {
    const std::uint64_t r = splitmix64(key ^ (i * 0xD1B54A32D192ED03ull));
    // 24 high bits -> [0, 1) -> [-1, 1).
    const float u = static_cast<float>(r >> 40) * (1.0f / 16777216.0f);
    p[i] = __float2bfloat16((2.0f * u - 1.0f) * scale);
  }
}

__global__ void fill_kernel(float* p, std::size_t n, float value) {
  for (std::size_t i = blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::size_t>(gridDim.x) * blockDim.x)
    p[i] = value;
}

__global__ void to_bf16_kernel(const float* src, bf16* dst, std::size_t n) {
  for (std::size_t i = blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::size_t>(gridDim.x) * blockDim.x)
    dst[i] = __float2bfloat16(src[i]);
}

}  // namespace

cudaError_t launch_fill_uniform(bf16* p, std::size_t n, std::uint64_t seed, std::uint64_t tensor, float scale,
                                cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  const std::uint64_t key = splitmix64(seed ^ splitmix64(tensor + 0x632BE59BD9B4E019ull));
  fill_uniform_kernel<<<grid_for(n), 256, 0, stream>>>(p, n, key, scale);
  return cudaGetLastError();
}

cudaError_t launch_fill(float* p, std::size_t n, float value, cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  fill_kernel<<<grid_for(n), 256, 0, stream>>>(p, n, value);
  return cudaGetLastError();
}

cudaError_t launch_to_bf16(const float* src, bf16* dst, std::size_t n, cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  to_bf16_kernel<<<grid_for(n), 256, 0, stream>>>(src, dst, n);
  return cudaGetLastError();
}

}  // namespace kvflow::cuda
