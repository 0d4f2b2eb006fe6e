#define BOOST_TEST_MODULE policies.restore_bound
#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "messages/error.hpp"
#include "policies/restore_bound.hpp"

using namespace kvflow;
using namespace kvflow::policies;

namespace {

// max(GPU, link + the suffix's top layer row) when the first z cells of the
// prefix (chunk-major) compute (the row only where something loads).
double at_split(const bound_inputs& in, std::uint64_t z) {
  double gpu = 0;
  for (std::size_t c = in.cached; c < in.chunk_compute_s.size(); ++c) gpu += in.chunk_compute_s[c];
  const double row = gpu / in.layers;
  for (std::uint64_t i = 0; i < z; ++i) gpu += in.chunk_compute_s[i / in.layers] / in.layers;
  double link = double(std::uint64_t(in.cached) * in.layers - z) * in.cell_load_s;
  return std::max(gpu, link > 0 ? link + row : 0.0);
}

}  // namespace

BOOST_AUTO_TEST_CASE(nothing_cached_is_the_whole_compute) {
  bound_inputs in{{0.5, 0.75, 1.0}, 0, 4, 0.1};
  auto b = lowest_ttft(in);
  BOOST_TEST(b.ttft_s == 2.25, boost::test_tools::tolerance(1e-12));
  BOOST_TEST(b.computed_cells == 0.0);
}

BOOST_AUTO_TEST_CASE(equal_costs_meet_in_the_middle) {
  // 4 cached chunks of 2 layers, a cell computes or loads in 1 s, suffix 2 s
  // (a layer row of it 1 s): GPU 2 + z, link 8 - z and then the suffix's top
  // row, equal at z = 3.5.
  bound_inputs in{{2, 2, 2, 2, 2}, 4, 2, 1.0};
  auto b = lowest_ttft(in);
  BOOST_TEST(b.ttft_s == 5.5, boost::test_tools::tolerance(1e-12));
  BOOST_TEST(b.computed_cells == 3.5, boost::test_tools::tolerance(1e-12));
}

