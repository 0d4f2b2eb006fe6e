#pragma once
// Rotary position embedding in Hugging Face's rotate-half order, with
// llama-3 frequency scaling.

#include <vector>

#include "kernels/model/config.hpp"

namespace kvflow::cpu {

/// The head_dim / 2 inverse frequencies theta^(-2i / head_dim), rescaled as
/// HF's _compute_llama3_parameters when scaling.enabled.
std::vector<float> rope_inv_freq(int head_dim, float theta, const model::rope_scaling& scaling);

/// Rotates `heads` heads of each of `rows` rows in place: row r is at
/// position pos0 + r and starts at x + r * row_stride, head h at h * head_dim.
/// Pairs are (i, i + head_dim / 2): x_i' = x_i cos - x_{i+h/2} sin,
/// x_{i+h/2}' = x_{i+h/2} cos + x_i sin with angle = position * inv_freq[i].
void rope(float* x, int rows, int row_stride, int heads, int head_dim, int pos0, const float* inv_freq);

}  // namespace kvflow::cpu
