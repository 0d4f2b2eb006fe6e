#include "kernels/cuda/common.cuh"
#include "kernels/cuda/rope_delta.cuh"

namespace kvflow::cuda {
namespace {

constexpr int rows_per_block = 4;

// threadIdx.x walks the head_dim/2 pairs of a row, threadIdx.y picks one of
// rows_per_block rows; a row is (layer, kv head, token) of K.
__global__ void rope_delta_kernel(bf16* block, int kv_heads, int tokens, int hd, int token_begin, int count,
                                  float delta, const float* inv_freq, long long rows) {
  const long long row = static_cast<long long>(blockIdx.x) * rows_per_block + threadIdx.y;
  if (row >= rows) return;
  const int half = hd >> 1;
  const int t = static_cast<int>(row % count);
  const long long lh = row / count;  // layer * kv_heads + head
  const long long layer = lh / kv_heads;
  const int head = static_cast<int>(lh - layer * kv_heads);
  // K of (layer, head) starts at ((layer * 2 + 0) * kv_heads + head) * tokens * hd.
  bf16* k = block + ((layer * 2 * kv_heads + head) * tokens + token_begin + t) * static_cast<long long>(hd);
  for (int i = threadIdx.x; i < half; i += blockDim.x) {
    float s, c;
    sincosf(delta * inv_freq[i], &s, &c);
    const float x0 = __bfloat162float(k[i]);
    const float x1 = __bfloat162float(k[i + half]);
    k[i] = __float2bfloat16(x0 * c - x1 * s);
    k[i + half] = __float2bfloat16(x1 * c + x0 * s);
  }
}

}  // namespace

cudaError_t launch_rope_delta(bf16* block, int layers, int kv_heads, int tokens, int head_dim, int token_begin,
                              int count, int delta, const float* inv_freq, cudaStream_t stream) {
  if (layers <= 0 || kv_heads <= 0 || head_dim <= 0 || (head_dim & 1) || token_begin < 0 || count < 0 ||
      token_begin + count > tokens)
    return cudaErrorInvalidValue;
  if (count == 0 || delta == 0) return cudaSuccess;
  const long long rows = static_cast<long long>(layers) * kv_heads * count;
  const dim3 threads(static_cast<unsigned>(head_dim / 2 < 128 ? head_dim / 2 : 128), rows_per_block);
  const dim3 grid(static_cast<unsigned>((rows + rows_per_block - 1) / rows_per_block));
  rope_delta_kernel<<<grid, threads, 0, stream>>>(block, kv_heads, tokens, head_dim, token_begin, count,
                                                  static_cast<float>(delta), inv_freq, rows);
  return cudaGetLastError();
}

}  // namespace kvflow::cuda
