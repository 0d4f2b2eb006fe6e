#pragma once
// The SwiGLU gate of the llama MLP.

namespace kvflow::cpu {

/// out[r][j] = silu(gate[r][j]) * up[r][j], silu(g) = g / (1 + exp(-g)), for
/// r < rows, j < width; rows of gate and up at stride in_stride, of out at
/// out_stride (out may alias gate).
void swiglu(const float* gate, const float* up, int rows, int width, int in_stride, float* out, int out_stride);

}  // namespace kvflow::cpu
