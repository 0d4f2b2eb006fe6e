// The oracles of blend_bound on the tiny random model: the full recompute's
// own KV scores agreement 1 and KL 0, layer 0 is context-free (exact KV from
// layer 1 up is the full recompute), and the token oracles are reported at
// the ratio asked.
#define BOOST_TEST_MODULE kernels.model.blend_bound
#include <boost/test/unit_test.hpp>

#include <random>
#include <string>
#include <vector>

#include "kernels/model/blend_bound.hpp"
#include "kernels/model/cpu_engine.hpp"
#include "messages/error.hpp"

using namespace kvflow::model;

namespace {

// System text of 5 tokens, documents of 9, 14 and 11, a question of 6.
quality_case make_case(const config& c, unsigned seed) {
  std::mt19937 gen(seed);
  std::uniform_int_distribution<int> d(0, c.vocab_size - 1);
  quality_case q;
  for (auto [count, doc] : {std::pair{5, false}, {9, true}, {14, true}, {11, true}, {6, false}}) {
    q.segments.push_back({static_cast<int>(q.prompt.size()), count, doc});
    for (int i = 0; i < count; ++i) q.prompt.push_back(d(gen));
  }
  return q;
}

const bound_point& find(const std::vector<bound_point>& points, const std::string& kind, const std::string& sel,
                        int layer) {
  for (const auto& p : points)
    if (p.kind == kind && p.selection == sel && p.layer == layer) return p;
  BOOST_FAIL("no bound " + kind + " " + sel + " " + std::to_string(layer));
  return points.front();
}

}  // namespace

BOOST_AUTO_TEST_CASE(oracles_score_what_they_say) {
  auto e = make_cpu_engine(random_weights(preset("tiny-test"), 5), 2);
  const std::vector<quality_case> cases{make_case(e->cfg(), 1), make_case(e->cfg(), 2)};
  bound_options o;
  o.ratio = 0.3;
  o.layer_cuts = {1, 2};
  o.candidates = 4;
  o.steps = 3;
  const auto points = evaluate_bounds(*e, cases, 6, o);
  for (const auto& p : points) {
    BOOST_TEST_CONTEXT(p.kind << " " << p.selection << " " << p.layer) { BOOST_TEST(p.score.samples == 12); }
  }
  const auto& full = find(points, "full", "", 0);
  BOOST_TEST(full.top1() == 1.0);
  BOOST_TEST(full.kl() < 1e-9);
  // Layer 0's KV depends on the token and position alone: exact from layer
  // 1 up is the full recompute (to float rounding); exact below 1 changes
  // nothing.
  const auto& from1 = find(points, "exact_layers_from", "", 1);
  const auto& placed = find(points, "placed", "", 0);
  const auto& below1 = find(points, "exact_layers_below", "", 1);
  BOOST_TEST(from1.top1() == 1.0);
  BOOST_TEST(from1.kl() < 1e-6);
  BOOST_TEST(placed.kl() > 1e-4);
  BOOST_TEST(std::abs(below1.kl() - placed.kl()) < 1e-6 * (1 + placed.kl()));
  for (const char* s : {"true_deviation", "marginal", "greedy"})
    BOOST_TEST(find(points, "oracle_tokens", s, 0).ratio == 0.3);
  o.ratio = 0;
  BOOST_CHECK_THROW(evaluate_bounds(*e, cases, 6, o), kvflow::error);
  o.ratio = 0.3;
  o.layer_cuts = {4};  // tiny-test has 4 layers: no cut at its end
  BOOST_CHECK_THROW(evaluate_bounds(*e, cases, 6, o), kvflow::error);
}
