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

// Wall-clock checks: a loaded machine wakes the copying thread late, and a
// late wake-up beyond the slack is idle link time, so the lower bounds are
// loose; the booking arithmetic itself is checked exactly below.
BOOST_AUTO_TEST_CASE(paces_within_5_percent) {
  // 1 Gbit/s would need 37.5 MB for 0.3 s; a lower rate keeps the test light.
  const double rate = 100e6;  // bytes per second
  rate_limiter lim(rate);
  const double measured = paced_copy(lim, 30'000'000, 1'000'000, 1);  // about 0.3 s
  BOOST_TEST(measured / rate > 0.85);
  BOOST_TEST(measured / rate < 1.05);
  BOOST_TEST(lim.total_bytes() == 30'000'000u);
}

BOOST_AUTO_TEST_CASE(shared_budget_across_threads) {
  const double rate = 80e6;
  rate_limiter lim(rate);
  const double measured = paced_copy(lim, 24'000'000, 500'000, 4);
  BOOST_TEST(measured / rate > 0.85);
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

// A link that idled carries no backlog: the first transfer after a pause
// is due bytes / rate after it was booked (an earlier version gave up to
// 50 ms of credit, which made short restores on a paced tier look twice as
// fast). Back-to-back bookings queue exactly behind each other.
BOOST_AUTO_TEST_CASE(no_credit_after_an_idle_gap) {
  const double rate = 100e6;
  const auto per_mb = std::chrono::duration<double>(1'000'000 / rate);
  rate_limiter lim(rate);
  lim.acquire(1'000'000);  // 10 ms
  std::this_thread::sleep_for(std::chrono::milliseconds(30));
  const auto before = clock_type::now();
  const auto first = lim.reserve(2'000'000);
  BOOST_TEST(std::chrono::duration<double>(first - before).count() >= 2 * per_mb.count());
  const auto second = lim.reserve(1'000'000);
  BOOST_TEST(std::chrono::duration<double>(second - first).count() == per_mb.count(),
             boost::test_tools::tolerance(1e-6));
  BOOST_TEST(lim.total_bytes() == 4'000'000u);
}

// Booked before the work, waited for after it: the work overlaps the link
// time, so a transfer takes max(work, bytes / rate), not their sum.
BOOST_AUTO_TEST_CASE(reserve_overlaps_the_work) {
  const double rate = 100e6;
  rate_limiter lim(rate);
  const auto start = clock_type::now();
  for (int i = 0; i < 10; ++i) {
    auto due = lim.reserve(1'000'000);                          // 10 ms of link
    std::this_thread::sleep_for(std::chrono::milliseconds(8));  // the read itself
    std::this_thread::sleep_until(due);
  }
  const double s = std::chrono::duration<double>(clock_type::now() - start).count();
  BOOST_TEST(s > 0.099);
  BOOST_TEST(s < 0.125);  // not 10 x 18 ms
}
