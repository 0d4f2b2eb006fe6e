#define BOOST_TEST_MODULE kernels.cpu.rope_delta
#include <boost/test/unit_test.hpp>

#include <cmath>
#include <random>
#include <vector>

#include "kernels/cpu/rope.hpp"
#include "kernels/cpu/rope_delta.hpp"
#include "messages/error.hpp"

using namespace kvflow::cpu;
namespace model = kvflow::model;

namespace {

std::vector<float> random_rows(std::size_t n, unsigned seed) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> d(0.0f, 1.0f);
  std::vector<float> v(n);
  for (auto& x : v) x = d(gen);
  return v;
}

float max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
  float m = 0;
  for (std::size_t i = 0; i < a.size(); ++i) m = std::max(m, std::abs(a[i] - b[i]));
  return m;
}

}  // namespace

// K computed at positions [0, n) and rotated by d equals K computed at
// positions [d, d + n), to float rounding: what placing a document relies on.
BOOST_AUTO_TEST_CASE(rotating_by_delta_equals_rope_at_the_new_position) {
  const int heads = 3, head_dim = 64, rows = 17;
  model::rope_scaling none;
  auto inv = rope_inv_freq(head_dim, 10000.0f, none);
  for (int delta : {1, 37, 1000, 16000}) {
    // Rows of [heads * head_dim] for rope(); the same data as [head][row][dim] for rope_delta.
    auto raw = random_rows(static_cast<std::size_t>(rows) * heads * head_dim, 7);
    auto at0 = raw, at_d = raw;
    rope(at0.data(), rows, heads * head_dim, heads, head_dim, 0, inv.data());
    rope(at_d.data(), rows, heads * head_dim, heads, head_dim, delta, inv.data());
    std::vector<float> moved(raw.size()), expect(raw.size());
    for (int h = 0; h < heads; ++h)
      for (int r = 0; r < rows; ++r)
        for (int d = 0; d < head_dim; ++d) {
          moved[(static_cast<std::size_t>(h) * rows + r) * head_dim + d] = at0[(r * heads + h) * head_dim + d];
          expect[(static_cast<std::size_t>(h) * rows + r) * head_dim + d] = at_d[(r * heads + h) * head_dim + d];
        }
    rope_delta(moved.data(), heads, rows * head_dim, rows, head_dim, delta, inv.data());
    BOOST_TEST(max_abs_diff(moved, expect) < 2e-4f, "delta " << delta);
    // And back: a negative delta undoes it.
    rope_delta(moved.data(), heads, rows * head_dim, rows, head_dim, -delta, inv.data());
    std::vector<float> back(raw.size());
    for (int h = 0; h < heads; ++h)
      for (int r = 0; r < rows; ++r)
        for (int d = 0; d < head_dim; ++d)
          back[(static_cast<std::size_t>(h) * rows + r) * head_dim + d] = at0[(r * heads + h) * head_dim + d];
    BOOST_TEST(max_abs_diff(moved, back) < 2e-4f, "delta " << -delta);
  }
}

BOOST_AUTO_TEST_CASE(block_rotation_touches_only_k_of_the_range) {
  model::kv_shape s{2, 2, 8, 8, model::dtype::f32};
  model::rope_scaling none;
  auto inv = rope_inv_freq(s.head_dim, 10000.0f, none);
  auto block = random_rows(s.bytes() / sizeof(float), 3);
  auto before = block;
  rope_delta_block(block.data(), s, 2, 3, 5, inv.data());
  for (int l = 0; l < s.layers; ++l)
    for (int kv = 0; kv < 2; ++kv)
      for (int h = 0; h < s.kv_heads; ++h)
        for (int t = 0; t < s.tokens; ++t) {
          const bool rotated = kv == 0 && t >= 2 && t < 5;
          bool same = true;
          for (int d = 0; d < s.head_dim; ++d)
            same = same && block[s.offset(l, kv, h, t, d)] == before[s.offset(l, kv, h, t, d)];
          BOOST_TEST(same == !rotated, "layer " << l << " kv " << kv << " head " << h << " token " << t);
        }
  BOOST_CHECK_THROW(rope_delta_block(block.data(), s, 6, 3, 1, inv.data()), kvflow::error);
  model::kv_shape bf = s;
  bf.type = model::dtype::bf16;
  BOOST_CHECK_THROW(rope_delta_block(block.data(), bf, 0, 1, 1, inv.data()), kvflow::error);
}
