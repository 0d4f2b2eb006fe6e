#include "kernels/cpu/rope.hpp"

#include <cmath>
#include <cstddef>

namespace kvflow::cpu {

std::vector<float> rope_inv_freq(int head_dim, float theta, const model::rope_scaling& scaling) {
  int half = head_dim / 2;
  std::vector<float> inv(half);
  for (int i = 0; i < half; ++i) {
    double f = 1.0 / std::pow(static_cast<double>(theta), 2.0 * i / head_dim);
    if (scaling.enabled) {
      // HF _compute_llama3_parameters: long wavelengths are divided by
      // factor, short ones kept, the band between interpolated.
      const double pi = 3.14159265358979323846;
      double old_len = scaling.original_max_positions;
      double low_wavelen = old_len / scaling.low_freq_factor;
      double high_wavelen = old_len / scaling.high_freq_factor;
      double wavelen = 2 * pi / f;
      double scaled = wavelen > low_wavelen ? f / scaling.factor : f;
      if (!(wavelen < high_wavelen) && !(wavelen > low_wavelen)) {
        double smooth =
            (old_len / wavelen - scaling.low_freq_factor) / (scaling.high_freq_factor - scaling.low_freq_factor);
        scaled = (1 - smooth) * scaled / scaling.factor + smooth * scaled;
      }
      f = scaled;
    }
    inv[i] = static_cast<float>(f);
  }
  return inv;
}

void rope(float* x, int rows, int row_stride, int heads, int head_dim, int pos0, const float* inv_freq) {
  int half = head_dim / 2;
  std::vector<float> cs(static_cast<std::size_t>(half) * 2);
  for (int r = 0; r < rows; ++r) {
    // The angle depends only on the absolute position, in double so that
    // long contexts keep their precision.
    double pos = static_cast<double>(pos0) + r;
    for (int i = 0; i < half; ++i) {
      double a = pos * static_cast<double>(inv_freq[i]);
      cs[2 * static_cast<std::size_t>(i)] = static_cast<float>(std::cos(a));
      cs[2 * static_cast<std::size_t>(i) + 1] = static_cast<float>(std::sin(a));
    }
    float* row = x + static_cast<std::size_t>(r) * row_stride;
    for (int h = 0; h < heads; ++h) {
      float* v = row + static_cast<std::size_t>(h) * head_dim;
      for (int i = 0; i < half; ++i) {
        float c = cs[2 * static_cast<std::size_t>(i)], s = cs[2 * static_cast<std::size_t>(i) + 1];
        float a = v[i], b = v[i + half];
        v[i] = a * c - b * s;
        v[i + half] = b * c + a * s;
      }
    }
  }
}

}  // namespace kvflow::cpu
