#define BOOST_TEST_MODULE policies.stage_plan
#include <boost/test/unit_test.hpp>

#include <vector>

#include "messages/error.hpp"
#include "policies/stage_plan.hpp"

using namespace kvflow;
using namespace kvflow::policies;

using bounds_t = std::vector<std::uint32_t>;

BOOST_AUTO_TEST_CASE(even_split_gives_the_remainder_to_the_first_stages) {
  BOOST_TEST(stage_bounds(30, 0) == (bounds_t{0, 30}));
  BOOST_TEST(stage_bounds(30, 1) == (bounds_t{0, 30}));
  BOOST_TEST(stage_bounds(30, 2) == (bounds_t{0, 15, 30}));
  BOOST_TEST(stage_bounds(30, 4) == (bounds_t{0, 8, 16, 23, 30}));
  BOOST_TEST(stage_bounds(80, 8).back() == 80u);
  BOOST_TEST(stage_bounds(3, 3) == (bounds_t{0, 1, 2, 3}));
}

BOOST_AUTO_TEST_CASE(explicit_splits_are_the_boundaries) {
  BOOST_TEST(stage_bounds(32, 0, {10}) == (bounds_t{0, 10, 32}));
  BOOST_TEST(stage_bounds(32, 3, {4, 30}) == (bounds_t{0, 4, 30, 32}));
}

BOOST_AUTO_TEST_CASE(unusable_layouts_are_refused) {
  auto refused = [](const error& e) { return e.code() == errc::invalid_argument; };
  BOOST_CHECK_EXCEPTION(stage_bounds(2, 3), error, refused);
  BOOST_CHECK_EXCEPTION(stage_bounds(2, -1), error, refused);
  BOOST_CHECK_EXCEPTION(stage_bounds(0, 1), error, refused);
  BOOST_CHECK_EXCEPTION(stage_bounds(32, 0, {10, 10}), error, refused);
  BOOST_CHECK_EXCEPTION(stage_bounds(32, 0, {0}), error, refused);
  BOOST_CHECK_EXCEPTION(stage_bounds(32, 0, {32}), error, refused);
  BOOST_CHECK_EXCEPTION(stage_bounds(32, 0, {20, 10}), error, refused);
  BOOST_CHECK_EXCEPTION(stage_bounds(32, 4, {10}), error, refused);
}

BOOST_AUTO_TEST_CASE(stage_of_finds_the_owner_of_a_layer) {
  auto b = stage_bounds(30, 4);  // 0 8 16 23 30
  BOOST_TEST(stage_of(b, 0) == 0u);
  BOOST_TEST(stage_of(b, 7) == 0u);
  BOOST_TEST(stage_of(b, 8) == 1u);
  BOOST_TEST(stage_of(b, 22) == 2u);
  BOOST_TEST(stage_of(b, 23) == 3u);
  BOOST_TEST(stage_of(b, 29) == 3u);
  BOOST_TEST(stage_of(stage_bounds(30, 1), 29) == 0u);
  BOOST_TEST(stage_of({}, 5) == 0u);
}
