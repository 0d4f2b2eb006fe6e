#include "kernels/cpu/rope_delta.hpp"

#include <cmath>
#include <cstddef>
#include <string>
#include <vector>

#include "messages/error.hpp"

namespace kvflow::cpu {

void rope_delta(float* k, int heads, int head_stride, int rows, int head_dim, int delta, const float* inv_freq) {
  if (delta == 0 || rows <= 0) return;
  const int half = head_dim / 2;
  std::vector<float> cs(static_cast<std::size_t>(half) * 2);
  for (int i = 0; i < half; ++i) {
    const double a = static_cast<double>(delta) * static_cast<double>(inv_freq[i]);
    cs[2 * static_cast<std::size_t>(i)] = static_cast<float>(std::cos(a));
    cs[2 * static_cast<std::size_t>(i) + 1] = static_cast<float>(std::sin(a));
  }
  for (int h = 0; h < heads; ++h) {
    for (int r = 0; r < rows; ++r) {
      float* v = k + static_cast<std::size_t>(h) * head_stride + static_cast<std::size_t>(r) * head_dim;
      for (int i = 0; i < half; ++i) {
        const float c = cs[2 * static_cast<std::size_t>(i)], s = cs[2 * static_cast<std::size_t>(i) + 1];
        const float a = v[i], b = v[i + half];
        v[i] = a * c - b * s;
        v[i + half] = b * c + a * s;
      }
    }
  }
}

void rope_delta_block(void* block, const model::kv_shape& shape, int token_begin, int count, int delta,
                      const float* inv_freq) {
  if (shape.type != model::dtype::f32)
    throw error(errc::invalid_argument, "rope_delta_block: the CPU kernel rotates f32 blocks only");
  if (token_begin < 0 || count < 0 || token_begin + count > shape.tokens)
    throw error(errc::invalid_argument, "rope_delta_block: tokens [" + std::to_string(token_begin) + ", " +
                                            std::to_string(token_begin + count) + ") outside a block of " +
                                            std::to_string(shape.tokens));
  float* base = static_cast<float*>(block);
  for (int l = 0; l < shape.layers; ++l)
    rope_delta(base + shape.offset(l, 0, 0, token_begin, 0), shape.kv_heads, shape.tokens * shape.head_dim, count,
               shape.head_dim, delta, inv_freq);
}

}  // namespace kvflow::cpu
