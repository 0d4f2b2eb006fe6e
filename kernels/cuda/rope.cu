#include <cmath>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/rope.cuh"

namespace kvflow::cuda {

std::vector<float> rope_inv_freq(const model::config& c) {
  const int half = c.head_dim / 2;
  std::vector<float> f(static_cast<std::size_t>(half));
  for (int i = 0; i < half; ++i) {
    // As torch: 1 / base ** (arange(0, dim, 2).float() / dim), in fp32.
    const float expo = static_cast<float>(2 * i) / static_cast<float>(c.head_dim);
    f[i] = 1.0f / std::pow(c.rope_theta, expo);
  }
  if (!c.scaling.enabled) return f;
  const double pi = 3.14159265358979323846;
  const double factor = c.scaling.factor;
  const double low = c.scaling.low_freq_factor;
  const double high = c.scaling.high_freq_factor;
  const double old_len = c.scaling.original_max_positions;
  const double low_wavelen = old_len / low;
  const double high_wavelen = old_len / high;
  for (int i = 0; i < half; ++i) {
    const float inv = f[i];
    const float wavelen = static_cast<float>(2 * pi) / inv;
    float scaled = wavelen > static_cast<float>(low_wavelen) ? inv / static_cast<float>(factor) : inv;
    const bool medium = !(wavelen < static_cast<float>(high_wavelen)) && !(wavelen > static_cast<float>(low_wavelen));
    if (medium) {
      const float smooth =
          (static_cast<float>(old_len) / wavelen - static_cast<float>(low)) / static_cast<float>(high - low);
      scaled = (1.0f - smooth) * scaled / static_cast<float>(factor) + smooth * scaled;
    }
    f[i] = scaled;
  }
  return f;
}

namespace {

// One block per token: the head_dim/2 angles' sin/cos once into shared
// memory, then threads walk the (head, i < half) pairs of Q and K, then V.
// positions == null: token t at pos0 + t, stored at slot t of blocks of
// `count` tokens; else at positions[t], stored at that slot of blocks of
// `kv_tokens`.
__global__ void qkv_rope_kernel(const bf16* qkv, int count, int pos0, const int* positions, int kv_tokens,
                                const float* inv_freq, int heads, int kv_heads, int hd, bf16* q_out, bf16* k_out,
                                bf16* v_out) {
  extern __shared__ float sc[];  // [half] sin, then [half] cos
  const int t = blockIdx.x;
  const int half = hd >> 1;
  const int width = (heads + 2 * kv_heads) * hd;
  const bf16* row = qkv + static_cast<std::size_t>(t) * width;
  const int slot = positions ? positions[t] : t;
  const int stride = positions ? kv_tokens : count;
  const float pos = static_cast<float>(positions ? positions[t] : pos0 + t);
  for (int i = threadIdx.x; i < half; i += blockDim.x) sincosf(pos * inv_freq[i], &sc[i], &sc[half + i]);
  __syncthreads();
  const int qk_pairs = (heads + kv_heads) * half;
  for (int p = threadIdx.x; p < qk_pairs; p += blockDim.x) {
    const int head = p / half;  // 0..heads-1: Q, then K heads
    const int i = p - head * half;
    const float s = sc[i];
    const float c = sc[half + i];
    const bf16* src = row + head * hd;
    const float x0 = __bfloat162float(src[i]);
    const float x1 = __bfloat162float(src[i + half]);
    const float y0 = x0 * c - x1 * s;
    const float y1 = x1 * c + x0 * s;
    bf16* dst;
    if (head < heads) {
      dst = q_out + static_cast<std::size_t>(t) * heads * hd + head * hd;
    } else {
      dst = k_out + (static_cast<std::size_t>(head - heads) * stride + slot) * hd;
    }
    dst[i] = __float2bfloat16(y0);
    dst[i + half] = __float2bfloat16(y1);
  }
  const bf16* v = row + (heads + kv_heads) * hd;
  for (int e = threadIdx.x; e < kv_heads * hd; e += blockDim.x) {
    const int h = e / hd;
    const int d = e - h * hd;
    v_out[(static_cast<std::size_t>(h) * stride + slot) * hd + d] = v[e];
  }
}

}  // namespace

cudaError_t launch_qkv_rope(const bf16* qkv, int count, int pos0, const float* inv_freq, int heads, int kv_heads,
                            int head_dim, bf16* q_out, bf16* k_out, bf16* v_out, cudaStream_t stream) {
  if (count <= 0) return cudaSuccess;
  qkv_rope_kernel<<<count, 256, head_dim * sizeof(float), stream>>>(qkv, count, pos0, nullptr, count, inv_freq, heads,
                                                                    kv_heads, head_dim, q_out, k_out, v_out);
  return cudaGetLastError();
}

cudaError_t launch_qkv_rope_at(const bf16* qkv, int count, const int* positions, int kv_tokens, const float* inv_freq,
                               int heads, int kv_heads, int head_dim, bf16* q_out, bf16* k_out, bf16* v_out,
                               cudaStream_t stream) {
  if (count <= 0) return cudaSuccess;
  qkv_rope_kernel<<<count, 256, head_dim * sizeof(float), stream>>>(qkv, count, 0, positions, kv_tokens, inv_freq,
                                                                    heads, kv_heads, head_dim, q_out, k_out, v_out);
  return cudaGetLastError();
}

}  // namespace kvflow::cuda
