#pragma once
// Moving cached K to a new position (non-prefix reuse, CacheTune/CacheBlend):
// RoPE is a rotation per pair, R(p + d) = R(d) R(p), so a K computed at
// position p becomes the K at p + d by one more rotation by d. A document's
// KV computed from position 0 is placed anywhere in a prompt this way
// instead of being recomputed.

#include "kernels/model/kv_layout.hpp"

namespace kvflow::cpu {

/// Rotates `rows` K rows by `delta` positions in place (HF rotate-half pairs,
/// as rope()): row r of head h starts at k + h * head_stride + r * head_dim.
/// The angle is delta * inv_freq[i] in double, so that a delta of 100k keeps
/// its precision. delta may be negative (moving K back).
void rope_delta(float* k, int heads, int head_stride, int rows, int head_dim, int delta, const float* inv_freq);

/// rope_delta on the K of every layer of an f32 block, tokens [token_begin,
/// token_begin + count). Throws kvflow::error(invalid_argument) when the
/// range is outside the block or the block is not f32.
void rope_delta_block(void* block, const model::kv_shape& shape, int token_begin, int count, int delta,
                      const float* inv_freq);

}  // namespace kvflow::cpu
