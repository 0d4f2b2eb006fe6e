#include "kernels/cuda/blend_rows.cuh"
#include "kernels/cuda/common.cuh"

namespace kvflow::cuda {
namespace {

constexpr int threads = 128;

// One block per token: its threads walk the 2 * kv_heads * head_dim values
// and reduce the squared differences.
__global__ void kv_deviation_kernel(const bf16* now, const bf16* cached, int kv_heads, int tokens, int hd, float* out) {
  const int t = blockIdx.x;
  const int per_token = 2 * kv_heads * hd;
  float sum = 0;
  for (int i = threadIdx.x; i < per_token; i += blockDim.x) {
    const int row = i / hd, d = i - row * hd;  // row: K|V x head
    const long long o = (static_cast<long long>(row) * tokens + t) * hd + d;
    const float diff = __bfloat162float(now[o]) - __bfloat162float(cached[o]);
    sum += diff * diff;
  }
  __shared__ float part[threads];
  part[threadIdx.x] = sum;
  __syncthreads();
  for (int s = threads / 2; s > 0; s >>= 1) {
    if (threadIdx.x < s) part[threadIdx.x] += part[threadIdx.x + s];
    __syncthreads();
  }
  if (threadIdx.x == 0) out[t] = part[0];
}

__global__ void gather_rows_kernel(const float* src, const int* rows, int width, float* dst) {
  const float* from = src + static_cast<long long>(rows[blockIdx.x]) * width;
  float* to = dst + static_cast<long long>(blockIdx.x) * width;
  for (int i = threadIdx.x; i < width; i += blockDim.x) to[i] = from[i];
}

}  // namespace

cudaError_t launch_kv_deviation(const bf16* now, const bf16* cached, int kv_heads, int tokens, int head_dim, float* out,
                                cudaStream_t stream) {
  if (kv_heads <= 0 || tokens <= 0 || head_dim <= 0) return cudaErrorInvalidValue;
  kv_deviation_kernel<<<tokens, threads, 0, stream>>>(now, cached, kv_heads, tokens, head_dim, out);
  return cudaGetLastError();
}

cudaError_t launch_gather_rows(const float* src, const int* rows, int count, int width, float* dst,
                               cudaStream_t stream) {
  if (count <= 0 || width <= 0) return cudaErrorInvalidValue;
  gather_rows_kernel<<<count, 256, 0, stream>>>(src, rows, width, dst);
  return cudaGetLastError();
}

}  // namespace kvflow::cuda
