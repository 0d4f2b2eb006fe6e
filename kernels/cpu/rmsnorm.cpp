#include "kernels/cpu/rmsnorm.hpp"

#include <cmath>
#include <cstddef>

#include "kernels/cpu/simd.hpp"

namespace kvflow::cpu {
namespace {

// Sum of squares in 16 lanes (lane = index mod 16), lanes added in order,
// then the tail: fixed for a given dim.
KVFLOW_CPU_CLONES
void rmsnorm_row(const float* x, const float* weight, int dim, float eps, float* out) {
  simd::v16 acc{};
  int i = 0;
  for (; i + 16 <= dim; i += 16) {
    simd::v16 v;
    simd::load(v, x + i);
    acc = acc + v * v;
  }
  float ss = 0.0f;
  for (int l = 0; l < 16; ++l) ss += acc[l];
  for (; i < dim; ++i) ss += x[i] * x[i];
  float scale = 1.0f / std::sqrt(ss / static_cast<float>(dim) + eps);
  for (int j = 0; j < dim; ++j) out[j] = weight[j] * (x[j] * scale);
}

}  // namespace

void rmsnorm(const float* x, const float* weight, int rows, int dim, float eps, float* out) {
  for (int r = 0; r < rows; ++r) {
    std::size_t off = static_cast<std::size_t>(r) * dim;
    rmsnorm_row(x + off, weight, dim, eps, out + off);
  }
}

}  // namespace kvflow::cpu
