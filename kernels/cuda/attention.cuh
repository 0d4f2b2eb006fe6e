#pragma once
// Causal grouped-query attention of a chunk of queries over all earlier KV
// (a list of chunk blocks) plus the chunk itself; decode is a chunk of one.
//
// FlashAttention-2 style: a block holds 64 query rows of one KV head (rows
// are (token, query head of the group) pairs, so GQA heads share each K/V
// tile), 4 warps of 16 rows, K/V tiles of 64 keys double-buffered in shared
// memory by cp.async, S = QK^T and O += PV on mma.sync bf16 tensor cores with
// fp32 accumulation, online softmax in fp32. On a compute-capability-9.0
// device head_dim 64 and 128 run the Hopper kernel instead
// (attention_sm90.cuh: wgmma, warp specialisation, ping-pong softmax), under
// the same invariance rule with 128-key tiles.
//
// Invariance rule (chunked prefill == one-shot prefill, bitwise): every query
// row walks key tiles [64 t, 64 t + 64) aligned to ABSOLUTE positions, in
// increasing t, with a fixed per-lane split of each tile, whatever the chunk
// and block boundaries are (a tile may straddle blocks; rows are gathered per
// key). A row's result depends only on its own query and the keys, never on
// the other rows of its launch; tiles past a row's causal limit are exact
// no-ops (scale 1, probabilities 0).

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

namespace kvflow::cuda {

/// One chunk block in the table the kernel reads (device memory).
struct attn_block {
  const __nv_bfloat16* data;  // [layers][2][kv_heads][tokens][head_dim]
  int start;                  // position of its first token
  int tokens;
};

/// Head dims with a kernel: 16, 32, 64, 128.
bool attention_supports(int head_dim);

/// The kernel behind launch_attention: `automatic` takes the Hopper wgmma
/// kernel (attention_sm90.cuh) for head_dim 64 and 128 on a compute-capability-9.0
/// device and the mma.sync kernel otherwise; `mma_sync` forces the latter
/// (benchmarks compare the two). The two differ in their bits, so a run
/// must use one kind throughout.
enum class attention_kind { automatic, mma_sync };

/// Queries at positions [pos0, pos0 + count) attend causally to keys at
/// [0, pos0 + count), found in `blocks` (position order, covering them all;
/// the chunk's own block last). `layer` selects the layer inside each block.
cudaError_t launch_attention(const __nv_bfloat16* q,  // [count][heads * head_dim]
                             int count, int pos0,
                             const attn_block* blocks,  // [num_blocks], device
                             int num_blocks, int layer, int heads, int kv_heads, int head_dim, float scale,
                             __nv_bfloat16* out,  // [count][heads * head_dim]
                             cudaStream_t stream, attention_kind kind = attention_kind::automatic);

/// Splits of the keys for launch_attention_at: enough (token, head) blocks
/// to fill the device when few queries attend to a long context (1 when the
/// queries alone fill it). `kv_end`: one past the last query's position.
int attention_splits(int count, int heads, int kv_heads, int kv_end);

/// Queries at arbitrary ascending positions (selective recompute): row t
/// attends causally to keys [0, positions[t]] of `blocks` (position order),
/// `kv_end` = positions[count - 1] + 1. With splits > 1 each block walks a
/// share of the key tiles (flash-decoding) into `part` (device, at least
/// splits * count * heads * (head_dim + 2) floats) and a second kernel
/// merges them; with splits == 1 a row's bits equal launch_attention's for
/// the same position (the same tiles, the same order).
cudaError_t launch_attention_at(const __nv_bfloat16* q,  // [count][heads * head_dim]
                                int count,
                                const int* positions,  // [count] device
                                int kv_end, const attn_block* blocks, int num_blocks, int layer, int heads,
                                int kv_heads, int head_dim, float scale, int splits, float* part,
                                __nv_bfloat16* out,  // [count][heads * head_dim]
                                cudaStream_t stream);

}  // namespace kvflow::cuda
