#include "kernels/cpu/swiglu.hpp"

#include <cstddef>

#include "kernels/cpu/simd.hpp"

namespace kvflow::cpu {
namespace {

KVFLOW_CPU_CLONES
void swiglu_row(const float* gate, const float* up, int width, float* out) {
  for (int j = 0; j < width; ++j) {
    float g = gate[j];
    out[j] = g / (1.0f + simd::exp_approx(-g)) * up[j];
  }
}

}  // namespace

void swiglu(const float* gate, const float* up, int rows, int width, int in_stride, float* out, int out_stride) {
  for (int r = 0; r < rows; ++r) {
    swiglu_row(gate + static_cast<std::size_t>(r) * in_stride, up + static_cast<std::size_t>(r) * in_stride, width,
               out + static_cast<std::size_t>(r) * out_stride);
  }
}

}  // namespace kvflow::cpu
