// Load-aware prefill/decode placement: queue, utilisation and cached prefix
// pick the instances; sustained imbalance switches a role, a brief one does
// not, and no role is ever left empty.

#define BOOST_TEST_MODULE policies.pd_placement
#include <boost/test/unit_test.hpp>

#include "policies/pd_placement.hpp"

using namespace kvflow::policies;

namespace {

pd_instance prefill(std::uint64_t queued = 0, double util = 0) {
  pd_instance x;
  x.role = pd_role::prefill;
  x.queued_prefill_tokens = queued;
  x.utilisation = util;
  return x;
}

pd_instance decode(std::uint32_t active = 0, std::uint32_t max = 64) {
  pd_instance x;
  x.role = pd_role::decode;
  x.active_decodes = active;
  x.max_decodes = max;
  return x;
}

}  // namespace

BOOST_AUTO_TEST_CASE(prefill_goes_to_the_shortest_queue_and_decode_to_the_emptiest_batch) {
  std::vector<pd_instance> xs{prefill(8000), prefill(1000), decode(30), decode(5)};
  pd_request r;
  r.prompt_tokens = 2000;
  auto c = place(xs, r, {});
  BOOST_REQUIRE(c.has_value());
  BOOST_TEST(c->prefill == 1u);
  BOOST_TEST(c->decode == 3u);
  BOOST_TEST(c->transfer_s > 0.0);
}

BOOST_AUTO_TEST_CASE(utilisation_and_a_cached_prefix_count) {
  pd_request r;
  r.prompt_tokens = 4000;
  // Equal queues: the less busy device wins.
  std::vector<pd_instance> xs{prefill(1000, 0.9), prefill(1000, 0.1), decode()};
  BOOST_TEST(place(xs, r, {})->prefill == 1u);
  // The busy one holds 3500 of the prompt's tokens: recomputing them costs more.
  r.cached_tokens = {3500, 0, 0};
  BOOST_TEST(place(xs, r, {})->prefill == 0u);
}

BOOST_AUTO_TEST_CASE(a_full_batch_is_a_last_resort_and_down_instances_are_skipped) {
  std::vector<pd_instance> xs{prefill(), decode(64, 64), decode(60, 64)};
  pd_request r;
  r.prompt_tokens = 100;
  BOOST_TEST(place(xs, r, {})->decode == 2u);
  xs[2].up = false;
  BOOST_TEST(place(xs, r, {})->decode == 1u);  // the only decode instance up, full or not
  // No decode instance up at all: the prefill instance decodes too, with no transfer.
  xs[1].up = false;
  auto c = place(xs, r, {});
  BOOST_TEST(c->decode == 0u);
  BOOST_TEST(c->transfer_s == 0.0);
  xs[0].up = false;
  BOOST_TEST(!place(xs, r, {}).has_value());
}

BOOST_AUTO_TEST_CASE(pressure_is_queued_seconds_and_batch_fill) {
  pd_costs costs;
  costs.prefill_s_per_token = 1e-4;
  pd_rebalance_options o;
  o.prefill_target_s = 1.0;
  std::vector<pd_instance> xs{prefill(20000), prefill(0), decode(16, 64), decode(48, 64)};
  auto p = pressure(xs, costs, o);
  BOOST_TEST(p.prefill == 1.0, boost::test_tools::tolerance(1e-9));  // 2 s of work over 2 instances
  BOOST_TEST(p.decode == 0.5, boost::test_tools::tolerance(1e-9));
}

BOOST_AUTO_TEST_CASE(sustained_prefill_imbalance_moves_the_idlest_decoder_to_prefill) {
  pd_costs costs;
  costs.prefill_s_per_token = 1e-4;
  pd_rebalance_options o;
  o.hold_s = 2;
  o.cooldown_s = 3;
  pd_rebalancer rb(o);
  // A burst of long prompts: 5 s of prefill work, decode batches nearly empty.
  std::vector<pd_instance> xs{prefill(50000), decode(3), decode(1), decode(2)};
  BOOST_TEST(!rb.observe(0.0, xs, costs).has_value());
  BOOST_TEST(!rb.observe(1.0, xs, costs).has_value());  // not long enough yet
  auto s = rb.observe(2.5, xs, costs);
  BOOST_REQUIRE(s.has_value());
  BOOST_TEST(s->instance == 2u);  // fewest active decodes
  BOOST_TEST((s->to == pd_role::prefill));
  xs[2].role = pd_role::prefill;
  // Still imbalanced (5 s over 2 instances), but the cooldown holds the next switch.
  BOOST_TEST(!rb.observe(4.0, xs, costs).has_value());
  auto s2 = rb.observe(5.6, xs, costs);
  BOOST_REQUIRE(s2.has_value());
  BOOST_TEST(s2->instance == 3u);
  xs[3].role = pd_role::prefill;
  // One decoder left: it is never taken, however long the imbalance lasts.
  for (double t = 6; t < 20; t += 1) BOOST_TEST(!rb.observe(t, xs, costs).has_value());
}

BOOST_AUTO_TEST_CASE(a_brief_imbalance_switches_nothing_and_decode_pressure_switches_back) {
  pd_costs costs;
  costs.prefill_s_per_token = 1e-4;
  pd_rebalance_options o;
  o.hold_s = 2;
  o.cooldown_s = 0;
  pd_rebalancer rb(o);
  std::vector<pd_instance> busy{prefill(50000), prefill(0), decode(2)};
  std::vector<pd_instance> calm{prefill(0), prefill(0), decode(2)};
  BOOST_TEST(!rb.observe(0.0, busy, costs).has_value());
  BOOST_TEST(!rb.observe(1.5, busy, costs).has_value());
  BOOST_TEST(!rb.observe(1.8, calm, costs).has_value());  // the burst ended: the clock restarts
  BOOST_TEST(!rb.observe(3.0, busy, costs).has_value());
  BOOST_TEST(!rb.observe(4.5, busy, costs).has_value());
  // A burst of long generations: decode batches fill up, prefill queues are empty.
  std::vector<pd_instance> gen{prefill(0), prefill(100), decode(60, 64)};
  BOOST_TEST(!rb.observe(10.0, gen, costs).has_value());
  auto s = rb.observe(12.0, gen, costs);
  BOOST_REQUIRE(s.has_value());
  BOOST_TEST(s->instance == 0u);  // the prefill instance with the shorter queue
  BOOST_TEST((s->to == pd_role::decode));
}
