#define BOOST_TEST_MODULE devices.host.pinned_slab
#include <boost/test/unit_test.hpp>

#include <atomic>
#include <cstring>
#include <memory>
#include <thread>
#include <vector>

#include "devices/host/pinned_slab.hpp"
#include "messages/error.hpp"

using namespace kvflow;
using namespace kvflow::devices;

namespace {
constexpr std::size_t slot = 2 * io_alignment;
}

BOOST_AUTO_TEST_CASE(leases_are_runs_of_whole_slots_that_do_not_overlap) {
  pinned_slab s(slot, 8);
  BOOST_TEST(s.capacity() == 8 * slot);
  auto a = s.take(1);         // one slot
  auto b = s.take(slot + 1);  // two: larger than a slot
  auto c = s.take(3 * slot);  // three
  BOOST_REQUIRE(a);
  BOOST_REQUIRE(b);
  BOOST_REQUIRE(c);
  BOOST_TEST(b->size() == slot + 1);
  BOOST_TEST(s.free_slots() == 2u);
  std::memset(a->data(), 1, a->size());
  std::memset(b->data(), 2, b->size());
  std::memset(c->data(), 3, c->size());
  BOOST_TEST(a->data()[0] == 1);
  BOOST_TEST(b->data()[slot] == 2);
  BOOST_TEST(c->data()[3 * slot - 1] == 3);
  BOOST_TEST((b->data() >= a->data() + slot || b->data() + 2 * slot <= a->data()));
  BOOST_TEST((c->data() >= b->data() + 2 * slot || c->data() + 3 * slot <= b->data()));
  BOOST_TEST(!s.take(3 * slot));  // two free slots: a run of three waits
  b.reset();
  BOOST_TEST(s.free_slots() == 4u);
  auto d = s.take(4 * slot);  // b's two and the last two are not adjacent
  BOOST_TEST(!d);
  a.reset();
  c.reset();
  d = s.take(8 * slot);  // all returned: the whole slab in one run
  BOOST_REQUIRE(d);
  BOOST_TEST(s.free_slots() == 0u);
}

BOOST_AUTO_TEST_CASE(more_than_the_slab_or_nothing_is_an_error_not_a_wait) {
  pinned_slab s(slot, 4);
  BOOST_CHECK_THROW(s.take(4 * slot + 1), error);
  BOOST_CHECK_THROW(s.take(0), error);
  BOOST_CHECK_THROW(pinned_slab(0, 4), error);
  BOOST_CHECK_THROW(pinned_slab(slot, 0), error);
}

BOOST_AUTO_TEST_CASE(a_take_that_found_too_few_hears_when_slots_return_on_another_thread) {
  pinned_slab s(slot, 2);
  std::atomic<int> heard{0};
  s.set_on_free([&] { ++heard; });
  auto a = s.take(2 * slot);
  BOOST_REQUIRE(a);
  a.reset();  // nobody waited: no notice
  BOOST_TEST(heard.load() == 0);
  a = s.take(2 * slot);
  BOOST_TEST(!s.take(1));
  std::thread t([held = std::move(a)]() mutable { held.reset(); });
  t.join();
  BOOST_TEST(heard.load() == 1);
  BOOST_TEST(s.take(1) != nullptr);
}

BOOST_AUTO_TEST_CASE(a_lease_keeps_the_memory_after_the_slab_is_gone) {
  std::shared_ptr<pinned_slab::lease> kept;
  {
    pinned_slab s(slot, 2);
    kept = s.take(slot);
  }
  BOOST_REQUIRE(kept);
  std::memset(kept->data(), 7, kept->size());
  BOOST_TEST(kept->data()[slot - 1] == 7);
}
