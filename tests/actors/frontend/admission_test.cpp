#define BOOST_TEST_MODULE actors.frontend.admission
#include <boost/test/unit_test.hpp>

#include <atomic>
#include <chrono>
#include <thread>
#include <vector>

#include "actors/frontend/admission.hpp"

using namespace kvflow::frontend;
using namespace std::chrono_literals;

namespace {

// Polls `pred` for up to 5 s.
template <typename P>
bool eventually(P pred) {
  for (int i = 0; i < 500; ++i) {
    if (pred()) return true;
    std::this_thread::sleep_for(10ms);
  }
  return pred();
}

}  // namespace

BOOST_AUTO_TEST_CASE(runs_up_to_the_limit_then_queues_then_refuses) {
  admission a(2, 1);
  BOOST_TEST((a.acquire() == admission::outcome::admitted));
  BOOST_TEST((a.acquire() == admission::outcome::admitted));
  std::atomic<bool> third{false};
  std::thread waiter([&] {
    BOOST_TEST((a.acquire() == admission::outcome::admitted));
    third = true;
  });
  BOOST_REQUIRE(eventually([&] { return a.waiting() == 1; }));
  BOOST_TEST((a.acquire() == admission::outcome::queue_full));
  BOOST_TEST(!third);
  a.release();
  waiter.join();
  BOOST_TEST(third);
  BOOST_TEST(a.running() == 2u);
  BOOST_TEST(a.waiting() == 0u);
  a.release();
  a.release();
  BOOST_TEST(a.wait_idle(1s));
}

BOOST_AUTO_TEST_CASE(waiters_are_served_in_arrival_order) {
  admission a(1, 8);
  BOOST_TEST((a.acquire() == admission::outcome::admitted));
  std::vector<int> order;
  std::mutex m;
  std::vector<std::thread> ts;
  for (int i = 0; i < 4; ++i) {
    ts.emplace_back([&, i] {
      BOOST_TEST((a.acquire() == admission::outcome::admitted));
      {
        std::lock_guard<std::mutex> l(m);
        order.push_back(i);
      }
      a.release();
    });
    // The next one arrives after this one queued.
    BOOST_REQUIRE(eventually([&] { return a.waiting() == static_cast<std::size_t>(i + 1); }));
  }
  a.release();
  for (auto& t : ts) t.join();
  BOOST_TEST(order == (std::vector<int>{0, 1, 2, 3}));
  BOOST_TEST(a.running() == 0u);
}

BOOST_AUTO_TEST_CASE(close_wakes_waiters_and_refuses_later_ones) {
  admission a(1, 4);
  BOOST_TEST((a.acquire() == admission::outcome::admitted));
  std::thread waiter([&] { BOOST_TEST((a.acquire() == admission::outcome::closed)); });
  BOOST_REQUIRE(eventually([&] { return a.waiting() == 1; }));
  a.close();
  waiter.join();
  BOOST_TEST((a.acquire() == admission::outcome::closed));
  BOOST_TEST(!a.wait_idle(10ms));
  a.release();
  BOOST_TEST(a.wait_idle(10ms));
  BOOST_CHECK_THROW(admission(0, 1), std::exception);
}
