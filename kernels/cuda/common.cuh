#pragma once
// Device helpers shared by the kernels: bf16 packing and fixed-order
// reductions. Included by .cu files only.

#include <cuda_bf16.h>

#include <cstdint>

#include "messages/mix.hpp"

namespace kvflow::cuda {

using bf16 = __nv_bfloat16;

/// Shared-memory address of a generic pointer (for PTX operands).
__device__ __forceinline__ unsigned smem_u32(const void* p) {
  return static_cast<unsigned>(__cvta_generic_to_shared(p));
}

/// 2^x on the special function unit (one instruction, flush-to-zero).
__device__ __forceinline__ float fast_exp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

/// Two floats as a bf16 pair (round to nearest), lo in the low half.
__device__ __forceinline__ unsigned pack_bf16(float lo, float hi) {
  __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<unsigned*>(&v);
}

/// Sum over a warp in a fixed butterfly order (same result on every lane).
__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

/// Sum over a block of blockDim.x (a multiple of 32, at most 1024) threads in
/// a fixed order: warps first, then the warp sums by warp 0. `scratch` holds
/// 32 floats. Every thread gets the total.
__device__ __forceinline__ float block_sum(float v, float* scratch) {
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  v = warp_sum(v);
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  const int warps = blockDim.x >> 5;
  float t = lane < warps ? scratch[lane] : 0.0f;
  t = warp_sum(t);
  __syncthreads();
  return t;
}

}  // namespace kvflow::cuda
