#define BOOST_TEST_MODULE policies.recompute_ratio
#include <boost/test/unit_test.hpp>

#include "messages/error.hpp"
#include "policies/recompute_ratio.hpp"

using namespace kvflow::policies;

namespace {

// llama-3-8b-like numbers: 16k tokens of documents and 256 of question, 32
// layers, 64 us per token over all layers (1 s for 16k), 128 KiB of bf16 KV
// per token over all layers.
recompute_inputs llama(double gbytes_per_s) {
  recompute_inputs in;
  in.document_tokens = 16384;
  in.other_tokens = 256;
  in.layers = 32;
  in.check_layers = 2;
  in.token_layer_s = 64e-6 / 32;
  in.kv_bytes_per_token_layer = 131072.0 / 32;
  in.load_bytes_per_s = gbytes_per_s * 1e9;
  return in;
}

}  // namespace

BOOST_AUTO_TEST_CASE(fast_tiers_stay_at_the_quality_floor) {
  auto p = choose_recompute_ratio(llama(50));  // pinned host memory
  BOOST_TEST(!p.full_recompute);
  BOOST_TEST(p.ratio == 0.15);
  BOOST_TEST(p.estimate_s == p.compute_s);  // compute-bound
  BOOST_TEST(p.full_recompute_s / p.estimate_s > 3.5);
}

BOOST_AUTO_TEST_CASE(slow_links_recompute_more_and_never_plan_slower_than_full) {
  double last_ratio = 0;
  for (double gb : {50.0, 5.0, 2.0, 1.25, 0.5, 0.1, 0.01}) {
    auto p = choose_recompute_ratio(llama(gb));
    BOOST_TEST(p.ratio >= last_ratio, gb << " GB/s");
    BOOST_TEST(p.estimate_s <= p.full_recompute_s + 1e-12, gb << " GB/s");
    BOOST_TEST(p.estimate_s >= p.compute_s - 1e-12);
    last_ratio = p.ratio;
  }
  // At 10 Gbit/s loading 16k tokens takes 1.7 s against 1.05 s of compute:
  // the plan recomputes up to where both take the same time.
  auto p = choose_recompute_ratio(llama(1.25));
  BOOST_TEST(p.ratio > 0.15);
  BOOST_TEST(p.ratio < 1);
  BOOST_TEST(std::abs(p.compute_s - p.load_s) < 1e-9);
  // At 10 MB/s the loads never pay off.
  BOOST_TEST(choose_recompute_ratio(llama(0.01)).full_recompute);
  // Reuse is planned only where it beats a full recompute by min_speedup.
  for (double gb : {50.0, 5.0, 2.0, 1.25, 0.5, 0.1}) {
    auto p = choose_recompute_ratio(llama(gb));
    BOOST_TEST((p.full_recompute || p.full_recompute_s >= 1.1 * p.estimate_s), gb << " GB/s");
  }
}

BOOST_AUTO_TEST_CASE(a_busy_gpu_recomputes_less) {
  auto idle = llama(1.25);
  auto busy = idle;
  busy.compute_share = 0.5;
  auto pi = choose_recompute_ratio(idle), pb = choose_recompute_ratio(busy);
  BOOST_TEST(pb.ratio < pi.ratio);
  BOOST_TEST(pb.full_recompute_s == 2 * pi.full_recompute_s);
}

BOOST_AUTO_TEST_CASE(only_reused_tokens_move) {
  auto in = llama(5);
  in.check_layers = 0;  // EPIC: nothing but the reused rows
  in.min_ratio = in.max_ratio = 0.25;
  auto p = choose_recompute_ratio(in);
  BOOST_TEST(p.ratio == 0.25);
  BOOST_TEST(p.load_bytes == 0.75 * 16384 * 131072);
  in.check_layers = 2;  // CacheBlend also reads the last check layer of every document token
  p = choose_recompute_ratio(in);
  BOOST_TEST(p.load_bytes == 16384 * (1 + 0.75 * 30) * 4096.0);
}

BOOST_AUTO_TEST_CASE(nothing_to_load_is_a_full_recompute) {
  auto in = llama(0);
  auto p = choose_recompute_ratio(in);
  BOOST_TEST(p.full_recompute);
  BOOST_TEST(p.ratio == 1);
  BOOST_TEST(p.load_bytes == 0);
  in = llama(50);
  in.document_tokens = 0;
  BOOST_TEST(choose_recompute_ratio(in).full_recompute);
}

// Compute that waits for the last load (rows run per group of documents)
// moves the balance to more recompute and lengthens the plan: at 1.25 GB/s
// the balance satisfies (1 - t) compute = load, and the estimate is
// load + t compute there.
BOOST_AUTO_TEST_CASE(a_compute_tail_after_the_loads_recomputes_more) {
  auto in = llama(1.25);
  in.check_layers = 0;
  const auto overlapped = choose_recompute_ratio(in);
  in.tail_share = 0.25;
  const auto tail = choose_recompute_ratio(in);
  BOOST_TEST(!tail.full_recompute);
  BOOST_TEST(tail.ratio > overlapped.ratio);
  BOOST_TEST(tail.estimate_s > overlapped.estimate_s);
  BOOST_TEST(0.75 * tail.compute_s == tail.load_s, boost::test_tools::tolerance(1e-9));
  BOOST_TEST(tail.estimate_s == tail.load_s + 0.25 * tail.compute_s, boost::test_tools::tolerance(1e-9));
  BOOST_TEST(recompute_estimate_s(in, tail.ratio) == tail.estimate_s);
  // Where the tail leaves reuse less than min_speedup faster: a full recompute.
  in.tail_share = 0.9;
  BOOST_TEST(choose_recompute_ratio(in).full_recompute);
  in.tail_share = 1;
  BOOST_CHECK_THROW(choose_recompute_ratio(in), kvflow::error);
}

