#define BOOST_TEST_MODULE policies.cost_model
#include <boost/test/unit_test.hpp>

#include "policies/cost_model.hpp"

using namespace kvflow;
using namespace kvflow::policies;

namespace {

msg::cell_done compute_done(std::uint32_t c0, std::uint32_t c1, std::uint32_t layers, double seconds) {
  msg::cell_done d;
  d.act = msg::action::compute;
  d.cells = msg::cell_range{c0, c1, 0, layers};
  d.started_ns = 1000;
  d.finished_ns = 1000 + static_cast<std::uint64_t>(seconds * 1e9);
  return d;
}

}  // namespace

BOOST_AUTO_TEST_CASE(prior_until_samples) {
  cost_model m;
  BOOST_CHECK_CLOSE(m.compute_s(0, 1, 32), 37e-3, 1e-6);
  BOOST_CHECK_CLOSE(m.compute_s(63, 64, 32), 78e-3, 1e-6);
  BOOST_CHECK_CLOSE(m.bytes_per_s(msg::tier::host), 55e9, 1e-9);
  BOOST_CHECK_CLOSE(m.load_s(msg::tier::disk, 1.5e9), 1.0, 1e-9);
  BOOST_CHECK_CLOSE(m.compute_s(msg::cell_range{0, 64, 0, 32}), m.compute_s(0, 64, 32), 1e-9);
}

BOOST_AUTO_TEST_CASE(fits_a_different_line_from_completions) {
  cost_model m;
  // True cost: 2 ms + 0.1 ms per chunk of position, per cell (not the prior's).
  auto truth = [](double c) { return 2e-3 + 1e-4 * c; };
  for (int round = 0; round < 20; ++round)
    for (std::uint32_t c = 0; c < 40; c += 3) m.observe(compute_done(c, c + 1, 8, 8 * truth(c)));
  BOOST_CHECK_CLOSE(m.cell_s(0), truth(0), 2.0);
  BOOST_CHECK_CLOSE(m.cell_s(60), truth(60), 2.0);
  BOOST_CHECK_EQUAL(m.compute_samples(), 20u * 14u - 1);  // the first one is setup
}

// The first grant pays one-time setup and one-cell grants mostly latency:
// neither moves the line.
BOOST_AUTO_TEST_CASE(ignores_the_first_grant_and_single_cells) {
  cost_model m;
  const double prior = m.cell_s(0);
  m.observe(compute_done(0, 1, 32, 32 * 5 * prior));  // setup: 5x the steady cost
  BOOST_CHECK_EQUAL(m.compute_samples(), 0u);
  BOOST_CHECK_CLOSE(m.cell_s(0), prior, 1e-9);
  for (int i = 0; i < 20; ++i) m.observe(compute_done(3, 4, 1, 3 * prior));
  BOOST_CHECK_EQUAL(m.compute_samples(), 0u);
  m.observe(compute_done(0, 1, 8, 8 * 0.5 * prior));
  BOOST_CHECK_EQUAL(m.compute_samples(), 1u);
  BOOST_CHECK_LT(m.cell_s(0), prior);
}

BOOST_AUTO_TEST_CASE(slope_stays_near_prior_with_one_position) {
  cost_model m;
  for (int i = 0; i < 50; ++i) m.observe(compute_done(0, 1, 32, 64e-3));  // twice the prior at chunk 0
  BOOST_CHECK_CLOSE(m.cell_s(0), 2e-3, 5.0);
  BOOST_CHECK_GT(m.cell_s(63), m.cell_s(0));
}

BOOST_AUTO_TEST_CASE(bandwidth_follows_rate_samples) {
  cost_model m;
  for (int i = 0; i < 30; ++i) m.observe(msg::rate_sample{msg::tier::remote, 100000000, 100000000});  // 1 GB/s
  BOOST_CHECK_CLOSE(m.bytes_per_s(msg::tier::remote), 1e9, 1.0);
  BOOST_CHECK_EQUAL(m.rate_samples(msg::tier::remote), 30u);
  BOOST_CHECK_CLOSE(m.bytes_per_s(msg::tier::host), 55e9, 1e-9);  // other tiers untouched
  // Degenerate samples are ignored.
  m.observe(msg::rate_sample{msg::tier::remote, 0, 5});
  m.observe(msg::rate_sample{msg::tier::remote, 5, 0});
  BOOST_CHECK_EQUAL(m.rate_samples(msg::tier::remote), 30u);
}

