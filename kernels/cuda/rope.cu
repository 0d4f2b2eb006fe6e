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

// Where row t of a launch goes: its position, and its K and V rows (slot
// `slot` of blocks of `stride` tokens, [kv_heads][stride][head_dim]).
struct rows_spec {
  // Contiguous: row t at pos0 + t, slot t of k_out / v_out (count tokens).
  int count, pos0;
  // At positions: row t at positions[t], that slot of blocks of kv_tokens.
  const int* positions;
  int kv_tokens;
  bf16* k_out;
  bf16* v_out;
  // Jobs (launch_qkv_rope_jobs): row t belongs to the job whose rows hold it.
  const rope_job* jobs;
  int num_jobs, layer;
};

struct row_place {
  int pos, slot, stride;
  bf16* k;
  bf16* v;
};

__device__ __forceinline__ row_place place_of(const rows_spec& r, int t, int kv_heads, int hd) {
  if (r.jobs) {
    int j = 0;
    while (j + 1 < r.num_jobs && t >= r.jobs[j + 1].row0) ++j;
    const rope_job& jb = r.jobs[j];
    const std::size_t half_layer = static_cast<std::size_t>(kv_heads) * jb.count * hd;
    bf16* k = jb.kv + static_cast<std::size_t>(r.layer) * 2 * half_layer;
    return {jb.pos0 + (t - jb.row0), t - jb.row0, jb.count, k, k + half_layer};
  }
  if (r.positions) return {r.positions[t], r.positions[t], r.kv_tokens, r.k_out, r.v_out};
  return {r.pos0 + t, t, r.count, r.k_out, r.v_out};
}

// One block per token: the head_dim/2 angles' sin/cos once into shared
// memory, then threads walk the (head, i < half) pairs of Q and K, then V.
__global__ void qkv_rope_kernel(const bf16* qkv, rows_spec spec, const float* inv_freq, int heads, int kv_heads, int hd,
                                bf16* q_out) {
  extern __shared__ float sc[];  // [half] sin, then [half] cos
  const int t = blockIdx.x;
  const int half = hd >> 1;
  const int width = (heads + 2 * kv_heads) * hd;
  const bf16* row = qkv + static_cast<std::size_t>(t) * width;
  const row_place pl = place_of(spec, t, kv_heads, hd);
  const float pos = static_cast<float>(pl.pos);
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
      dst = pl.k + (static_cast<std::size_t>(head - heads) * pl.stride + pl.slot) * hd;
    }
    dst[i] = __float2bfloat16(y0);
    dst[i + half] = __float2bfloat16(y1);
  }
  const bf16* v = row + (heads + kv_heads) * hd;
  for (int e = threadIdx.x; e < kv_heads * hd; e += blockDim.x) {
    const int h = e / hd;
    const int d = e - h * hd;
    pl.v[(static_cast<std::size_t>(h) * pl.stride + pl.slot) * hd + d] = v[e];
  }
}

// As qkv_rope_kernel when head_dim % 16 == 0 and every pointer is 16-byte
// aligned: a thread rotates 8 consecutive pairs (i, i + half) of one head
// with two 16-byte loads and two 16-byte stores, and copies V 16 bytes at a
// time. The same fp32 arithmetic per element as qkv_rope_kernel, so the
// same bits.
__global__ void qkv_rope_vec8(const bf16* qkv, rows_spec spec, const float* inv_freq, int heads, int kv_heads, int hd,
                              bf16* q_out) {
  extern __shared__ float sc[];  // [half] sin, then [half] cos
  const int t = blockIdx.x;
  const int half = hd >> 1;
  const int groups = half >> 3;  // 8-pair groups per head
  const int width = (heads + 2 * kv_heads) * hd;
  const bf16* row = qkv + static_cast<std::size_t>(t) * width;
  const row_place pl = place_of(spec, t, kv_heads, hd);
  const float pos = static_cast<float>(pl.pos);
  for (int i = threadIdx.x; i < half; i += blockDim.x) sincosf(pos * inv_freq[i], &sc[i], &sc[half + i]);
  __syncthreads();
  const int qk_items = (heads + kv_heads) * groups;
  for (int p = threadIdx.x; p < qk_items; p += blockDim.x) {
    const int head = p / groups;  // 0..heads-1: Q, then K heads
    const int i0 = (p - head * groups) * 8;
    const bf16* src = row + head * hd;
    const uint4 a = *reinterpret_cast<const uint4*>(src + i0);
    const uint4 b = *reinterpret_cast<const uint4*>(src + half + i0);
    const __nv_bfloat162* a2 = reinterpret_cast<const __nv_bfloat162*>(&a);
    const __nv_bfloat162* b2 = reinterpret_cast<const __nv_bfloat162*>(&b);
    uint4 ya, yb;
    unsigned* ya_w = reinterpret_cast<unsigned*>(&ya);
    unsigned* yb_w = reinterpret_cast<unsigned*>(&yb);
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      const float2 x0 = __bfloat1622float2(a2[k]);
      const float2 x1 = __bfloat1622float2(b2[k]);
      const int i = i0 + 2 * k;
      const float s0 = sc[i], s1 = sc[i + 1];
      const float c0 = sc[half + i], c1 = sc[half + i + 1];
      ya_w[k] = pack_bf16(x0.x * c0 - x1.x * s0, x0.y * c1 - x1.y * s1);
      yb_w[k] = pack_bf16(x1.x * c0 + x0.x * s0, x1.y * c1 + x0.y * s1);
    }
    bf16* dst;
    if (head < heads) {
      dst = q_out + static_cast<std::size_t>(t) * heads * hd + head * hd;
    } else {
      dst = pl.k + (static_cast<std::size_t>(head - heads) * pl.stride + pl.slot) * hd;
    }
    *reinterpret_cast<uint4*>(dst + i0) = ya;
    *reinterpret_cast<uint4*>(dst + half + i0) = yb;
  }
  const bf16* v = row + (heads + kv_heads) * hd;
  const int v_items = kv_heads * hd / 8;
  for (int e = threadIdx.x; e < v_items; e += blockDim.x) {
    const int h = (e * 8) / hd;
    const int d = e * 8 - h * hd;
    *reinterpret_cast<uint4*>(pl.v + (static_cast<std::size_t>(h) * pl.stride + pl.slot) * hd + d) =
        *reinterpret_cast<const uint4*>(v + e * 8);
  }
}

