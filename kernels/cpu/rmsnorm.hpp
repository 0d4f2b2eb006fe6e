#pragma once
// RMSNorm: x / sqrt(mean(x^2) + eps) * weight, row by row.

namespace kvflow::cpu {

/// out[r] = x[r] * (1 / sqrt(sum(x[r]^2) / dim + eps)) * weight for r < rows;
/// x, out [rows][dim] (out may equal x), weight [dim]. The sum of squares of
/// a row is taken in a fixed order, so a row's result does not depend on the
/// other rows.
void rmsnorm(const float* x, const float* weight, int rows, int dim, float eps, float* out);

}  // namespace kvflow::cpu
