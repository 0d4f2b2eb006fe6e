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

/// One chunk job of a fused forward (launch_qkv_rope_jobs): its rows
/// [row0, row0 + count) of the launch are tokens at [pos0, pos0 + count),
/// written to its own KV block of count tokens.
struct rope_job {
  __nv_bfloat16* kv;  // the block: [layers][2][kv_heads][count][head_dim]
  int row0, count, pos0, pad;
};

/// As launch_qkv_rope for the rows of several jobs in one launch (jobs
/// ascending by row0, covering [0, rows)): row t of job j gets position
/// pos0 + t - row0, its K/V go to slot t - row0 of layer `layer` of j's
/// block. The same arithmetic per row as launch_qkv_rope, so the same bits.
/// `jobs` on the device; `host_jobs` the same list on the host (checked for
/// 16-byte alignment to pick the kernel).
cudaError_t launch_qkv_rope_jobs(const __nv_bfloat16* qkv, int rows, const rope_job* jobs, const rope_job* host_jobs,
                                 int num_jobs, int layer, const float* inv_freq, int heads, int kv_heads, int head_dim,
                                 __nv_bfloat16* q_out, cudaStream_t stream);

}  // namespace kvflow::cuda
