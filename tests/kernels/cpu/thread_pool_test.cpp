#define BOOST_TEST_MODULE kernels.cpu.thread_pool
#include <boost/test/unit_test.hpp>

#include <atomic>
#include <stdexcept>
#include <vector>

#include "kernels/cpu/thread_pool.hpp"

using namespace kvflow::cpu;

BOOST_AUTO_TEST_CASE(runs_every_task_once_many_times) {
  thread_pool pool(3);
  BOOST_TEST(pool.size() == 3);
  for (int round = 0; round < 200; ++round) {
    int tasks = round % 17;
    std::vector<std::atomic<int>> hits(tasks);
    for (auto& h : hits) h = 0;
    pool.run(tasks, [&](int t) { ++hits[t]; });
    for (auto& h : hits) BOOST_REQUIRE_EQUAL(h.load(), 1);
  }
}

BOOST_AUTO_TEST_CASE(rethrows_a_task_failure_and_stays_usable) {
  thread_pool pool(2);
  BOOST_CHECK_THROW(pool.run(50,
                             [](int t) {
                               if (t == 7) throw std::runtime_error("task 7");
                             }),
                    std::runtime_error);
  std::atomic<int> sum{0};
  pool.run(10, [&](int t) { sum += t; });
  BOOST_TEST(sum.load() == 45);
}

BOOST_AUTO_TEST_CASE(inline_without_pool) {
  int sum = 0;
  parallel_for(nullptr, 4, [&](int t) { sum += t; });
  BOOST_TEST(sum == 6);
  thread_pool one(1);
  BOOST_TEST(one.size() == 1);
  one.run(3, [&](int t) { sum += t; });
  BOOST_TEST(sum == 9);
}
