#pragma once
// The layer-pipeline stage layout: which layers each stage owns. Pure: the
// runtime uses it to place stage actors, the batch state to charge a load
// to the link of the stage that owns its layer.

#include <cstdint>
#include <vector>

namespace kvflow::policies {

/// Stage boundaries [0, b1, ..., layers]: stage s owns layers
/// [bounds[s], bounds[s + 1]). With `splits` (the first layer of every
/// stage after the first, ascending, each in (0, layers)) those are the
/// boundaries; otherwise `stages` (1 when 0) stages of nearly equal size,
/// the earlier ones one layer larger where they do not divide evenly.
/// Throws kvflow::error(invalid_argument) for more stages than layers,
/// splits out of order or out of range, or splits that disagree with a
/// `stages` above 1.
std::vector<std::uint32_t> stage_bounds(std::uint32_t layers, int stages, const std::vector<int>& splits = {});

/// The stage owning `layer` under `bounds` (0 when bounds has no inner boundary).
std::uint32_t stage_of(const std::vector<std::uint32_t>& bounds, std::uint32_t layer);

}  // namespace kvflow::policies
