#define BOOST_TEST_MODULE kernels.cpu.matmul
#include <boost/test/unit_test.hpp>

#include <cstring>
#include <random>
#include <vector>

#include "kernels/cpu/matmul.hpp"

using namespace kvflow::cpu;

namespace {

std::vector<float> random_vector(std::size_t n, unsigned seed) {
  std::mt19937 g(seed);
  std::uniform_real_distribution<float> d(-1.0f, 1.0f);
  std::vector<float> v(n);
  for (auto& x : v) x = d(g);
  return v;
}

// The contract's order: i = 0, 1, ..., k-1 from +0.
float naive_dot(const float* x, const float* w, int k) {
  float acc = 0.0f;
  for (int i = 0; i < k; ++i) acc = acc + x[i] * w[i];
  return acc;
}

}  // namespace

BOOST_AUTO_TEST_CASE(matches_naive_loop_bitwise) {
  thread_pool pool(2);
  for (auto shape : {std::make_pair(1, 1), std::make_pair(17, 5), std::make_pair(64, 64), std::make_pair(35, 100)}) {
    int n = shape.first, k = shape.second, rows = 13;
    auto w = random_vector(static_cast<std::size_t>(n) * k, 1);
    auto x = random_vector(static_cast<std::size_t>(rows) * k, 2);
    auto packed = pack_matrix(w.data(), n, k);
    std::vector<float> y(static_cast<std::size_t>(rows) * n);
    matmul(&pool, x.data(), rows, k, packed, y.data(), n);
    for (int r = 0; r < rows; ++r) {
      for (int j = 0; j < n; ++j) {
        float want = naive_dot(&x[static_cast<std::size_t>(r) * k], &w[static_cast<std::size_t>(j) * k], k);
        BOOST_TEST_REQUIRE(std::memcmp(&want, &y[static_cast<std::size_t>(r) * n + j], 4) == 0,
                           "n " << n << " k " << k << " row " << r << " col " << j);
      }
    }
  }
}

BOOST_AUTO_TEST_CASE(rows_are_independent_of_batching) {
  const int n = 200, k = 96, rows = 41;
  auto w = random_vector(static_cast<std::size_t>(n) * k, 3);
  auto x = random_vector(static_cast<std::size_t>(rows) * k, 4);
  auto packed = pack_matrix(w.data(), n, k);
  std::vector<float> all(static_cast<std::size_t>(rows) * n), parts(all.size());
  thread_pool pool(2);
  matmul(&pool, x.data(), rows, k, packed, all.data(), n);
  // Uneven batches, single-threaded: the same bits.
  int r = 0;
  for (int size : {1, 3, 7, 2, 11, 5, 12}) {
    matmul(nullptr, x.data() + static_cast<std::size_t>(r) * k, size, k, packed,
           parts.data() + static_cast<std::size_t>(r) * n, n);
    r += size;
  }
  BOOST_REQUIRE_EQUAL(r, rows);
  BOOST_TEST(std::memcmp(all.data(), parts.data(), all.size() * 4) == 0);
}

BOOST_AUTO_TEST_CASE(stacked_rows_equal_separate_matrices) {
  const int k = 40, n1 = 20, n2 = 13, rows = 5;
  auto w1 = random_vector(static_cast<std::size_t>(n1) * k, 5);
  auto w2 = random_vector(static_cast<std::size_t>(n2) * k, 6);
  auto x = random_vector(static_cast<std::size_t>(rows) * k, 7);
  auto stacked = pack_matrix(w1.data(), n1, k);
  pack_rows(stacked, w2.data(), n2);
  BOOST_REQUIRE_EQUAL(stacked.n, n1 + n2);
  auto p1 = pack_matrix(w1.data(), n1, k), p2 = pack_matrix(w2.data(), n2, k);
  std::vector<float> y(static_cast<std::size_t>(rows) * (n1 + n2)), y1(rows * n1), y2(rows * n2);
  matmul(nullptr, x.data(), rows, k, stacked, y.data(), n1 + n2);
  matmul(nullptr, x.data(), rows, k, p1, y1.data(), n1);
  matmul(nullptr, x.data(), rows, k, p2, y2.data(), n2);
  for (int r = 0; r < rows; ++r) {
    BOOST_TEST(std::memcmp(&y[r * (n1 + n2)], &y1[r * n1], n1 * 4) == 0);
    BOOST_TEST(std::memcmp(&y[r * (n1 + n2) + n1], &y2[r * n2], n2 * 4) == 0);
  }
}

BOOST_AUTO_TEST_CASE(strided_rows) {
  const int n = 16, k = 8, rows = 3, xs = 11, ys = 21;
  auto w = random_vector(n * k, 8);
  auto x = random_vector(rows * xs, 9);
  auto packed = pack_matrix(w.data(), n, k);
  std::vector<float> y(rows * ys, -7.0f);
  matmul(nullptr, x.data(), rows, xs, packed, y.data(), ys);
  for (int r = 0; r < rows; ++r) {
    for (int j = 0; j < n; ++j) BOOST_TEST(y[r * ys + j] == naive_dot(&x[r * xs], &w[j * k], k));
    for (int j = n; j < ys; ++j) BOOST_TEST(y[r * ys + j] == -7.0f);  // untouched
  }
}
