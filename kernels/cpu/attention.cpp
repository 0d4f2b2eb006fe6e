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

constexpr int key_tile = 64;  // keys per score tile: four v16
constexpr int row_block = 4;  // query rows per task

// scores[v][j] = sum_d q_v[d] * kt[d][j] for the key tiles covering [0, keys):
// each score is summed over d = 0, 1, ... from +0, whatever the tile.
KVFLOW_CPU_CLONES
void score_tiles(const float* const* qs, int nv, const float* kt, int kt_stride, int head_dim, int keys,
                 float* scores, int scores_stride) {
  for (int t = 0; t < keys; t += key_tile) {
    for (int v = 0; v < nv; ++v) {
      const float* qv = qs[v];
      v16 a0{}, a1{}, a2{}, a3{};
      for (int d = 0; d < head_dim; ++d) {
        const float* row = kt + static_cast<std::size_t>(d) * kt_stride + t;
        float qd = qv[d];
        a0 = a0 + qd * simd::load(row);
        a1 = a1 + qd * simd::load(row + 16);
        a2 = a2 + qd * simd::load(row + 32);
        a3 = a3 + qd * simd::load(row + 48);
      }
      float* s = scores + static_cast<std::size_t>(v) * scores_stride + t;
      simd::store(s, a0);
      simd::store(s + 16, a1);
      simd::store(s + 32, a2);
      simd::store(s + 48, a3);
    }
  }
}

// In place: s[j] = exp(s[j] * scale - max) for j < n; returns the sum, taken in
// 16 lanes by j mod 16, then the lanes in order, then the tail.
KVFLOW_CPU_CLONES
float softmax_numerators(float* s, int n, float scale) {
  float m = -INFINITY;
  for (int j = 0; j < n; ++j) {
    s[j] = s[j] * scale;
    m = std::max(m, s[j]);
  }
  for (int j = 0; j < n; ++j) s[j] = simd::exp_approx(s[j] - m);
  v16 acc{};
  int j = 0;
  for (; j + 16 <= n; j += 16) acc = acc + simd::load(s + j);
  float sum = 0.0f;
  for (int l = 0; l < 16; ++l) sum += acc[l];
  for (; j < n; ++j) sum += s[j];
  return sum;
}

// o[d] += p * v[d]: keys are added one at a time, in position order.
KVFLOW_CPU_CLONES
void accumulate_row(float* o, float p, const float* v, int head_dim) {
  for (int d = 0; d < head_dim; ++d) o[d] = o[d] + p * v[d];
}

struct task_buffers {
  std::vector<float> scores;
  std::vector<float> acc;
  std::vector<const float*> qs;
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
    throw error(errc::invalid_argument, "attention: " + std::to_string(available) + " keys for queries up to position " +
                                            std::to_string(keys - 1));
  }
  const int group = heads / kv_heads;
  const int padded = (keys + key_tile - 1) / key_tile * key_tile;
  const float scale = 1.0f / std::sqrt(static_cast<float>(head_dim));

  // K transposed per kv head, [kv_head][head_dim][padded], so that scores
  // vectorize over keys; V rows are read in place.
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
        for (int d = 0; d < head_dim; ++d) dst[static_cast<std::size_t>(d) * padded + j] = k[d];
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
    buf.scores.resize(static_cast<std::size_t>(nv) * stride);
    buf.acc.assign(static_cast<std::size_t>(nv) * head_dim, 0.0f);
    buf.qs.resize(nv);
    for (int r = r0; r < r1; ++r) {
      for (int h = 0; h < group; ++h) {
        buf.qs[(r - r0) * group + h] =
            q + static_cast<std::size_t>(r) * q_stride + static_cast<std::size_t>(g * group + h) * head_dim;
      }
    }
    score_tiles(buf.qs.data(), nv, kt.data() + static_cast<std::size_t>(g) * head_dim * padded, padded, head_dim,
                max_keys, buf.scores.data(), stride);
    std::vector<float> sums(nv);
    for (int v = 0; v < nv; ++v) {
      int n = pos0 + r0 + v / group + 1;
      sums[v] = softmax_numerators(buf.scores.data() + static_cast<std::size_t>(v) * stride, n, scale);
    }
    // Key-major so that each V row is loaded once for all vectors that see it.
    const float* const* vr = v_rows.data() + static_cast<std::size_t>(g) * keys;
    for (int j = 0; j < max_keys; ++j) {
      int first = j < pos0 + r0 ? 0 : (j - pos0 - r0) * group;  // vectors whose row sees key j
      for (int v = first; v < nv; ++v) {
        accumulate_row(buf.acc.data() + static_cast<std::size_t>(v) * head_dim,
                       buf.scores[static_cast<std::size_t>(v) * stride + j], vr[j], head_dim);
      }
    }
    for (int v = 0; v < nv; ++v) {
      int r = r0 + v / group, h = g * group + v % group;
      float* o = out + static_cast<std::size_t>(r) * out_stride + static_cast<std::size_t>(h) * head_dim;
      const float* a = buf.acc.data() + static_cast<std::size_t>(v) * head_dim;
      for (int d = 0; d < head_dim; ++d) o[d] = a[d] / sums[v];
    }
  });
}

}  // namespace kvflow::cpu
