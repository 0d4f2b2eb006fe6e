#include "kernels/cuda/common.cuh"
#include "kernels/cuda/swiglu.cuh"

namespace kvflow::cuda {
namespace {

__device__ __forceinline__ float silu_mul(float g, float u) { return g / (1.0f + __expf(-g)) * u; }

// 8 elements (16 bytes) per thread when inter is a multiple of 8.
__global__ void swiglu_vec8(const bf16* gate_up, int count, int inter, bf16* out) {
  const std::size_t groups = static_cast<std::size_t>(count) * (inter / 8);
  for (std::size_t gi = blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x; gi < groups;
       gi += static_cast<std::size_t>(gridDim.x) * blockDim.x) {
    const std::size_t t = gi / (inter / 8);
    const int c = static_cast<int>(gi - t * (inter / 8)) * 8;
    const bf16* g = gate_up + t * 2 * inter + c;
    uint4 gv = *reinterpret_cast<const uint4*>(g);
    uint4 uv = *reinterpret_cast<const uint4*>(g + inter);
    const __nv_bfloat162* g2 = reinterpret_cast<const __nv_bfloat162*>(&gv);
    const __nv_bfloat162* u2 = reinterpret_cast<const __nv_bfloat162*>(&uv);
    uint4 ov;
    __nv_bfloat162* o2 = reinterpret_cast<__nv_bfloat162*>(&ov);
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      const float2 gf = __bfloat1622float2(g2[k]);
      const float2 uf = __bfloat1622float2(u2[k]);
      o2[k] = __floats2bfloat162_rn(silu_mul(gf.x, uf.x), silu_mul(gf.y, uf.y));
    }
    *reinterpret_cast<uint4*>(out + t * inter + c) = ov;
  }
}

__global__ void swiglu_scalar(const bf16* gate_up, int count, int inter, bf16* out) {
  const std::size_t n = static_cast<std::size_t>(count) * inter;
  for (std::size_t e = blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x; e < n;
       e += static_cast<std::size_t>(gridDim.x) * blockDim.x) {
    const std::size_t t = e / inter;
    const std::size_t i = e - t * inter;
    const float g = __bfloat162float(gate_up[t * 2 * inter + i]);
    const float u = __bfloat162float(gate_up[t * 2 * inter + inter + i]);
    out[e] = __float2bfloat16(silu_mul(g, u));
  }
}

}  // namespace

cudaError_t launch_swiglu(const bf16* gate_up, int count, int inter, bf16* out, cudaStream_t stream) {
  if (count <= 0) return cudaSuccess;
  const int threads = 256;
  if (inter % 8 == 0) {
    const std::size_t groups = static_cast<std::size_t>(count) * (inter / 8);
    const int blocks = static_cast<int>(std::min<std::size_t>((groups + threads - 1) / threads, 65535));
    swiglu_vec8<<<blocks, threads, 0, stream>>>(gate_up, count, inter, out);
  } else {
    const std::size_t n = static_cast<std::size_t>(count) * inter;
    const int blocks = static_cast<int>(std::min<std::size_t>((n + threads - 1) / threads, 65535));
    swiglu_scalar<<<blocks, threads, 0, stream>>>(gate_up, count, inter, out);
  }
  return cudaGetLastError();
}

}  // namespace kvflow::cuda