// The suffix's top layer needs every prefix chunk's top layer: however the
// link orders its cells, one suffix row follows the last one. With a link
// ten times the GPU's speed the bound is that row past the loads, not the
// suffix alone.
BOOST_AUTO_TEST_CASE(the_suffix_top_row_follows_the_last_load) {
  // 8 cached chunks of 4 layers at 0.1 s a cell to load (3.2 s), 1 s to
  // compute each; suffix 0.4 s, a row 0.1 s.
  bound_inputs in{{1, 1, 1, 1, 1, 1, 1, 1, 0.4}, 8, 4, 0.1};
  auto b = lowest_ttft(in);
  // GPU 0.4 + 0.25 z, link 3.2 - 0.1 z + 0.1: equal at z = 2.9 / 0.35.
  const double z = 2.9 / 0.35;
  BOOST_TEST(b.computed_cells == z, boost::test_tools::tolerance(1e-9));
  BOOST_TEST(b.ttft_s == 0.4 + 0.25 * z, boost::test_tools::tolerance(1e-9));
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

BOOST_AUTO_TEST_CASE(batch_of_one_is_the_single_bound) {
  bound_inputs in{{0.4, 0.5, 0.6, 0.7, 0.2}, 4, 8, 0.02};
  auto b = lowest_batch_ttft({in});
  BOOST_REQUIRE_EQUAL(b.ttft_s.size(), 1u);
  BOOST_TEST(b.ttft_s[0] == lowest_ttft(in).ttft_s, boost::test_tools::tolerance(1e-12));
  BOOST_TEST(b.mean_ttft_s == b.ttft_s[0], boost::test_tools::tolerance(1e-12));
}

BOOST_AUTO_TEST_CASE(equal_requests_finish_one_alone_time_apart) {
  // n copies: the k first together take k times one alone (both resources
  // scale), but for the one suffix row after the last load, which the k
  // pay once: with GPU s + a z and link m - b z (+ the row r) alone, k
  // together take k alone - a (k - 1) r / (a + b).
  bound_inputs in{{0.4, 0.5, 0.6, 0.7, 0.2}, 4, 8, 0.02};
  const double alone = lowest_ttft(in).ttft_s;
  const double a = 0.4 / 8, b_ = 0.02, r = 0.2 / 8;  // the crossing falls in chunk 0
  auto b = lowest_batch_ttft(std::vector<bound_inputs>(8, in));
  auto sorted = b.ttft_s;
  std::sort(sorted.begin(), sorted.end());
  double sum = 0;
  for (std::size_t k = 0; k < sorted.size(); ++k) {
    const double want = (k + 1) * alone - a * k * r / (a + b_);
    BOOST_TEST(sorted[k] == want, boost::test_tools::tolerance(1e-9));
    sum += want;
  }
  BOOST_TEST(b.mean_ttft_s == sum / 8, boost::test_tools::tolerance(1e-9));
}

BOOST_AUTO_TEST_CASE(batch_bound_ranks_short_requests_first_and_pools_the_link) {
  // Nested prompts of one model: 4, 8 and 12 chunks, suffix = the last chunk.
  std::vector<double> cost;
  for (int c = 0; c < 12; ++c) cost.push_back(0.02 + 0.002 * c);
  auto prompt = [&](std::uint32_t chunks) {
    return bound_inputs{std::vector<double>(cost.begin(), cost.begin() + chunks), chunks - 1, 32, 0.1 / 32};
  };
  std::vector<bound_inputs> batch{prompt(12), prompt(4), prompt(8)};
  auto b = lowest_batch_ttft(batch);
  // The shortest is ranked first and bounded by its time alone.
  BOOST_TEST(b.ttft_s[1] == lowest_ttft(batch[1]).ttft_s, boost::test_tools::tolerance(1e-12));
  BOOST_TEST(b.ttft_s[1] < b.ttft_s[2]);
  BOOST_TEST(b.ttft_s[2] < b.ttft_s[0]);
  // The last bound is the whole batch's best split: GPU and link equally busy
  // (the crossing falls inside a chunk here), and no single request's alone
  // time exceeds it.
  double all_compute = 0, all_load = 0;
  for (auto& in : batch) {
    for (double v : in.chunk_compute_s) all_compute += v;
    all_load += in.cached * in.layers * in.cell_load_s;
  }
  BOOST_TEST(b.ttft_s[0] >= lowest_ttft(batch[0]).ttft_s);
  BOOST_TEST(b.ttft_s[0] < std::min(all_compute, all_load));
  // Brute force over whole cells, cheapest compute first onto the GPU: the
  // bound is that best split, within one cell's time.
  std::vector<double> cells;
  double suffix = 0;
  for (auto& in : batch)
    for (std::size_t c = 0; c < in.chunk_compute_s.size(); ++c) {
      if (c >= in.cached) {
        suffix += in.chunk_compute_s[c];
        continue;
      }
      for (std::uint32_t l = 0; l < in.layers; ++l) cells.push_back(in.chunk_compute_s[c] / in.layers);
    }
  std::sort(cells.begin(), cells.end());
  const double cell_load = batch[0].cell_load_s;
  const double row = cost[3] / 32;  // the least suffix row: the 4-chunk prompt's
  double gpu = suffix, best = std::numeric_limits<double>::infinity();
  for (std::size_t z = 0; z <= cells.size(); ++z) {
    const double link = double(cells.size() - z) * cell_load;
    best = std::min(best, std::max(gpu, link > 0 ? link + row : 0.0));
    if (z < cells.size()) gpu += cells[z];
  }
  BOOST_TEST(b.ttft_s[0] <= best + 1e-12);
  BOOST_TEST(b.ttft_s[0] >= best - std::max(cells.back(), cell_load));
  BOOST_TEST(b.mean_ttft_s == (b.ttft_s[0] + b.ttft_s[1] + b.ttft_s[2]) / 3, boost::test_tools::tolerance(1e-12));
  BOOST_CHECK_THROW(lowest_batch_ttft({bound_inputs{{0.1}, 2, 4, 0.01}}), error);
  BOOST_TEST(lowest_batch_ttft({}).ttft_s.empty());
}
