#include "kernels/cpu/attention.hpp"

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "kernels/cpu/simd.hpp"
#include "messages/error.hpp"

namespace kvflow::cpu {
namespace {

using simd::v16;

constexpr int key_tile = 32;  // keys per score tile: two v16
constexpr int vec_block = 4;  // query vectors that share each K load
constexpr int row_block = 4;  // query rows per task

// scores[v][j] = sum_d q_v[d] * k_j[d] for the key tiles covering [0, keys)
// of vectors [0, nv) (nv a multiple of vec_block; qs padded by the caller).
// Each score is summed over d = 0, 1, ... from +0, whatever the tile.
inline __attribute__((always_inline)) void score_tiles(const float* const* qs, int nv, const int* keys_of,
                                                       const float* kt, int head_dim, float* scores,
                                                       int scores_stride) {
  for (int v0 = 0; v0 < nv; v0 += vec_block) {
    int keys = 0;
    for (int b = 0; b < vec_block; ++b) keys = std::max(keys, keys_of[v0 + b]);
    const float* q0 = qs[v0];
    const float* q1 = qs[v0 + 1];
    const float* q2 = qs[v0 + 2];
    const float* q3 = qs[v0 + 3];
    for (int t = 0; t < keys; t += key_tile) {
      v16 a00{}, a01{}, a10{}, a11{}, a20{}, a21{}, a30{}, a31{};
      for (int d = 0; d < head_dim; ++d) {
        const float* row = kt + (static_cast<std::size_t>(t) * head_dim + static_cast<std::size_t>(d) * key_tile);
        v16 k0, k1;
        simd::load(k0, row);
        simd::load(k1, row + 16);
        a00 = a00 + q0[d] * k0;
        a01 = a01 + q0[d] * k1;
        a10 = a10 + q1[d] * k0;
        a11 = a11 + q1[d] * k1;
        a20 = a20 + q2[d] * k0;
        a21 = a21 + q2[d] * k1;
        a30 = a30 + q3[d] * k0;
        a31 = a31 + q3[d] * k1;
      }
      float* s = scores + static_cast<std::size_t>(v0) * scores_stride + t;
      simd::store(s, a00);
      simd::store(s + 16, a01);
      s += scores_stride;
      simd::store(s, a10);
      simd::store(s + 16, a11);
      s += scores_stride;
      simd::store(s, a20);
      simd::store(s + 16, a21);
      s += scores_stride;
      simd::store(s, a30);
      simd::store(s + 16, a31);
    }
  }
}

// In place: s[j] = exp(s[j] * scale - max) for j < n; returns the sum, taken in
// 16 lanes by j mod 16, then the lanes in order, then the tail.
inline __attribute__((always_inline)) float softmax_numerators(float* s, int n, float scale) {
  float m = -INFINITY;
  for (int j = 0; j < n; ++j) {
    s[j] = s[j] * scale;
    m = std::max(m, s[j]);
  }
  for (int j = 0; j < n; ++j) s[j] = simd::exp_approx(s[j] - m);
  v16 acc{};
  int j = 0;
  for (; j + 16 <= n; j += 16) {
    v16 x;
    simd::load(x, s + j);
    acc = acc + x;
  }
  float sum = 0.0f;
  for (int l = 0; l < 16; ++l) sum += acc[l];
  for (; j < n; ++j) sum += s[j];
  return sum;
}

// o_v = sum_j p_v[j] * V[j] / sum_v over keys j < n, added one key at a time in
// position order; V rows through v_rows. H16 = head_dim / 16, NV vectors
// (of one query row, so the same n) share each V load.
template <int H16, int NV>
inline __attribute__((always_inline)) void weigh_values(const float* const* p, int n, const float* const* v_rows,
                                                        const float* sums, float* const* outs) {
  v16 acc[NV][H16];
  for (int a = 0; a < NV; ++a)
    for (int i = 0; i < H16; ++i) acc[a][i] = v16{};
  for (int j = 0; j < n; ++j) {
    const float* v = v_rows[j];
    for (int i = 0; i < H16; ++i) {
      v16 x;
      simd::load(x, v + static_cast<std::size_t>(16) * i);
      for (int a = 0; a < NV; ++a) acc[a][i] = acc[a][i] + p[a][j] * x;
    }
  }
  for (int a = 0; a < NV; ++a)
    for (int i = 0; i < H16; ++i) simd::store(outs[a] + static_cast<std::size_t>(16) * i, acc[a][i] / sums[a]);
}

// Any head_dim: the same order, one vector at a time.
inline __attribute__((always_inline)) void weigh_values_any(const float* p, int n, const float* const* v_rows,
                                                            float sum, float* out, int head_dim) {
  for (int d = 0; d < head_dim; ++d) out[d] = 0.0f;
  for (int j = 0; j < n; ++j) {
    const float* v = v_rows[j];
    for (int d = 0; d < head_dim; ++d) out[d] = out[d] + p[j] * v[d];
  }
  for (int d = 0; d < head_dim; ++d) out[d] = out[d] / sum;
}

struct block_args {
  const float* const* qs;  // [nv (padded)] query vectors; vector v is row v / group
  const int* keys_of;      // [nv (padded)] keys each vector sees
  int nv;                  // real vectors
  int nv_padded;
  int group;
  const float* kt;             // [tiles][head_dim][key_tile]
  const float* const* v_rows;  // [keys]
  int head_dim;
  float scale;
  float* scores;  // [nv_padded][scores_stride]
  int scores_stride;
  float* sums;         // [nv_padded]
  float* const* outs;  // [nv]
};

// One task: the vectors of a few query rows of one kv head.
KVFLOW_CPU_CLONES
void attend_block(const block_args& b) {
  score_tiles(b.qs, b.nv_padded, b.keys_of, b.kt, b.head_dim, b.scores, b.scores_stride);
  const float* rows[2];
  for (int v = 0; v < b.nv; ++v) {
    b.sums[v] = softmax_numerators(b.scores + static_cast<std::size_t>(v) * b.scores_stride, b.keys_of[v], b.scale);
  }
  for (int v = 0; v < b.nv;) {
    // Pairs of vectors of the same row (same key count), else one.
    int nv = (v + 1 < b.nv && (v + 1) / b.group == v / b.group) ? 2 : 1;
    rows[0] = b.scores + static_cast<std::size_t>(v) * b.scores_stride;
    rows[1] = rows[0] + b.scores_stride;
    int n = b.keys_of[v];
    if (b.head_dim == 64 && nv == 2) {
      weigh_values<4, 2>(rows, n, b.v_rows, b.sums + v, b.outs + v);
    } else if (b.head_dim == 64) {
      weigh_values<4, 1>(rows, n, b.v_rows, b.sums + v, b.outs + v);
    } else if (b.head_dim == 128 && nv == 2) {
      weigh_values<8, 2>(rows, n, b.v_rows, b.sums + v, b.outs + v);
    } else if (b.head_dim == 128) {
      weigh_values<8, 1>(rows, n, b.v_rows, b.sums + v, b.outs + v);
    } else {
      nv = 1;
      weigh_values_any(rows[0], n, b.v_rows, b.sums[v], b.outs[v], b.head_dim);
    }
    v += nv;
  }
}

struct task_buffers {
  std::vector<float> scores;
  std::vector<float> sums;
  std::vector<const float*> qs;
  std::vector<int> keys_of;
  std::vector<float*> outs;
};

}  // namespace

void attention(thread_pool* pool, const float* q, int count, int q_stride, int pos0, const kv_segment* segments,
               int segment_count, int heads, int kv_heads, int head_dim, float* out, int out_stride) {
  if (count <= 0) return;
  if (heads <= 0 || kv_heads <= 0 || heads % kv_heads != 0 || head_dim <= 0 || pos0 < 0) {
    throw error(errc::invalid_argument, "attention: heads " + std::to_string(heads) + ", kv_heads " +
                                            std::to_string(kv_heads) + ", head_dim " + std::to_string(head_dim) +
                                            ", pos0 " + std::to_string(pos0));
  }
  long long available = 0;
  for (int s = 0; s < segment_count; ++s) available += segments[s].tokens;
  const int keys = pos0 + count;
  if (available < keys) {
    throw error(errc::invalid_argument, "attention: " + std::to_string(available) +
                                            " keys for queries up to position " + std::to_string(keys - 1));
  }
  const int group = heads / kv_heads;
  const int padded = (keys + key_tile - 1) / key_tile * key_tile;
  const float scale = 1.0f / std::sqrt(static_cast<float>(head_dim));

  // K transposed per kv head in tiles of 32 keys, [kv_head][tile][head_dim][32],
  // so that scores vectorize over keys and a tile is contiguous; V rows are
  // read in place.
  thread_local std::vector<float> kt_storage;
  std::vector<float>& kt = kt_storage;  // the caller's, also inside the tasks
  kt.assign(static_cast<std::size_t>(kv_heads) * head_dim * padded, 0.0f);
  std::vector<const float*> v_rows(static_cast<std::size_t>(kv_heads) * keys);
  parallel_for(pool, kv_heads, [&](int g) {
    float* dst = kt.data() + static_cast<std::size_t>(g) * head_dim * padded;
    int j = 0;
    for (int s = 0; s < segment_count && j < keys; ++s) {
      const kv_segment& seg = segments[s];
      std::size_t base = static_cast<std::size_t>(g) * seg.tokens * head_dim;
      for (int t = 0; t < seg.tokens && j < keys; ++t, ++j) {
        const float* k = seg.k + base + static_cast<std::size_t>(t) * head_dim;
        float* tile = dst + static_cast<std::size_t>(j / key_tile) * head_dim * key_tile + j % key_tile;
        for (int d = 0; d < head_dim; ++d) tile[static_cast<std::size_t>(d) * key_tile] = k[d];
        v_rows[static_cast<std::size_t>(g) * keys + j] = seg.v + base + static_cast<std::size_t>(t) * head_dim;
      }
    }
  });

  const int blocks = (count + row_block - 1) / row_block;
  parallel_for(pool, kv_heads * blocks, [&](int task) {
    const int g = task % kv_heads;
    const int r0 = (task / kv_heads) * row_block;
    const int r1 = std::min(count, r0 + row_block);
    const int nv = (r1 - r0) * group;
    const int max_keys = pos0 + r1;
    const int stride = (max_keys + key_tile - 1) / key_tile * key_tile;
    thread_local task_buffers buf;
    const int nv_padded = (nv + vec_block - 1) / vec_block * vec_block;
    buf.scores.resize(static_cast<std::size_t>(nv_padded) * stride);
    buf.sums.resize(nv_padded);
    buf.qs.resize(nv_padded);
    buf.keys_of.resize(nv_padded);
    buf.outs.resize(nv);
    for (int v = 0; v < nv_padded; ++v) {
      // Padding vectors repeat the last real one; their scores are ignored.
      int vv = std::min(v, nv - 1);
      int r = r0 + vv / group, h = g * group + vv % group;
      buf.qs[v] = q + static_cast<std::size_t>(r) * q_stride + static_cast<std::size_t>(h) * head_dim;
      buf.keys_of[v] = pos0 + r + 1;
      if (v < nv) buf.outs[v] = out + static_cast<std::size_t>(r) * out_stride + static_cast<std::size_t>(h) * head_dim;
    }
    block_args a;
    a.qs = buf.qs.data();
    a.keys_of = buf.keys_of.data();
    a.nv = nv;
    a.nv_padded = nv_padded;
    a.group = group;
    a.kt = kt.data() + static_cast<std::size_t>(g) * head_dim * padded;
    a.v_rows = v_rows.data() + static_cast<std::size_t>(g) * keys;
    a.head_dim = head_dim;
    a.scale = scale;
    a.scores = buf.scores.data();
    a.scores_stride = stride;
    a.sums = buf.sums.data();
    a.outs = buf.outs.data();
    attend_block(a);
  });
}

}  // namespace kvflow::cpu
