#define BOOST_TEST_MODULE devices.rate_limiter
#include <boost/test/unit_test.hpp>

#include <chrono>
#include <cstring>
#include <thread>
#include <vector>

#include "devices/rate_limiter.hpp"

using namespace kvflow::devices;
using clock_type = std::chrono::steady_clock;

namespace {
// Moves `total` real bytes in `piece`-sized copies through the limiter from
// `threads` threads; returns the measured bytes per second.
double paced_copy(rate_limiter& lim, std::size_t total, std::size_t piece, int threads) {
  std::vector<char> src(piece, 'x');
  const auto start = clock_type::now();
  std::vector<std::thread> ts;
  for (int t = 0; t < threads; ++t)
    ts.emplace_back([&] {
      std::vector<char> dst(piece);
      for (std::size_t moved = 0; moved < total / threads; moved += piece) {
        lim.acquire(piece);
        std::memcpy(dst.data(), src.data(), piece);
      }
    });
  for (auto& t : ts) t.join();
  const double s = std::chrono::duration<double>(clock_type::now() - start).count();
  return static_cast<double>(total) / s;
}
}  // namespace

BOOST_AUTO_TEST_CASE(paces_within_5_percent) {
  // 1 Gbit/s would need 37.5 MB for 0.3 s; a lower rate keeps the test light.
  const double rate = 100e6;  // bytes per second
  rate_limiter lim(rate);
  const double measured = paced_copy(lim, 30'000'000, 1'000'000, 1);  // about 0.3 s
  BOOST_TEST(measured / rate > 0.95);
  BOOST_TEST(measured / rate < 1.05);
  BOOST_TEST(lim.total_bytes() == 30'000'000u);
}

BOOST_AUTO_TEST_CASE(shared_budget_across_threads) {
  const double rate = 80e6;
  rate_limiter lim(rate);
  const double measured = paced_copy(lim, 24'000'000, 500'000, 4);
  BOOST_TEST(measured / rate > 0.95);
  BOOST_TEST(measured / rate < 1.05);
}

BOOST_AUTO_TEST_CASE(gbit_conversion_and_unlimited) {
  BOOST_TEST(rate_limiter::gbit_per_s(10) == 1.25e9);
  rate_limiter lim(0);
  const auto start = clock_type::now();
  for (int i = 0; i < 1000; ++i) lim.acquire(1 << 20);
  BOOST_TEST(std::chrono::duration<double>(clock_type::now() - start).count() < 0.1);
  lim.set_rate(50e6);
  BOOST_TEST(lim.rate() == 50e6);
}
