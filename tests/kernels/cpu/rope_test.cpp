#define BOOST_TEST_MODULE kernels.cpu.rope
#include <boost/test/unit_test.hpp>

#include <cmath>
#include <cstring>
#include <vector>

#include "kernels/cpu/rope.hpp"
#include "kernels/model/config.hpp"

using namespace kvflow::cpu;
namespace model = kvflow::model;

namespace {

// Hugging Face's _compute_llama3_parameters, transcribed statement by
// statement (torch.where as ?:).
std::vector<double> hf_llama3_inv_freq(int dim, double base, double factor, double low_freq_factor,
                                       double high_freq_factor, double old_context_len) {
  const double pi = 3.14159265358979323846;
  std::vector<double> out;
  for (int i = 0; i < dim; i += 2) {
    double inv_freq = 1.0 / std::pow(base, double(i) / dim);
    double low_freq_wavelen = old_context_len / low_freq_factor;
    double high_freq_wavelen = old_context_len / high_freq_factor;
    double wavelen = 2 * pi / inv_freq;
    double inv_freq_llama = wavelen > low_freq_wavelen ? inv_freq / factor : inv_freq;
    double smooth_factor = (old_context_len / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor);
    double smoothed_inv_freq = (1 - smooth_factor) * inv_freq_llama / factor + smooth_factor * inv_freq_llama;
    bool is_medium_freq = !(wavelen < high_freq_wavelen) && !(wavelen > low_freq_wavelen);
    out.push_back(is_medium_freq ? smoothed_inv_freq : inv_freq_llama);
  }
  return out;
}

}  // namespace

BOOST_AUTO_TEST_CASE(plain_frequencies) {
  model::rope_scaling none;
  auto inv = rope_inv_freq(64, 100000.0f, none);
  BOOST_REQUIRE_EQUAL(inv.size(), 32u);
  for (int i = 0; i < 32; ++i) {
    double want = 1.0 / std::pow(100000.0, 2.0 * i / 64);
    BOOST_TEST(std::abs(inv[i] - want) <= 1e-7 * want);
  }
}

BOOST_AUTO_TEST_CASE(llama3_scaling_matches_hf_formula_in_all_three_bands) {
  auto c = model::preset("llama-3-8b");
  BOOST_REQUIRE(c.scaling.enabled);
  auto inv = rope_inv_freq(c.head_dim, c.rope_theta, c.scaling);
  auto want = hf_llama3_inv_freq(c.head_dim, c.rope_theta, c.scaling.factor, c.scaling.low_freq_factor,
                                 c.scaling.high_freq_factor, c.scaling.original_max_positions);
  BOOST_REQUIRE_EQUAL(inv.size(), want.size());
  int kept = 0, divided = 0, smoothed = 0;
  for (std::size_t i = 0; i < inv.size(); ++i) {
    BOOST_TEST(std::abs(inv[i] - want[i]) <= 1e-6 * want[i], "i " << i);
    double plain = 1.0 / std::pow(double(c.rope_theta), 2.0 * i / c.head_dim);
    if (std::abs(want[i] - plain) <= 1e-12 * plain) {
      ++kept;
    } else if (std::abs(want[i] - plain / 8) <= 1e-12 * plain) {
      ++divided;
    } else {
      ++smoothed;
    }
  }
  BOOST_TEST(kept > 0);
  BOOST_TEST(divided > 0);
  BOOST_TEST(smoothed > 0);
}

BOOST_AUTO_TEST_CASE(rotate_half_pairs) {
  // head_dim 4: pairs (0, 2) and (1, 3).
  std::vector<float> inv{1.0f, 0.5f};
  std::vector<float> x{1.0f, 1.0f, 0.0f, 0.0f};
  rope(x.data(), 1, 4, 1, 4, 3, inv.data());
  BOOST_TEST(std::abs(x[0] - std::cos(3.0)) < 1e-6);
  BOOST_TEST(std::abs(x[2] - std::sin(3.0)) < 1e-6);
  BOOST_TEST(std::abs(x[1] - std::cos(1.5)) < 1e-6);
  BOOST_TEST(std::abs(x[3] - std::sin(1.5)) < 1e-6);
}

BOOST_AUTO_TEST_CASE(matches_naive_and_is_chunk_invariant) {
  const int heads = 3, head_dim = 16, rows = 20, stride = heads * head_dim + 5;
  model::rope_scaling none;
  auto inv = rope_inv_freq(head_dim, 10000.0f, none);
  std::vector<float> x(rows * stride);
  for (int i = 0; i < rows * stride; ++i) x[i] = std::sin(0.1f * i) + 0.5f;
  auto whole = x;
  const int pos0 = 1000;
  rope(whole.data(), rows, stride, heads, head_dim, pos0, inv.data());
  for (int r = 0; r < rows; ++r) {
    for (int h = 0; h < heads; ++h) {
      for (int i = 0; i < head_dim / 2; ++i) {
        double a = double(pos0 + r) * inv[i];
        double x0 = x[r * stride + h * head_dim + i], x1 = x[r * stride + h * head_dim + i + head_dim / 2];
        BOOST_TEST(std::abs(whole[r * stride + h * head_dim + i] - (x0 * std::cos(a) - x1 * std::sin(a))) < 1e-5);
        BOOST_TEST(std::abs(whole[r * stride + h * head_dim + i + head_dim / 2] -
                            (x1 * std::cos(a) + x0 * std::sin(a))) < 1e-5);
      }
    }
    for (int j = heads * head_dim; j < stride; ++j) BOOST_TEST(whole[r * stride + j] == x[r * stride + j]);
  }
  auto parts = x;
  int r = 0;
  for (int size : {1, 7, 3, 9}) {
    rope(parts.data() + r * stride, size, stride, heads, head_dim, pos0 + r, inv.data());
    r += size;
  }
  BOOST_TEST(std::memcmp(parts.data(), whole.data(), x.size() * 4) == 0);
}