BOOST_AUTO_TEST_CASE(a_split_computes_the_leading_documents_while_the_rest_loads) {
  // 10 Gbit/s: loading every document (2.1 GB, 1.7 s) is slower than
  // computing them (1 s). Without a split the balance ratio is high and its
  // tail waits for the loads; computing the first documents in full while
  // the later ones load at the quality floor plans faster, and nothing
  // plans slower than a full recompute.
  auto in = llama(1.25);
  in.check_layers = 0;  // EPIC, as the bench restores
  in.tail_share = 0.25;
  const auto uniform = choose_recompute_ratio(in);
  in.split_front = true;
  const auto split = choose_recompute_ratio(in);
  BOOST_TEST(!split.full_recompute);
  BOOST_TEST(split.ratio == 0.15);
  BOOST_TEST(split.front_share > 0.3);
  BOOST_TEST(split.front_share < 0.9);
  BOOST_TEST(split.estimate_s < uniform.estimate_s);
  BOOST_TEST(split.estimate_s * in.min_speedup < split.full_recompute_s);
  // The estimate is what recompute_split_estimate_s says at the plan.
  BOOST_TEST(split.estimate_s == recompute_split_estimate_s(in, split.front_share, split.ratio));
  // Front share 0 is the uniform plan at the floor.
  BOOST_TEST(recompute_split_estimate_s(in, 0, 0.15) == recompute_estimate_s(in, 0.15),
             boost::test_tools::tolerance(1e-12));
  // A fast tier needs no split.
  auto host = llama(50);
  host.split_front = true;
  BOOST_TEST(choose_recompute_ratio(host).front_share == 0);
  // Where even computing everything up front beats loads, the plan is a full recompute.
  for (double gb : {0.5, 0.1, 0.01}) {
    auto slow = llama(gb);
    slow.split_front = true;
    slow.tail_share = 0.25;
    const auto p = choose_recompute_ratio(slow);
    BOOST_TEST(p.estimate_s <= p.full_recompute_s, gb << " GB/s");
    if (p.full_recompute) BOOST_TEST(p.front_share == 0);
  }
}

BOOST_AUTO_TEST_CASE(a_fixed_cost_and_a_measured_full_recompute_decide_reuse) {
  // A slow tier where the split plan is a little faster than computing
  // everything by the rate (the H200's disk case).
  auto in = llama(2);
  in.split_front = true;
  in.tail_share = 0.25;
  const auto base = choose_recompute_ratio(in);
  BOOST_TEST_REQUIRE(!base.full_recompute);
  BOOST_TEST(base.fixed_s == 0);
  // The measured full recompute replaces the rate's estimate.
  auto measured = in;
  measured.full_recompute_s = base.full_recompute_s * 0.9;
  BOOST_TEST(choose_recompute_ratio(measured).full_recompute_s == measured.full_recompute_s);
  // A fixed cost that leaves the margin: the same plan, carrying it.
  auto small = in;
  small.fixed_s = 0.01 * base.estimate_s;
  const auto p = choose_recompute_ratio(small);
  BOOST_TEST(!p.full_recompute);
  BOOST_TEST(p.ratio == base.ratio);
  BOOST_TEST(p.front_share == base.front_share);
  BOOST_TEST(p.fixed_s == small.fixed_s);
  // One that eats it (estimate + fixed within min_speedup of the full
  // recompute): a full recompute, never a reuse that is slower.
  auto big = in;
  big.fixed_s = base.full_recompute_s / in.min_speedup - base.estimate_s + 1e-6;
  BOOST_TEST(choose_recompute_ratio(big).full_recompute);
  // Likewise a full recompute measured faster than the rate says.
  auto fast = in;
  fast.full_recompute_s = base.estimate_s * in.min_speedup;
  BOOST_TEST(choose_recompute_ratio(fast).full_recompute);
  in.fixed_s = -1;
  BOOST_CHECK_THROW(choose_recompute_ratio(in), kvflow::error);
}

BOOST_AUTO_TEST_CASE(bad_inputs_are_refused) {
  auto in = llama(1);
  in.layers = 0;
  BOOST_CHECK_THROW(choose_recompute_ratio(in), kvflow::error);
  in = llama(1);
  in.compute_share = 0;
  BOOST_CHECK_THROW(choose_recompute_ratio(in), kvflow::error);
  in = llama(1);
  in.min_ratio = 0.5;
  in.max_ratio = 0.2;
  BOOST_CHECK_THROW(choose_recompute_ratio(in), kvflow::error);
  in = llama(1);
  in.token_layer_s = 0;
  BOOST_CHECK_THROW(choose_recompute_ratio(in), kvflow::error);
  in = llama(1);
  in.min_speedup = 0.5;
  BOOST_CHECK_THROW(choose_recompute_ratio(in), kvflow::error);
}
