#include "policies/restore_bound.hpp"

#include <algorithm>
#include <cmath>
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
  // Walk the prefix chunk by chunk: GPU time rises by the chunk's compute,
  // link time falls by its load; within a chunk both are linear in cells, so
  // the crossing is exact.
  double gpu = suffix, link = double(in.cached) * L * in.cell_load_s;
  restore_bound best{std::max(gpu, link), 0};
  for (std::uint32_t c = 0; c < in.cached; ++c) {
    const double dc = in.chunk_compute_s[c], dl = L * in.cell_load_s;
    if (gpu + dc >= link - dl) {
      // Crossing inside this chunk: gpu + f*dc == link - f*dl.
      const double f = dc + dl > 0 ? std::clamp((link - gpu) / (dc + dl), 0.0, 1.0) : 0.0;
      const double t = std::max(gpu + f * dc, link - f * dl);
      if (t < best.ttft_s) best = {t, (c + f) * L};
      return best;
    }
    gpu += dc;
    link -= dl;
    if (std::max(gpu, link) < best.ttft_s) best = {std::max(gpu, link), (c + 1) * L};
  }
  return best;
}

}  // namespace kvflow::policies
