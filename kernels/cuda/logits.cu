#include "kernels/cuda/common.cuh"
#include "kernels/cuda/logits.cuh"

namespace kvflow::cuda {
namespace {

template <bool vec>
__global__ void logits_kernel(const float* x, const bf16* w, int vocab, int hidden, float* out) {
  const int row = blockIdx.x * (blockDim.x / 32) + (threadIdx.x >> 5);
  const int lane = threadIdx.x & 31;
  if (row >= vocab) return;
  const bf16* wr = w + static_cast<std::size_t>(row) * hidden;
  float acc = 0.0f;
  if (vec) {
    for (int c = lane * 8; c < hidden; c += 32 * 8) {
      const uint4 wv = *reinterpret_cast<const uint4*>(wr + c);
      const __nv_bfloat162* w2 = reinterpret_cast<const __nv_bfloat162*>(&wv);
#pragma unroll
      for (int k = 0; k < 4; ++k) {
        const float2 f = __bfloat1622float2(w2[k]);
        acc = fmaf(f.x, x[c + 2 * k], acc);
        acc = fmaf(f.y, x[c + 2 * k + 1], acc);
      }
    }
  } else {
    for (int c = lane; c < hidden; c += 32) acc = fmaf(__bfloat162float(wr[c]), x[c], acc);
  }
  acc = warp_sum(acc);
  if (lane == 0) out[row] = acc;
}

}  // namespace

cudaError_t launch_logits(const float* x, const bf16* w, int vocab, int hidden, float* out, cudaStream_t stream) {
  const int warps = 8;
  const int blocks = (vocab + warps - 1) / warps;
  if (hidden % 8 == 0) {
    logits_kernel<true><<<blocks, warps * 32, 0, stream>>>(x, w, vocab, hidden, out);
  } else {
    logits_kernel<false><<<blocks, warps * 32, 0, stream>>>(x, w, vocab, hidden, out);
  }
  return cudaGetLastError();
}

}  // namespace kvflow::cuda