// A remote tier's nodes: each link's samples move that link's rate alone;
// a link never sampled (or link 0) plans at the tier's rate.
BOOST_AUTO_TEST_CASE(links_of_a_tier_are_learned_apart) {
  cost_model m;
  const auto remote = msg::tier::remote;
  for (int i = 0; i < 10; ++i) {
    m.observe(msg::rate_sample{remote, 100000000, 100000000, 1});  // node 0: 1 GB/s
    m.observe(msg::rate_sample{remote, 100000000, 400000000, 2});  // node 1: 0.25 GB/s
  }
  BOOST_CHECK_CLOSE(m.bytes_per_s(remote, 1), 1e9, 1.0);
  BOOST_CHECK_CLOSE(m.bytes_per_s(remote, 2), 0.25e9, 1.0);
  BOOST_CHECK_CLOSE(m.bytes_per_s(remote), 1.25e9, 1e-9);  // the tier's own estimate: still the prior
  BOOST_CHECK_CLOSE(m.bytes_per_s(remote, 3), 1.25e9, 1e-9);
  BOOST_CHECK_CLOSE(m.load_s(remote, 2, 1e9), 4.0, 1.0);
  BOOST_CHECK_EQUAL(m.rate_samples(remote, 1), 10u);
  BOOST_CHECK_EQUAL(m.rate_samples(remote, 0), 0u);
  BOOST_CHECK_EQUAL(m.rate_samples(remote), 20u);
  m.observe(msg::rate_sample{remote, 100000000, 50000000, 0});  // the tier as a whole: 2 GB/s
  BOOST_CHECK_CLOSE(m.bytes_per_s(remote), 2e9, 1.0);
  BOOST_CHECK_CLOSE(m.bytes_per_s(remote, 1), 1e9, 1.0);
  // Links come off the network: only max_links of them are kept.
  for (std::uint32_t l = 3; l < cost_model::max_links + 10; ++l)
    m.observe(msg::rate_sample{remote, 1000, 1000, static_cast<std::uint16_t>(l)});
  BOOST_CHECK_EQUAL(m.rate_samples(remote, static_cast<std::uint16_t>(cost_model::max_links + 5)), 0u);
}

BOOST_AUTO_TEST_CASE(fixed_model_never_learns) {
  auto m = cost_model::fixed(1e-3, 0, {1e12, 1e9, 1e9, 1e9});
  m.observe(compute_done(0, 1, 1, 1.0));
  m.observe(msg::rate_sample{msg::tier::host, 1, 1});
  BOOST_CHECK_CLOSE(m.cell_s(5), 1e-3, 1e-9);
  BOOST_CHECK_CLOSE(m.bytes_per_s(msg::tier::host), 1e9, 1e-9);
}

BOOST_AUTO_TEST_CASE(learns_a_compute_grants_trip_beyond_gpu_work) {
  cost_model m;
  BOOST_TEST(m.compute_trip_s() == 0.0);
  m.observe_compute_trip(0.9, true, 0.5);  // the first grant: one-time setup, ignored
  BOOST_TEST(m.compute_trip_s() == 0.0);
  m.observe_compute_trip(0.020, true, 0.010);
  BOOST_TEST(m.compute_trip_s() == 0.030, boost::test_tools::tolerance(1e-12));
  // Sent while the GPU was busy: the way there includes queueing, not learned.
  m.observe_compute_trip(0.5, false, 0.010);
  BOOST_TEST(m.compute_trip_s() == 0.030, boost::test_tools::tolerance(1e-12));
  for (int i = 0; i < 40; ++i) m.observe_compute_trip(0.001, true, 0.001);  // decays towards 2 ms
  BOOST_TEST(m.compute_trip_s() == 0.002, boost::test_tools::tolerance(1e-3));
  // Another machine's clock: negative or absurd times are ignored.
  const double before = m.compute_trip_s();
  m.observe_compute_trip(-3.0, true, 1e6);
  BOOST_TEST(m.compute_trip_s() == before);
  auto fixed = cost_model::fixed(1e-3, 0, {1e9, 1e9, 1e9, 1e9});
  fixed.observe_compute_trip(0.5, true, 0.5);
  fixed.observe_compute_trip(0.5, true, 0.5);
  BOOST_TEST(fixed.compute_trip_s() == 0.0);
}