bool aligned16(const void* p) { return (reinterpret_cast<std::uintptr_t>(p) & 15u) == 0; }

// `vec_ok`: the K/V pointers the rows go to are 16-byte aligned (checked by
// the caller: for jobs, on the host copy of the job list).
cudaError_t launch(const bf16* qkv, int rows, const rows_spec& spec, bool vec_ok, const float* inv_freq, int heads,
                   int kv_heads, int head_dim, bf16* q_out, cudaStream_t stream) {
  if (rows <= 0) return cudaSuccess;
  const std::size_t smem = head_dim * sizeof(float);
  if (vec_ok && head_dim % 16 == 0 && aligned16(qkv) && aligned16(q_out)) {
    // (heads + kv_heads) * head_dim / 16 rotations and kv_heads * head_dim / 8
    // copies a token: 448 for llama-3-8b, 128 threads a token.
    qkv_rope_vec8<<<rows, 128, smem, stream>>>(qkv, spec, inv_freq, heads, kv_heads, head_dim, q_out);
  } else {
    qkv_rope_kernel<<<rows, 256, smem, stream>>>(qkv, spec, inv_freq, heads, kv_heads, head_dim, q_out);
  }
  return cudaGetLastError();
}

}  // namespace

cudaError_t launch_qkv_rope(const bf16* qkv, int count, int pos0, const float* inv_freq, int heads, int kv_heads,
                            int head_dim, bf16* q_out, bf16* k_out, bf16* v_out, cudaStream_t stream) {
  const rows_spec spec{count, pos0, nullptr, count, k_out, v_out, nullptr, 0, 0};
  return launch(qkv, count, spec, aligned16(k_out) && aligned16(v_out), inv_freq, heads, kv_heads, head_dim, q_out,
                stream);
}

cudaError_t launch_qkv_rope_at(const bf16* qkv, int count, const int* positions, int kv_tokens, const float* inv_freq,
                               int heads, int kv_heads, int head_dim, bf16* q_out, bf16* k_out, bf16* v_out,
                               cudaStream_t stream) {
  const rows_spec spec{count, 0, positions, kv_tokens, k_out, v_out, nullptr, 0, 0};
  return launch(qkv, count, spec, aligned16(k_out) && aligned16(v_out), inv_freq, heads, kv_heads, head_dim, q_out,
                stream);
}

cudaError_t launch_qkv_rope_jobs(const bf16* qkv, int rows, const rope_job* jobs, const rope_job* host_jobs,
                                 int num_jobs, int layer, const float* inv_freq, int heads, int kv_heads, int head_dim,
                                 bf16* q_out, cudaStream_t stream) {
  if (num_jobs <= 0) return rows <= 0 ? cudaSuccess : cudaErrorInvalidValue;
  bool vec_ok = true;
  for (int j = 0; j < num_jobs; ++j) vec_ok = vec_ok && aligned16(host_jobs[j].kv);
  const rows_spec spec{rows, 0, nullptr, 0, nullptr, nullptr, jobs, num_jobs, layer};
  return launch(qkv, rows, spec, vec_ok, inv_freq, heads, kv_heads, head_dim, q_out, stream);
}

}  // namespace kvflow::cuda
