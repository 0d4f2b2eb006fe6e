#include "kernels/cpu/matmul.hpp"

#include <algorithm>

#include "kernels/cpu/simd.hpp"
#include "messages/error.hpp"

namespace kvflow::cpu {
namespace {

constexpr int panel_width = 16;  // outputs per panel: one v16
constexpr int row_block = 6;     // rows that share each panel load
constexpr int panels_per_task = 4;

using simd::v16;

// rows (<= row_block) x 16 outputs of one panel; every accumulator adds
// x[r][i] * w[i] for i upward, starting from +0.
template <int R>
inline __attribute__((always_inline)) void panel_kernel(const float* x, int x_stride, const float* panel, int k,
                                                        float* y, int y_stride, int width) {
  v16 acc[R];
  for (int r = 0; r < R; ++r) acc[r] = v16{};
  for (int i = 0; i < k; ++i) {
    v16 w;
    simd::load(w, panel + static_cast<std::size_t>(i) * panel_width);
    for (int r = 0; r < R; ++r) acc[r] = acc[r] + x[static_cast<std::size_t>(r) * x_stride + i] * w;
  }
  for (int r = 0; r < R; ++r) {
    float* out = y + static_cast<std::size_t>(r) * y_stride;
    if (width == panel_width) {
      simd::store(out, acc[r]);
    } else {
      for (int j = 0; j < width; ++j) out[j] = acc[r][j];
    }
  }
}

KVFLOW_CPU_CLONES
void panels_task(const float* x, int rows, int x_stride, const float* panels, int k, int n, int p_begin, int p_end,
                 float* y, int y_stride) {
  for (int r0 = 0; r0 < rows; r0 += row_block) {
    int r_count = std::min(row_block, rows - r0);
    const float* xr = x + static_cast<std::size_t>(r0) * x_stride;
    float* yr = y + static_cast<std::size_t>(r0) * y_stride;
    for (int p = p_begin; p < p_end; ++p) {
      const float* panel = panels + static_cast<std::size_t>(p) * k * panel_width;
      int width = std::min(panel_width, n - p * panel_width);
      float* out = yr + static_cast<std::size_t>(p) * panel_width;
      switch (r_count) {
        case 6:
          panel_kernel<6>(xr, x_stride, panel, k, out, y_stride, width);
          break;
        case 5:
          panel_kernel<5>(xr, x_stride, panel, k, out, y_stride, width);
          break;
        case 4:
          panel_kernel<4>(xr, x_stride, panel, k, out, y_stride, width);
          break;
        case 3:
          panel_kernel<3>(xr, x_stride, panel, k, out, y_stride, width);
          break;
        case 2:
          panel_kernel<2>(xr, x_stride, panel, k, out, y_stride, width);
          break;
        default:
          panel_kernel<1>(xr, x_stride, panel, k, out, y_stride, width);
          break;
      }
    }
  }
}

}  // namespace

void pack_rows(packed_matrix& m, const float* w, int n) {
  if (n < 0 || m.k <= 0) throw error(errc::invalid_argument, "pack_rows: n = " + std::to_string(n));
  // Unpack the zero padding of the last panel first so rows stay contiguous.
  int old_n = m.n;
  int new_n = old_n + n;
  int panels = (new_n + panel_width - 1) / panel_width;
  m.panels.resize(static_cast<std::size_t>(panels) * m.k * panel_width, 0.0f);
  for (int j = 0; j < n; ++j) {
    int out = old_n + j;
    float* dst = m.panels.data() + static_cast<std::size_t>(out / panel_width) * m.k * panel_width + out % panel_width;
    const float* src = w + static_cast<std::size_t>(j) * m.k;
    for (int i = 0; i < m.k; ++i) dst[static_cast<std::size_t>(i) * panel_width] = src[i];
  }
  m.n = new_n;
}

packed_matrix pack_matrix(const float* w, int n, int k) {
  if (k <= 0 || n <= 0)
    throw error(errc::invalid_argument, "pack_matrix: shape " + std::to_string(n) + "x" + std::to_string(k));
  packed_matrix m;
  m.k = k;
  pack_rows(m, w, n);
  return m;
}

void matmul(thread_pool* pool, const float* x, int rows, int x_stride, const packed_matrix& w, float* y, int y_stride) {
  if (rows <= 0) return;
  int panels = (w.n + panel_width - 1) / panel_width;
  int tasks = (panels + panels_per_task - 1) / panels_per_task;
  parallel_for(pool, tasks, [&](int t) {
    int p_begin = t * panels_per_task;
    int p_end = std::min(panels, p_begin + panels_per_task);
    panels_task(x, rows, x_stride, w.panels.data(), w.k, w.n, p_begin, p_end, y, y_stride);
  });
}

}  // namespace kvflow::cpu
