#define BOOST_TEST_MODULE actors.deadline_watchdog
#include <boost/test/unit_test.hpp>

#include <chrono>
#include <cstdint>
#include <utility>

#include <caf/all.hpp>

#include "actors/atoms.hpp"
#include "actors/request_actor.hpp"
#include "actors/system_config.hpp"

// The watchdog that keeps every request's deadline: it must fire in time,
// stay silent for requests that finished, and hold no CAF timer per request
// (each timer stays in CAF's clock, with its message, until it fires: one per
// request was the soak's growth of about 220 bytes a request).

using namespace kvflow;
using namespace std::chrono_literals;

namespace {

struct fixture {
  system_config cfg;
  caf::actor_system sys{cfg};
  caf::scoped_actor self{sys};
  caf::actor dog = sys.spawn(deadline_watchdog, std::size_t{16});

  ~fixture() { self->send_exit(dog, caf::exit_reason::user_shutdown); }

  // (requests waiting, CAF timers in flight)
  std::pair<std::uint64_t, std::uint64_t> stats() {
    std::pair<std::uint64_t, std::uint64_t> out{~0ull, ~0ull};
    self->request(dog, caf::infinite, stats_atom::value)
        .receive(
            [&](std::uint64_t waiting, std::uint64_t armed) {
              out = {waiting, armed};
            },
            [&](caf::error& e) { BOOST_FAIL("stats: " << sys.render(e)); });
    return out;
  }

  // Registers `id` (the scoped actor stands in for its request actor).
  void watch(std::uint64_t id, std::chrono::milliseconds in) {
    self->send(dog, deadline_atom::value, id, caf::actor_cast<caf::actor>(self), static_cast<std::int64_t>(in.count()));
  }

  // How many deadline_atom arrive within `window`.
  int deadlines_within(std::chrono::milliseconds window) {
    int n = 0;
    bool more = true;
    const auto until = std::chrono::steady_clock::now() + window;
    while (more) {
      const auto left = until - std::chrono::steady_clock::now();
      if (left <= decltype(left)::zero()) break;
      self->receive([&](deadline_atom) { ++n; },
                    caf::after(std::chrono::ceil<std::chrono::milliseconds>(left)) >> [&] { more = false; });
    }
    return n;
  }
};

}  // namespace

BOOST_FIXTURE_TEST_CASE(thousands_of_finished_requests_hold_one_timer, fixture) {
  // Deadlines far away, as request_timeout_s makes them: every request
  // finishes long before its deadline.
  for (std::uint64_t id = 1; id <= 5000; ++id) {
    watch(id, 600s);
    self->send(dog, done_atom::value, id);
  }
  auto [waiting, armed] = stats();
  BOOST_TEST(waiting == 0u);
  BOOST_TEST(armed == 1u);  // the first request's timer; later ones were not earlier
  // Live requests: still one timer for all of them.
  for (std::uint64_t id = 10001; id <= 10100; ++id) watch(id, 600s);
  std::tie(waiting, armed) = stats();
  BOOST_TEST(waiting == 100u);
  BOOST_TEST(armed == 1u);
}

BOOST_FIXTURE_TEST_CASE(deadlines_fire_in_order_and_finished_ones_stay_silent, fixture) {
  watch(1, 600s);  // arms a far timer first
  watch(2, 60ms);  // earlier: must get a timer of its own
  watch(3, 80ms);
  self->send(dog, done_atom::value, std::uint64_t{3});  // finished: no deadline
  watch(4, 100ms);
  const auto t0 = std::chrono::steady_clock::now();
  BOOST_TEST(deadlines_within(600ms) == 2);  // 2 and 4, not 3, not yet 1
  BOOST_TEST((std::chrono::steady_clock::now() - t0 >= 600ms));
  auto [waiting, armed] = stats();
  BOOST_TEST(waiting == 1u);  // request 1
  BOOST_TEST(armed == 1u);    // its 600 s timer
}

BOOST_FIXTURE_TEST_CASE(a_deadline_fires_no_earlier_than_asked, fixture) {
  const auto t0 = std::chrono::steady_clock::now();
  watch(8, 120ms);
  self->receive([](deadline_atom) {}, caf::after(2s) >> [] { BOOST_FAIL("no deadline in 2 s"); });
  const auto took = std::chrono::steady_clock::now() - t0;
  BOOST_TEST((took >= 120ms));
  BOOST_TEST((took < 1500ms));
  auto [waiting, armed] = stats();
  BOOST_TEST(waiting == 0u);
  BOOST_TEST(armed == 0u);  // nothing left to wait for: no timer
}
