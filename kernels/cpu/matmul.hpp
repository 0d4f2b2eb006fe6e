#pragma once
// y = x W^T for the model's projections, with W packed once at load.

#include <vector>

#include "kernels/cpu/thread_pool.hpp"

namespace kvflow::cpu {

/// W [n][k] (row-major, one row per output) repacked into panels of 16
/// outputs: [panel][k][16], the last panel zero-padded.
struct packed_matrix {
  int n = 0;
  int k = 0;
  std::vector<float> panels;
};

/// Packs W [n][k]. Several matrices with the same k stack into one by packing
/// their rows one after another (pack_rows appends).
packed_matrix pack_matrix(const float* w, int n, int k);
void pack_rows(packed_matrix& m, const float* w, int n);

/// y[r][j] = sum_i x[r][i] * W[j][i] for r < rows: x [rows][k] at row stride
/// x_stride, y [rows][n] at row stride y_stride. Each element is summed in
/// order i = 0, 1, ..., k-1 whatever rows, stride or pool, so a row's result
/// is bitwise the same however the rows are batched (OpenBLAS's sgemm is not:
/// its small-matrix path and edge kernels sum differently for small rows).
void matmul(thread_pool* pool, const float* x, int rows, int x_stride, const packed_matrix& w, float* y, int y_stride);

}  // namespace kvflow::cpu
