// The runtime's document path follows recompute_ratio's plan: the caller's
// ratio as given; with measured rates, the leading documents the store holds
// are computed in full where loading them is slower than computing them
// (split_front), and a slow enough tier means a full recompute; documents
// the store lacks are always computed alone, so that they get stored; a
// measured full recompute and the path's measured fixed cost decide
// whether reuse pays at all.
#define BOOST_TEST_MODULE actors.document_plan
#include <boost/test/unit_test.hpp>

#include <numeric>

#include "actors/document_request.hpp"
#include "devices/document_store.hpp"
#include "kernels/model/config.hpp"
#include "tests/devices/test_util.hpp"

using namespace kvflow;
using namespace kvflow::devices::test;

namespace {

model::config small_model() {
  model::config c;
  c.layers = 4;
  c.kv_heads = 2;
  c.head_dim = 32;
  return c;
}

// System text, four documents of 32 tokens, a question; the first three
// documents stored.
struct fixture {
  scratch_dir dir;
  devices::chunk_store_options o = store_options(dir.path, 64, small_shape());
  document_params p;
  fixture() {
    p.store = std::make_shared<devices::chunk_store>(o);
    p.rates = std::make_shared<document_rates>();
    p.segments = {{0, 8, false}, {8, 32, true}, {40, 32, true}, {72, 32, true}, {104, 32, true}, {136, 8, false}};
    model::kv_shape doc = small_shape();
    doc.tokens = 32;
    const auto kv = block_of(doc, 3);
    for (int d = 0; d < 4; ++d) {
      std::vector<std::int32_t> t(32);
      std::iota(t.begin(), t.end(), 100 * d);
      p.keys.push_back(devices::document_block_keys({}, "s", t, 16));
      if (d < 3) devices::store_document(*p.store, p.keys.back(), kv.data(), doc);
    }
    p.store->flush();
    p.blend.ratio = -1;  // the cost model's
  }
};

}  // namespace

BOOST_AUTO_TEST_CASE(a_given_ratio_is_the_plan) {
  fixture f;
  f.p.blend.ratio = 0.3;
  const auto plan = choose_document_plan(f.p, small_model());
  BOOST_TEST(plan.ratio == 0.3);
  BOOST_TEST(!plan.full_recompute);
  BOOST_TEST(documents_in_full(f.p, plan) == std::vector<bool>(4, false));
}

BOOST_AUTO_TEST_CASE(without_rates_the_plan_is_the_quality_floor) {
  fixture f;
  const auto plan = choose_document_plan(f.p, small_model());
  BOOST_TEST(plan.ratio == 0.15);
  BOOST_TEST(plan.front_share == 0.0);
  BOOST_TEST(documents_in_full(f.p, plan) == std::vector<bool>(4, false));
}

BOOST_AUTO_TEST_CASE(fast_loads_reuse_every_document) {
  fixture f;
  f.p.rates->observe_compute(1, 1e-3);  // 1 ms a token-layer
  f.p.rates->observe_load(1e12, 1);     // 1 TB/s
  const auto plan = choose_document_plan(f.p, small_model());
  BOOST_TEST(!plan.full_recompute);
  BOOST_TEST(plan.front_share == 0.0);
  BOOST_TEST(documents_in_full(f.p, plan) == std::vector<bool>(4, false));
}

BOOST_AUTO_TEST_CASE(slow_loads_compute_the_leading_documents_in_full) {
  fixture f;
  // Loading a document's token-layer (512 bytes) takes about as long as
  // computing a few: the split plan computes the leading documents while the
  // later ones load.
  f.p.rates->observe_compute(1, 1e-6);
  f.p.rates->observe_load(512, 2.2e-6);
  const auto plan = choose_document_plan(f.p, small_model());
  BOOST_TEST_MESSAGE("front_share " << plan.front_share << " ratio " << plan.ratio << " full " << plan.full_recompute);
  BOOST_TEST(!plan.full_recompute);
  BOOST_TEST(plan.front_share > 0.2);
  const auto in_full = documents_in_full(f.p, plan);
  BOOST_TEST(in_full[0]);
  BOOST_TEST(!in_full[3]);  // never the last: then the plan would be a full recompute
}

BOOST_AUTO_TEST_CASE(a_tier_slower_than_compute_means_a_full_recompute_of_what_is_stored) {
  fixture f;
  f.p.rates->observe_compute(1, 1e-6);
  f.p.rates->observe_load(1, 1);  // 1 byte/s
  const auto plan = choose_document_plan(f.p, small_model());
  BOOST_TEST(plan.full_recompute);
  // The fourth document is not stored: it is computed alone and stored.
  BOOST_TEST((documents_in_full(f.p, plan) == std::vector<bool>{true, true, true, false}));
}

BOOST_AUTO_TEST_CASE(a_measured_full_recompute_and_fixed_cost_can_make_reuse_not_pay) {
  fixture f;
  f.p.rates->observe_compute(1, 1e-3);
  f.p.rates->observe_load(1e12, 1);
  const auto reuse = choose_document_plan(f.p, small_model());
  BOOST_TEST_REQUIRE(!reuse.full_recompute);
  const double tokens = 144;
  // A short prompt's TTFT says nothing about a long one's: ignored.
  f.p.rates->observe_full(100, 1e3);
  BOOST_TEST(f.p.rates->full_s(tokens) == 0.0);
  // The ordinary path measured barely slower than the plan: a full recompute.
  f.p.rates->observe_full(2048, reuse.estimate_s * 1.05 * 2048 / tokens);
  BOOST_TEST(f.p.rates->full_s(tokens) == reuse.estimate_s * 1.05, boost::test_tools::tolerance(1e-9));
  const auto measured = choose_document_plan(f.p, small_model());
  BOOST_TEST(measured.full_recompute);
  BOOST_TEST(documents_in_full(f.p, measured) == std::vector<bool>({true, true, true, false}));
  // Measured much slower, reuse pays again, until the path's fixed cost eats the gain.
  auto g = fixture();
  g.p.rates->observe_compute(1, 1e-3);
  g.p.rates->observe_load(1e12, 1);
  g.p.rates->observe_full(2048, reuse.estimate_s * 3 * 2048 / tokens);
  BOOST_TEST(!choose_document_plan(g.p, small_model()).full_recompute);
  g.p.rates->observe_overhead(reuse.estimate_s * 2);
  BOOST_TEST(g.p.rates->overhead_s() == reuse.estimate_s * 2, boost::test_tools::tolerance(1e-9));
  const auto costly = choose_document_plan(g.p, small_model());
  BOOST_TEST(costly.full_recompute);
  BOOST_TEST(costly.full_recompute_s == reuse.estimate_s * 3, boost::test_tools::tolerance(1e-9));
}

BOOST_AUTO_TEST_CASE(the_fixed_cost_is_never_negative) {
  document_rates r;
  BOOST_TEST(r.overhead_s() == 0.0);
  r.observe_overhead(-0.5);  // a TTFT below the estimate
  BOOST_TEST(r.overhead_s() == 0.0);
}
