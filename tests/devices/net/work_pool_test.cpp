#define BOOST_TEST_MODULE devices.net.work_pool
#include <boost/test/unit_test.hpp>

#include <atomic>

#include "devices/net/work_pool.hpp"

using namespace kvflow::devices::net;

// Every posted job runs before the pool is gone; a pool of no threads runs
// them inline.
BOOST_AUTO_TEST_CASE(work_pool_runs_every_job) {
  std::atomic<int> ran{0};
  {
    work_pool pool(3);
    for (int i = 0; i < 100; ++i) pool.post([&] { ran.fetch_add(1); });
  }
  BOOST_TEST(ran.load() == 100);
  work_pool inline_pool(0);
  inline_pool.post([&] { ran.fetch_add(1); });
  BOOST_TEST(ran.load() == 101);
}
