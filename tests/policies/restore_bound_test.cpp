#define BOOST_TEST_MODULE policies.restore_bound
#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>

#include "messages/error.hpp"
#include "policies/restore_bound.hpp"

using namespace kvflow;
using namespace kvflow::policies;

namespace {

// max(GPU, link) when the first z cells of the prefix (chunk-major) compute.
double at_split(const bound_inputs& in, std::uint64_t z) {
  double gpu = 0;
  for (std::size_t c = in.cached; c < in.chunk_compute_s.size(); ++c) gpu += in.chunk_compute_s[c];
  for (std::uint64_t i = 0; i < z; ++i) gpu += in.chunk_compute_s[i / in.layers] / in.layers;
  double link = double(std::uint64_t(in.cached) * in.layers - z) * in.cell_load_s;
  return std::max(gpu, link);
}

}  // namespace

BOOST_AUTO_TEST_CASE(nothing_cached_is_the_whole_compute) {
  bound_inputs in{{0.5, 0.75, 1.0}, 0, 4, 0.1};
  auto b = lowest_ttft(in);
  BOOST_TEST(b.ttft_s == 2.25, boost::test_tools::tolerance(1e-12));
  BOOST_TEST(b.computed_cells == 0.0);
}

BOOST_AUTO_TEST_CASE(equal_costs_meet_in_the_middle) {
  // 4 cached chunks of 2 layers, a cell computes or loads in 1 s, suffix 2 s:
  // GPU 2 + z, link 8 - z, equal at z = 3.
  bound_inputs in{{2, 2, 2, 2, 2}, 4, 2, 1.0};
  auto b = lowest_ttft(in);
  BOOST_TEST(b.ttft_s == 5.0, boost::test_tools::tolerance(1e-12));
  BOOST_TEST(b.computed_cells == 3.0, boost::test_tools::tolerance(1e-12));
}

BOOST_AUTO_TEST_CASE(fast_link_loads_everything_and_slow_link_nothing) {
  bound_inputs fast{{1, 1, 1}, 2, 4, 1e-6};
  BOOST_TEST(lowest_ttft(fast).ttft_s == 1.0, boost::test_tools::tolerance(1e-4));
  // (A fraction of a cell still loads: the bound is fractional.)
  bound_inputs slow{{1, 1, 1}, 2, 4, 1e6};
  BOOST_TEST(lowest_ttft(slow).ttft_s == 3.0, boost::test_tools::tolerance(1e-6));
  BOOST_TEST(lowest_ttft(slow).computed_cells == 8.0, boost::test_tools::tolerance(1e-6));
}

BOOST_AUTO_TEST_CASE(no_integer_split_beats_it_and_the_best_is_close) {
  std::mt19937_64 rng(5);
  std::uniform_real_distribution<double> u(0.01, 1.0);
  for (int round = 0; round < 200; ++round) {
    bound_inputs in;
    in.layers = 1 + rng() % 8;
    const int chunks = 1 + static_cast<int>(rng() % 12);
    in.cached = static_cast<std::uint32_t>(rng() % chunks);
    double base = u(rng), slope = u(rng) * 0.2;
    for (int c = 0; c < chunks; ++c) in.chunk_compute_s.push_back(base + slope * c);
    in.cell_load_s = u(rng) * 0.5;
    auto b = lowest_ttft(in);
    double best_int = std::numeric_limits<double>::infinity();
    for (std::uint64_t z = 0; z <= std::uint64_t(in.cached) * in.layers; ++z)
      best_int = std::min(best_int, at_split(in, z));
    BOOST_TEST(b.ttft_s <= best_int + 1e-12);
    // A fractional split gains at most one cell's cost over the best integer one.
    const double cell = std::max(in.cell_load_s, in.chunk_compute_s.back() / in.layers);
    BOOST_TEST(b.ttft_s >= best_int - cell - 1e-12);
  }
}

BOOST_AUTO_TEST_CASE(bad_inputs_are_errors) {
  BOOST_CHECK_THROW(lowest_ttft(bound_inputs{{1}, 2, 4, 1}), kvflow::error);
  BOOST_CHECK_THROW(lowest_ttft(bound_inputs{{1, 1}, 1, 0, 1}), kvflow::error);
  BOOST_CHECK_THROW(lowest_ttft(bound_inputs{{1, -1}, 1, 4, 1}), kvflow::error);
  BOOST_CHECK_THROW(lowest_ttft(bound_inputs{{1, 1}, 1, 4, std::nan("")}), kvflow::error);
}
