#include "policies/restore_bound.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <string>

#include "messages/error.hpp"

namespace kvflow::policies {

restore_bound lowest_ttft(const bound_inputs& in) {
  auto bad = [](const std::string& why) { return error(errc::invalid_argument, "lowest_ttft: " + why); };
  if (in.layers == 0) throw bad("0 layers");
  if (in.chunk_compute_s.size() < in.cached)
    throw bad(std::to_string(in.chunk_compute_s.size()) + " chunk costs for " + std::to_string(in.cached) +
              " cached chunks");
  auto usable = [](double v) { return std::isfinite(v) && v >= 0; };
  if (!usable(in.cell_load_s)) throw bad("cell load time " + std::to_string(in.cell_load_s));
  for (double v : in.chunk_compute_s)
    if (!usable(v)) throw bad("chunk compute time " + std::to_string(v));
  const double L = in.layers;
  double suffix = 0;
  for (std::size_t c = in.cached; c < in.chunk_compute_s.size(); ++c) suffix += in.chunk_compute_s[c];
  // The suffix's layer l needs layer l of every prefix chunk: whichever
  // cell the link delivers last, at least the suffix's top layer row
  // computes after it (its share of the suffix: cells of a chunk cost alike).
  const double row = suffix / L;
  auto finish = [&](double gpu, double link) { return std::max(gpu, link > 0 ? link + row : 0.0); };
  // Walk the prefix chunk by chunk: GPU time rises by the chunk's compute,
  // link time falls by its load; within a chunk both are linear in cells, so
  // the crossing is exact.
  double gpu = suffix, link = double(in.cached) * L * in.cell_load_s;
  restore_bound best{finish(gpu, link), 0};
  for (std::uint32_t c = 0; c < in.cached; ++c) {
    const double dc = in.chunk_compute_s[c], dl = L * in.cell_load_s;
    const double left = c + 1 == in.cached ? 0.0 : link - dl;  // exact zero once every cell computes
    if (gpu + dc >= finish(0, left)) {
      // Crossing inside this chunk: gpu + f*dc == link - f*dl + row.
      const double f = dc + dl > 0 ? std::clamp((link + row - gpu) / (dc + dl), 0.0, 1.0) : 0.0;
      const double t = f >= 1 ? gpu + dc : finish(gpu + f * dc, link - f * dl);
      if (t < best.ttft_s) best = {t, (c + f) * L};
      return best;
    }
    gpu += dc;
    link = left;
    if (finish(gpu, link) < best.ttft_s) best = {finish(gpu, link), (c + 1) * L};
  }
  return best;
}

batch_bound lowest_batch_ttft(const std::vector<bound_inputs>& batch) {
  batch_bound out;
  out.ttft_s.assign(batch.size(), 0);
  if (batch.empty()) return out;
  std::vector<double> alone(batch.size());
  for (std::size_t i = 0; i < batch.size(); ++i) alone[i] = lowest_ttft(batch[i]).ttft_s;  // checks the inputs
  std::vector<std::size_t> rank(batch.size());
  std::iota(rank.begin(), rank.end(), std::size_t{0});
  std::stable_sort(rank.begin(), rank.end(), [&](auto a, auto b) { return alone[a] < alone[b]; });
  // The pooled prefix chunks of the first k requests: a chunk's L cells
  // compute in `gpu` and load in `link` seconds.
  struct piece {
    double gpu, link;
  };
  std::vector<piece> pool;
  double suffix = 0, sum = 0;
  // The last cell the link delivers is some request's: at least the least
  // of their suffixes' top rows computes after it (lowest_ttft).
  double row = std::numeric_limits<double>::infinity();
  for (std::size_t k = 0; k < rank.size(); ++k) {
    const auto& in = batch[rank[k]];
    double own = 0;
    for (std::size_t c = 0; c < in.chunk_compute_s.size(); ++c) {
      if (c >= in.cached) {
        own += in.chunk_compute_s[c];
      } else {
        pool.push_back({in.chunk_compute_s[c], double(in.layers) * in.cell_load_s});
      }
    }
    suffix += own;
    row = std::min(row, own / in.layers);
    auto finish = [&](double gpu, double link) { return std::max(gpu, link > 0 ? link + row : 0.0); };
    // Cheapest compute per second of load first onto the GPU (a fractional
    // knapsack: the split at the crossing is exact within a chunk).
    std::sort(pool.begin(), pool.end(), [](const piece& a, const piece& b) { return a.gpu * b.link < b.gpu * a.link; });
    double gpu = suffix, link = 0;
    for (auto& p : pool) link += p.link;
    double best = finish(gpu, link);
    for (std::size_t i = 0; i < pool.size(); ++i) {
      const auto& p = pool[i];
      const double left = i + 1 == pool.size() ? 0.0 : link - p.link;  // exact zero once every cell computes
      if (gpu + p.gpu >= finish(0, left)) {
        const double f = p.gpu + p.link > 0 ? std::clamp((link + row - gpu) / (p.gpu + p.link), 0.0, 1.0) : 0.0;
        best = std::min(best, f >= 1 ? gpu + p.gpu : finish(gpu + f * p.gpu, link - f * p.link));
        break;
      }
      gpu += p.gpu;
      link = left;
      best = std::min(best, finish(gpu, link));
    }
    // A request cannot finish before it could alone either.
    out.ttft_s[rank[k]] = std::max(best, alone[rank[k]]);
    sum += out.ttft_s[rank[k]];
  }
  out.mean_ttft_s = sum / double(batch.size());
  return out;
}

}  // namespace kvflow::policies