// A tier's prior latency stays while every sample has one size (they cannot
// tell latency from bandwidth) and the rate is what is left of each sample's
// time; samples of two sizes then move it to the true latency (the ridge
// keeps some pull toward the prior, as it pulled toward 0 without one).
BOOST_AUTO_TEST_CASE(a_prior_latency_holds_until_sizes_differ) {
  cost_prior p;
  const auto disk = static_cast<std::size_t>(msg::tier::disk);
  p.latency_s[disk] = 0.5e-3;
  cost_model m(p);
  BOOST_CHECK_CLOSE(m.latency_s(msg::tier::disk), 0.5e-3, 1e-9);
  BOOST_CHECK_EQUAL(m.latency_s(msg::tier::host), 0.0);
  // 1 MB in 0.65 ms, again and again.
  for (int i = 0; i < 20; ++i) m.observe(msg::rate_sample{msg::tier::disk, 1000000, 650000});
  BOOST_CHECK_CLOSE(m.latency_s(msg::tier::disk), 0.5e-3, 10.0);
  BOOST_CHECK_CLOSE(m.latency_s(msg::tier::disk) + m.load_s(msg::tier::disk, 1e6), 0.65e-3, 2.0);
  // The truth: 0.2 ms + 4 GB/s.
  for (int i = 0; i < 30; ++i)
    for (double mb : {1.0, 8.0})
      m.observe(msg::rate_sample{msg::tier::disk, static_cast<std::uint64_t>(mb * 1e6),
                                 static_cast<std::uint64_t>((0.2e-3 + mb * 1e6 / 4e9) * 1e9)});
  BOOST_CHECK_GE(m.latency_s(msg::tier::disk), 0.19e-3);
  BOOST_CHECK_LE(m.latency_s(msg::tier::disk), 0.35e-3);
  BOOST_CHECK_CLOSE(m.bytes_per_s(msg::tier::disk), 4e9, 10.0);
}

// A pipelined disk answers its grants in bursts: a read of four layers lands,
// then its layers are answered one by one (1 MB grants of 0.25, 0.25, 0.25
// and 1.85 ms; the H200's disk trace in batch_bound_r4). Fitted one by one,
// the rate swings with the phase of that cycle (and a plan's claims follow
// its highs); pooled over rate_pool_s of link time it stays at the mean.
BOOST_AUTO_TEST_CASE(pooling_keeps_a_bursty_links_rate_at_its_mean) {
  const double mean_rate = 1e6 / 0.65e-3;
  auto swing = [&](double pool_s) {
    cost_prior p;
    p.rate_pool_s = pool_s;
    cost_model m(p);
    double lo = 1e30, hi = 0;
    for (int i = 0; i < 400; ++i) {
      const double ms = i % 4 == 3 ? 1.85 : 0.25;
      m.observe(msg::rate_sample{msg::tier::disk, 1000000, static_cast<std::uint64_t>(ms * 1e6)});
      if (i < 40) continue;
      lo = std::min(lo, m.bytes_per_s(msg::tier::disk));
      hi = std::max(hi, m.bytes_per_s(msg::tier::disk));
    }
    BOOST_TEST_MESSAGE("pool " << pool_s * 1e3 << " ms: rate " << lo / 1e9 << " to " << hi / 1e9 << " GB/s, mean "
                               << mean_rate / 1e9);
    return std::make_pair(lo / mean_rate, hi / mean_rate);
  };
  auto [lo0, hi0] = swing(0);
  BOOST_TEST((lo0 < 0.8 || hi0 > 1.25));  // one by one: the swing this guards against
  auto [lo, hi] = swing(8e-3);
  BOOST_TEST(lo > 0.9);
  BOOST_TEST(hi < 1.1);
  // Every sample counts as one, pooled or not.
  cost_model m;
  for (int i = 0; i < 5; ++i) m.observe(msg::rate_sample{msg::tier::disk, 1000000, 250000});
  BOOST_CHECK_EQUAL(m.rate_samples(msg::tier::disk), 5u);
}
