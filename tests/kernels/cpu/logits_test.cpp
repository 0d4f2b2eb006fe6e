#define BOOST_TEST_MODULE kernels.cpu.logits
#include <boost/test/unit_test.hpp>

#include <cmath>
#include <cstring>
#include <vector>

#include "kernels/cpu/logits.hpp"

using namespace kvflow::cpu;

BOOST_AUTO_TEST_CASE(matches_naive_and_repeats_bitwise) {
  const int vocab = 1000, hidden = 96;
  std::vector<float> head(vocab * hidden), x(hidden), out(vocab), again(vocab);
  for (int i = 0; i < vocab * hidden; ++i) head[i] = std::cos(0.013f * i);
  for (int i = 0; i < hidden; ++i) x[i] = std::sin(0.5f * i);
  logits(x.data(), head.data(), vocab, hidden, out.data());
  for (int v = 0; v < vocab; ++v) {
    double want = 0;
    for (int i = 0; i < hidden; ++i) want += double(head[v * hidden + i]) * x[i];
    BOOST_TEST(std::abs(out[v] - want) <= 1e-4, "v " << v);
  }
  logits(x.data(), head.data(), vocab, hidden, again.data());
  BOOST_TEST(std::memcmp(out.data(), again.data(), vocab * 4) == 0);
}
