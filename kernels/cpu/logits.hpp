#pragma once
// The output projection of one row (OpenBLAS sgemv, threaded).

namespace kvflow::cpu {

/// out[v] = sum_i x[i] * lm_head[v][i] for v < vocab: lm_head [vocab][hidden],
/// x [hidden] (already normed), out [vocab].
void logits(const float* x, const float* lm_head, int vocab, int hidden, float* out);

}  // namespace kvflow::cpu
