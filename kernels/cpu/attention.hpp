#pragma once
// Grouped-query causal attention of a chunk of queries over all earlier keys
// (decode is a chunk of one).

#include "kernels/cpu/thread_pool.hpp"

namespace kvflow::cpu {

/// A run of consecutive key positions of one layer.
struct kv_segment {
  const float* k = nullptr;  // [kv_heads][tokens][head_dim], post-RoPE
  const float* v = nullptr;  // [kv_heads][tokens][head_dim]
  int tokens = 0;
};

/// Attention of `count` query rows at positions [pos0, pos0 + count): q row r
/// at q + r * q_stride holds `heads` heads of head_dim (post-RoPE), and query
/// head h reads kv head h / (heads / kv_heads). The keys are the segments one
/// after another from position 0; query r sees keys [0, pos0 + r] (causal).
/// out rows as q's at out_stride: softmax(q k^T / sqrt(head_dim)) v.
/// Every output element is computed in an order fixed by absolute positions
/// (keys from 0 upward), so it is bitwise the same however the keys are split
/// into segments, the queries into chunks, or the work over the pool.
/// Throws kvflow::error(invalid_argument) when the segments hold fewer than
/// pos0 + count keys or the head counts do not divide.
void attention(thread_pool* pool, const float* q, int count, int q_stride, int pos0, const kv_segment* segments,
               int segment_count, int heads, int kv_heads, int head_dim, float* out, int out_stride);

}  // namespace kvflow::cpu
