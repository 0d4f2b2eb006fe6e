#pragma once
// Rotary position embedding (HF rotate-half pairs (i, i + head_dim/2)) on
// the fused QKV projection output, and the scatter of K and V into a chunk's
// KV block. Angles are position * inv_freq in fp32, sin/cos in fp32 with
// full range reduction; see rope_inv_freq for llama-3 scaling.

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <vector>

#include "kernels/model/config.hpp"

namespace kvflow::cuda {

/// inv_freq[i] for i < head_dim/2: theta^(-2i/head_dim), rescaled as HF's
/// _compute_llama3_parameters when c.scaling.enabled. Host side.
std::vector<float> rope_inv_freq(const model::config& c);

/// For each token t of a chunk at positions [pos0, pos0 + count):
/// q_out[t] = rope(q), k_out[kv_head][t] = rope(k), v_out[kv_head][t] = v.
cudaError_t launch_qkv_rope(const __nv_bfloat16* qkv,  // [count][(heads + 2 kv_heads) * head_dim]
                            int count, int pos0,
                            const float* inv_freq,  // [head_dim / 2], device
                            int heads, int kv_heads, int head_dim,
                            __nv_bfloat16* q_out,  // [count][heads * head_dim]
                            __nv_bfloat16* k_out,  // [kv_heads][count][head_dim]
                            __nv_bfloat16* v_out,  // [kv_heads][count][head_dim]
                            cudaStream_t stream);

/// As launch_qkv_rope for tokens at positions[t] (device, any order): RoPE
/// at that position, K and V written to that slot of a block of `kv_tokens`
/// ([kv_heads][kv_tokens][head_dim] for one layer's K and V halves).
cudaError_t launch_qkv_rope_at(const __nv_bfloat16* qkv, int count, const int* positions, int kv_tokens,
                               const float* inv_freq, int heads, int kv_heads, int head_dim, __nv_bfloat16* q_out,
                               __nv_bfloat16* k_out, __nv_bfloat16* v_out, cudaStream_t stream);

}  // namespace kvflow::cuda
