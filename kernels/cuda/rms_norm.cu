#include "kernels/cuda/common.cuh"
#include "kernels/cuda/rms_norm.cuh"

namespace kvflow::cuda {
namespace {

template <typename T>
__device__ __forceinline__ T from_float(float v);
template <>
__device__ __forceinline__ float from_float<float>(float v) {
  return v;
}
template <>
__device__ __forceinline__ bf16 from_float<bf16>(float v) {
  return __float2bfloat16(v);
}

template <typename T>
__global__ void rms_norm_kernel(const float* x, const float* w, float eps, int n, T* y) {
  __shared__ float scratch[32];
  const float* row = x + static_cast<std::size_t>(blockIdx.x) * n;
  T* out = y + static_cast<std::size_t>(blockIdx.x) * n;
  float ss = 0.0f;
  for (int i = threadIdx.x; i < n; i += blockDim.x) ss = fmaf(row[i], row[i], ss);
  const float total = block_sum(ss, scratch);
  const float inv = rsqrtf(total / static_cast<float>(n) + eps);
  for (int i = threadIdx.x; i < n; i += blockDim.x) out[i] = from_float<T>(row[i] * inv * w[i]);
}

template <typename T>
cudaError_t launch(const float* x, const float* w, float eps, int rows, int n, T* y, cudaStream_t stream) {
  if (rows <= 0) return cudaSuccess;
  rms_norm_kernel<T><<<rows, 256, 0, stream>>>(x, w, eps, n, y);
  return cudaGetLastError();
}

}  // namespace

cudaError_t launch_rms_norm(const float* x, const float* w, float eps, int rows, int n, bf16* y, cudaStream_t stream) {
  return launch<bf16>(x, w, eps, rows, n, y, stream);
}

cudaError_t launch_rms_norm_f32(const float* x, const float* w, float eps, int rows, int n, float* y,
                                cudaStream_t stream) {
  return launch<float>(x, w, eps, rows, n, y, stream);
}

}  // namespace kvflow::cuda
