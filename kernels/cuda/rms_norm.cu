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

// Four outputs at out[i..i+3] in one store (8 bytes bf16, 16 bytes fp32).
__device__ __forceinline__ void store4(bf16* out, float a, float b, float c, float d) {
  uint2 v;
  v.x = pack_bf16(a, b);
  v.y = pack_bf16(c, d);
  *reinterpret_cast<uint2*>(out) = v;
}
__device__ __forceinline__ void store4(float* out, float a, float b, float c, float d) {
  *reinterpret_cast<float4*>(out) = make_float4(a, b, c, d);
}

// One block per row, n a multiple of 4: each thread holds its V float4s of
// the row in registers (the row is read from memory once), so the kernel
// moves 4n bytes in and 2n (bf16) out per row at full width. A thread sums
// its squares in a fixed order, then block_sum: a row's result depends on
// that row alone.
template <typename T, int V>
__global__ void rms_norm_vec4(const float* x, const float* w, float eps, int n, T* y) {
  __shared__ float scratch[32];
  const int n4 = n >> 2;
  const float4* row = reinterpret_cast<const float4*>(x + static_cast<std::size_t>(blockIdx.x) * n);
  T* out = y + static_cast<std::size_t>(blockIdx.x) * n;
  float4 v[V];
  float ss = 0.0f;
#pragma unroll
  for (int k = 0; k < V; ++k) {
    const int i = threadIdx.x + k * blockDim.x;
    v[k] = i < n4 ? row[i] : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    ss = fmaf(v[k].x, v[k].x, ss);
    ss = fmaf(v[k].y, v[k].y, ss);
    ss = fmaf(v[k].z, v[k].z, ss);
    ss = fmaf(v[k].w, v[k].w, ss);
  }
  const float total = block_sum(ss, scratch);
  const float inv = rsqrtf(total / static_cast<float>(n) + eps);
  const float4* w4 = reinterpret_cast<const float4*>(w);
#pragma unroll
  for (int k = 0; k < V; ++k) {
    const int i = threadIdx.x + k * blockDim.x;
    if (i < n4) {
      const float4 s = w4[i];
      store4(out + 4 * i, v[k].x * inv * s.x, v[k].y * inv * s.y, v[k].z * inv * s.z, v[k].w * inv * s.w);
    }
  }
}

// Any n (and pointers not 16-byte aligned): one element a thread at a time.
template <typename T>
__global__ void rms_norm_scalar(const float* x, const float* w, float eps, int n, T* y) {
  __shared__ float scratch[32];
  const float* row = x + static_cast<std::size_t>(blockIdx.x) * n;
  T* out = y + static_cast<std::size_t>(blockIdx.x) * n;
  float ss = 0.0f;
  for (int i = threadIdx.x; i < n; i += blockDim.x) ss = fmaf(row[i], row[i], ss);
  const float total = block_sum(ss, scratch);
  const float inv = rsqrtf(total / static_cast<float>(n) + eps);
  for (int i = threadIdx.x; i < n; i += blockDim.x) out[i] = from_float<T>(row[i] * inv * w[i]);
}

bool aligned16(const void* p) { return (reinterpret_cast<std::uintptr_t>(p) & 15u) == 0; }

template <typename T>
cudaError_t launch(const float* x, const float* w, float eps, int rows, int n, T* y, cudaStream_t stream) {
  if (rows <= 0) return cudaSuccess;
  const int n4 = n / 4;
  const int max_threads = 256;
  // Whole rows in registers up to 8 float4s a thread (n <= 8192); row
  // strides of n floats keep every row 16-byte aligned when n % 4 == 0.
  if (n % 4 == 0 && n4 <= 8 * max_threads && aligned16(x) && aligned16(w) && aligned16(y)) {
    const int threads = n4 >= max_threads ? max_threads : (n4 + 31) / 32 * 32;
    const int per = (n4 + threads - 1) / threads;
    if (per <= 1)
      rms_norm_vec4<T, 1><<<rows, threads, 0, stream>>>(x, w, eps, n, y);
    else if (per <= 2)
      rms_norm_vec4<T, 2><<<rows, threads, 0, stream>>>(x, w, eps, n, y);
    else if (per <= 4)
      rms_norm_vec4<T, 4><<<rows, threads, 0, stream>>>(x, w, eps, n, y);
    else
      rms_norm_vec4<T, 8><<<rows, threads, 0, stream>>>(x, w, eps, n, y);
  } else {
    rms_norm_scalar<T><<<rows, max_threads, 0, stream>>>(x, w, eps, n, y);
  }
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
