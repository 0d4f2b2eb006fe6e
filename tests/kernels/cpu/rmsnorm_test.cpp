#define BOOST_TEST_MODULE kernels.cpu.rmsnorm
#include <boost/test/unit_test.hpp>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "kernels/cpu/rmsnorm.hpp"

using namespace kvflow::cpu;

BOOST_AUTO_TEST_CASE(matches_naive_double_loop) {
  std::mt19937 g(1);
  std::uniform_real_distribution<float> d(-3.0f, 3.0f);
  for (int dim : {1, 15, 16, 64, 577}) {
    const int rows = 4;
    const float eps = 1e-5f;
    std::vector<float> x(rows * dim), w(dim), out(rows * dim);
    for (auto& v : x) v = d(g);
    for (auto& v : w) v = d(g);
    rmsnorm(x.data(), w.data(), rows, dim, eps, out.data());
    for (int r = 0; r < rows; ++r) {
      double ss = 0;
      for (int i = 0; i < dim; ++i) ss += double(x[r * dim + i]) * x[r * dim + i];
      double scale = 1.0 / std::sqrt(ss / dim + eps);
      for (int i = 0; i < dim; ++i) {
        double want = x[r * dim + i] * scale * w[i];
        BOOST_TEST(std::abs(out[r * dim + i] - want) <= 1e-5 * (1 + std::abs(want)), "dim " << dim << " i " << i);
      }
    }
  }
}

BOOST_AUTO_TEST_CASE(in_place_and_row_independent) {
  const int dim = 100, rows = 6;
  std::vector<float> x(rows * dim), w(dim, 1.5f);
  for (int i = 0; i < rows * dim; ++i) x[i] = std::sin(0.37f * i);
  std::vector<float> all(rows * dim), one(dim), inplace = x;
  rmsnorm(x.data(), w.data(), rows, dim, 1e-6f, all.data());
  rmsnorm(inplace.data(), w.data(), rows, dim, 1e-6f, inplace.data());
  BOOST_TEST(std::memcmp(all.data(), inplace.data(), all.size() * 4) == 0);
  for (int r = 0; r < rows; ++r) {
    rmsnorm(x.data() + r * dim, w.data(), 1, dim, 1e-6f, one.data());
    BOOST_TEST(std::memcmp(one.data(), all.data() + r * dim, dim * 4) == 0);
  }
}

BOOST_AUTO_TEST_CASE(zero_row_stays_finite) {
  std::vector<float> x(8, 0.0f), w(8, 1.0f), out(8, 1.0f);
  rmsnorm(x.data(), w.data(), 1, 8, 1e-5f, out.data());
  for (float v : out) BOOST_TEST(v == 0.0f);
}
