#define BOOST_TEST_MODULE policies.stage_plan
#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <string>
#include <vector>

#include "messages/error.hpp"
#include "policies/batch_state.hpp"
#include "policies/policy.hpp"
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

namespace {

// The layers of the load grants of one decide() on a fresh request of 8
// cached chunks (of 9) and 4 layers, with the links capped at one chunk.
std::vector<std::uint32_t> first_load_layers(const std::string& policy, std::vector<std::uint32_t> bounds) {
  caps c;
  c.load_bytes.fill(4 * 64);  // one chunk per link
  c.stage_bounds = std::move(bounds);
  batch_state b(c);
  msg::register_request reg;
  reg.request_id = 1;
  reg.chunk_tokens = 16;
  reg.num_chunks = 9;
  reg.num_layers = 4;
  reg.chunk_tiers.assign(8, msg::tier::host);
  reg.chunk_bytes = 4 * 64;
  b.add(reg);
  auto pol = make_policy(policy);
  std::vector<std::uint32_t> layers;
  for (auto& g : pol->decide(b, cost_model{}))
    if (g.act == msg::action::load)
      for (auto l = g.cells.layer_begin; l < g.cells.layer_end; ++l) layers.push_back(l);
  return layers;
}

}  // namespace

// Each stage loads its own layers over its own link: with two stages the
// first decision already loads layers of both, where one link would load
// the lowest layer first.
BOOST_AUTO_TEST_CASE(every_stage_link_loads_its_own_layers_at_once) {
  for (auto policy : {"load_only", "two_pointer"}) {
    BOOST_TEST_CONTEXT(policy) {
      auto one = first_load_layers(policy, {});
      BOOST_TEST(!one.empty());
      BOOST_TEST(std::all_of(one.begin(), one.end(), [](auto l) { return l < 2; }));
      auto two = first_load_layers(policy, {0, 2, 4});
      BOOST_TEST(std::any_of(two.begin(), two.end(), [](auto l) { return l < 2; }));
      BOOST_TEST(std::any_of(two.begin(), two.end(), [](auto l) { return l >= 2; }));
    }
  }
}

// A load over layers of two stages counts on both stages' links, and
// leaves them when it completes.
BOOST_AUTO_TEST_CASE(a_load_counts_on_the_links_of_its_stages) {
  caps c;
  c.stage_bounds = {0, 2, 4};
  batch_state b(c);
  msg::register_request reg;
  reg.request_id = 1;
  reg.num_chunks = 3;
  reg.num_layers = 4;
  reg.chunk_tiers.assign(2, msg::tier::disk);
  reg.chunk_bytes = 400;
  b.add(reg);
  msg::grant g;
  g.request_id = 1;
  g.act = msg::action::load;
  g.cells = {0, 2, 1, 4};  // layer 1 on stage 0, layers 2-3 on stage 1
  g.source = msg::tier::disk;
  b.apply(g);
  BOOST_TEST(b.stage_load_in_flight(0, msg::tier::disk) == 200u);
  BOOST_TEST(b.stage_load_in_flight(1, msg::tier::disk) == 400u);
  BOOST_TEST(b.in_flight().load_bytes[static_cast<std::size_t>(msg::tier::disk)] == 600u);
  msg::cell_done done;
  done.request_id = 1;
  done.grant_id = g.grant_id;
  done.act = msg::action::load;
  done.cells = g.cells;
  b.apply(done);
  BOOST_TEST(b.stage_load_in_flight(0, msg::tier::disk) == 0u);
  BOOST_TEST(b.stage_load_in_flight(1, msg::tier::disk) == 0u);
}
