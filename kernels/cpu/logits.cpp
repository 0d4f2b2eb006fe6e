#include "kernels/cpu/logits.hpp"

#include <cblas.h>

namespace kvflow::cpu {

void logits(const float* x, const float* lm_head, int vocab, int hidden, float* out) {
  // Always one row through the same call, so equal rows give equal logits.
  cblas_sgemv(CblasRowMajor, CblasNoTrans, vocab, hidden, 1.0f, lm_head, hidden, x, 1, 0.0f, out, 1);
}

}  // namespace kvflow::cpu
