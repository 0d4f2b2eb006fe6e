#define BOOST_TEST_MODULE kernels.cpu.swiglu
#include <boost/test/unit_test.hpp>

#include <cmath>
#include <vector>

#include "kernels/cpu/swiglu.hpp"

using namespace kvflow::cpu;

BOOST_AUTO_TEST_CASE(matches_naive_double_loop) {
  const int rows = 3, width = 37, stride = 2 * width;
  std::vector<float> gu(rows * stride), out(rows * width);
  for (int i = 0; i < rows * stride; ++i) gu[i] = 12.0f * std::sin(0.731f * i);  // gates in [-12, 12]
  swiglu(gu.data(), gu.data() + width, rows, width, stride, out.data(), width);
  for (int r = 0; r < rows; ++r) {
    for (int j = 0; j < width; ++j) {
      double g = gu[r * stride + j], u = gu[r * stride + width + j];
      double want = g / (1.0 + std::exp(-g)) * u;
      BOOST_TEST(std::abs(out[r * width + j] - want) <= 2e-6 * (1 + std::abs(want)), "r " << r << " j " << j);
    }
  }
}

BOOST_AUTO_TEST_CASE(extreme_gates_stay_finite) {
  std::vector<float> g{-1000.0f, -90.0f, 0.0f, 90.0f, 1000.0f}, u(5, 2.0f), out(5);
  swiglu(g.data(), u.data(), 1, 5, 5, out.data(), 5);
  for (float v : out) BOOST_TEST(std::isfinite(v));
  BOOST_TEST(std::abs(out[0]) < 1e-30);
  BOOST_TEST(out[2] == 0.0f);
  BOOST_TEST(out[3] == 180.0f);
  BOOST_TEST(out[4] == 2000.0f);
}
