#include "policies/stage_plan.hpp"

#include <algorithm>
#include <string>

#include "messages/error.hpp"

namespace kvflow::policies {

std::vector<std::uint32_t> stage_bounds(std::uint32_t layers, int stages, const std::vector<int>& splits) {
  if (layers == 0) throw error(errc::invalid_argument, "a model without layers has no stages");
  std::vector<std::uint32_t> bounds{0};
  if (!splits.empty()) {
    if (stages > 1 && static_cast<std::size_t>(stages) != splits.size() + 1)
      throw error(errc::invalid_argument, std::to_string(splits.size()) + " stage splits make " +
                                              std::to_string(splits.size() + 1) + " stages, not " +
                                              std::to_string(stages));
    for (int s : splits) {
      if (s <= static_cast<int>(bounds.back()) || s >= static_cast<int>(layers))
        throw error(errc::invalid_argument, "stage split at layer " + std::to_string(s) +
                                                ": splits must ascend inside (0, " + std::to_string(layers) + ")");
      bounds.push_back(static_cast<std::uint32_t>(s));
    }
    bounds.push_back(layers);
    return bounds;
  }
  const auto n = static_cast<std::uint32_t>(std::max(1, stages));
  if (stages < 0 || n > layers)
    throw error(errc::invalid_argument,
                std::to_string(stages) + " stages for a model of " + std::to_string(layers) + " layers");
  for (std::uint32_t s = 0; s < n; ++s) bounds.push_back(bounds.back() + layers / n + (s < layers % n ? 1 : 0));
  return bounds;
}

std::uint32_t stage_of(const std::vector<std::uint32_t>& bounds, std::uint32_t layer) {
  if (bounds.size() < 3) return 0;
  auto it = std::upper_bound(bounds.begin() + 1, bounds.end() - 1, layer);
  return static_cast<std::uint32_t>(it - bounds.begin() - 1);
}

}  // namespace kvflow::policies
