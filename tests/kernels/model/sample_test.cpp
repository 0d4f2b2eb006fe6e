#define BOOST_TEST_MODULE kernels.model.sample
#include <boost/test/unit_test.hpp>

#include <cmath>
#include <limits>
#include <map>
#include <vector>

#include "kernels/model/engine.hpp"
#include "messages/error.hpp"

using namespace kvflow::model;

namespace {
sampling with(float t, float p, std::uint64_t seed) {
  sampling s;
  s.temperature = t;
  s.top_p = p;
  s.seed = seed;
  return s;
}
}  // namespace

BOOST_AUTO_TEST_CASE(greedy_is_argmax_first_on_ties) {
  BOOST_TEST(sample({0.1f, 3.0f, -1.0f, 2.0f}, sampling{}, 0) == 1);
  BOOST_TEST(sample({5.0f, 1.0f, 5.0f}, sampling{}, 9) == 0);
  const float nan = std::numeric_limits<float>::quiet_NaN();
  BOOST_TEST(sample({nan, -1.0f, -2.0f}, sampling{}, 0) == 1);
  BOOST_TEST(sample({-INFINITY, -INFINITY, -3.0f}, sampling{}, 0) == 2);
}

BOOST_AUTO_TEST_CASE(reproducible_per_seed_and_step) {
  std::vector<float> logits(50);
  for (int i = 0; i < 50; ++i) logits[i] = std::sin(0.7f * i);
  auto s = with(1.0f, 1.0f, 1234);
  int differs_by_step = 0, differs_by_seed = 0;
  for (std::uint64_t step = 0; step < 100; ++step) {
    auto a = sample(logits, s, step);
    BOOST_REQUIRE_EQUAL(a, sample(logits, s, step));
    differs_by_step += a != sample(logits, s, step + 1);
    differs_by_seed += a != sample(logits, with(1.0f, 1.0f, 99), step);
  }
  BOOST_TEST(differs_by_step > 50);
  BOOST_TEST(differs_by_seed > 50);
}

BOOST_AUTO_TEST_CASE(temperature_follows_the_softmax) {
  std::vector<float> logits{0.0f, std::log(2.0f), std::log(7.0f)};  // probabilities 1:2:7
  std::map<int, int> hits;
  const int n = 20000;
  for (int step = 0; step < n; ++step) ++hits[sample(logits, with(1.0f, 1.0f, 7), step)];
  BOOST_TEST(std::abs(hits[0] / double(n) - 0.1) < 0.015);
  BOOST_TEST(std::abs(hits[1] / double(n) - 0.2) < 0.015);
  BOOST_TEST(std::abs(hits[2] / double(n) - 0.7) < 0.015);
  // A low temperature is nearly greedy; a high one nearly uniform.
  int top = 0, low = 0;
  for (int step = 0; step < 2000; ++step) {
    top += sample(logits, with(0.05f, 1.0f, 3), step) == 2;
    low += sample(logits, with(100.0f, 1.0f, 3), step) == 0;
  }
  BOOST_TEST(top > 1990);
  BOOST_TEST(std::abs(low / 2000.0 - 1.0 / 3) < 0.05);
}

BOOST_AUTO_TEST_CASE(top_p_keeps_the_nucleus) {
  std::vector<float> logits{std::log(0.5f), std::log(0.3f), std::log(0.15f), std::log(0.05f)};
  std::map<int, int> hits;
  for (int step = 0; step < 5000; ++step) ++hits[sample(logits, with(1.0f, 0.75f, 1), step)];
  // 0.5 + 0.3 >= 0.75: only tokens 0 and 1, in ratio 5:3.
  BOOST_TEST(hits.count(2) == 0u);
  BOOST_TEST(hits.count(3) == 0u);
  BOOST_TEST(std::abs(hits[0] / 5000.0 - 0.625) < 0.03);
  // Exactly reaching the mass stops there; tiny top_p keeps only the top.
  for (int step = 0; step < 500; ++step) {
    BOOST_REQUIRE(sample(logits, with(1.0f, 0.5f, 2), step) == 0);
    BOOST_REQUIRE(sample(logits, with(1.0f, 1e-6f, 2), step) == 0);
    BOOST_REQUIRE(sample(logits, with(1.0f, 0.0f, 2), step) == 0);
  }
  // top_p >= 1 can draw the tail.
  bool tail = false;
  for (int step = 0; step < 2000 && !tail; ++step) tail = sample(logits, with(1.0f, 1.0f, 2), step) == 3;
  BOOST_TEST(tail);
}

BOOST_AUTO_TEST_CASE(masked_and_bad_inputs) {
  std::vector<float> logits{-INFINITY, 1.0f, -INFINITY, 1.0f};
  for (int step = 0; step < 200; ++step) {
    auto t = sample(logits, with(2.0f, 1.0f, 5), step);
    BOOST_REQUIRE(t == 1 || t == 3);
  }
  // A temperature so small that logits / t overflow acts as greedy.
  BOOST_TEST(sample({1.0f, 3.0f, 2.0f}, with(1e-30f, 1.0f, 1), 0) == 1);
  BOOST_TEST(sample({-5.0f, -3.0f, -4.0f}, with(1e-30f, 0.9f, 1), 0) == 1);
  BOOST_CHECK_THROW(sample({}, sampling{}, 0), kvflow::error);
  BOOST_CHECK_THROW(sample({1.0f}, with(-1.0f, 1.0f, 0), 0), kvflow::error);
  BOOST_CHECK_THROW(sample({1.0f}, with(NAN, 1.0f, 0), 0), kvflow::error);
  BOOST_CHECK_THROW(sample({1.0f}, with(1.0f, NAN, 0), 0), kvflow::error);
  BOOST_CHECK_THROW(sample({NAN, NAN}, sampling{}, 0), kvflow::error);
}
