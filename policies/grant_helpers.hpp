#pragma once
// Building blocks the policies share (internal to policies/): each grants
// one kind of work for one request, applies it to the batch and appends it.

#include <algorithm>
#include <cstdint>
#include <vector>

#include "messages/types.hpp"
#include "policies/batch_state.hpp"
#include "policies/cost_model.hpp"

namespace kvflow::policies::detail {

/// First cell, in chunk-major order over the cached prefix and beyond, that
/// neither compute nor a load has claimed: chunk * L + layer (S*L if none).
std::uint64_t head_position(const request_state& r);

/// Grants compute cells in chunk-major order from the first unclaimed cell,
/// below chunk-major position `limit`, at most `budget` cells, stopping at
/// the first cell whose inputs are not there yet, each grant at most
/// `max_grant` cells (0: no limit). With limits().compute_group G > 1, a
/// grant spans up to G adjacent chunks at the same computed height, as many
/// layers deep as the budget allows over all of them (wide, not deep: the
/// GPU runs them as one forward). Returns cells granted.
std::uint64_t grant_head(batch_state& b, const request_state& r, std::uint64_t limit, std::uint64_t budget,
                         std::vector<msg::grant>& out, std::uint64_t max_grant = 0);

/// Grants uncached-suffix compute cells in layer-major order (a layer row of
/// [P, S), then the next), as far as the prefix's layers are available, at
/// most `budget` cells. Returns cells granted.
std::uint64_t grant_suffix(batch_state& b, const request_state& r, std::uint64_t budget, std::vector<msg::grant>& out);

/// Bytes a policy keeps queued on each link for `r`: `queue_chunks` load
/// groups of its chunks (limits().load_group), so that the queue does not
/// shrink with the chunk nor grow with the compute group.
inline std::uint64_t link_queue_bytes(const batch_state& b, const request_state& r, std::uint32_t queue_chunks) {
  return std::uint64_t(queue_chunks) * r.chunk_bytes() * b.limits().load_group;
}

/// Grants load cells layer-major (lowest layer first, then highest chunk)
/// among chunks [lo, P): a chunk already claimed continues upward from its
/// lowest claimed layer; an unclaimed chunk c starts at start(c) (and is
/// skipped when start(c) >= L). Keeps each tier's bytes in flight under
/// `queue_bytes` and the cap; one grant is one layer of adjacent chunks of
/// one tier, at most `max_grant_bytes`; a grant of one chunk spans up to
/// `layer_run` of its layers upward (fewer grants where each pays a fixed
/// latency). Returns bytes granted.
template <class Start>
std::uint64_t grant_loads(batch_state& b, const request_state& r, std::uint32_t lo, Start start,
                          std::uint64_t queue_bytes, std::uint64_t max_grant_bytes, std::vector<msg::grant>& out,
                          std::uint32_t layer_run = 1);

/// Layers a load grant of one chunk spans on tier `t` (grant_loads'
/// layer_run), at most L/4: enough that the tier's fixed cost per grant
/// (cost_model::latency_s) is at most a twentieth of the grant's time.
std::uint32_t layer_run(const cost_model& costs, msg::tier t, std::uint64_t cell_bytes, std::uint32_t layers);

/// Appends and applies one grant.
void emit(batch_state& b, const request_state& r, msg::action act, const msg::cell_range& cells, msg::tier source,
          std::vector<msg::grant>& out);

/// Next load layer of chunk c given its unclaimed start layer (L: none).
inline std::uint32_t next_load_layer(const request_state& r, std::uint32_t c, std::uint32_t unclaimed_start) {
  if (r.load_claimed(c) > 0) return r.load_bottom(c) + r.load_claimed(c);
  return unclaimed_start;
}

/// Lowest pending load layer of chunk c inside [span_begin, span_end) given
/// its unclaimed start layer (L: none), or L: a stage's own cursor over its
/// layers of the chunk, so that every stage's link loads at once.
inline std::uint32_t next_stage_load_layer(const request_state& r, std::uint32_t c, std::uint32_t unclaimed_start,
                                           std::uint32_t span_begin, std::uint32_t span_end) {
  const std::uint32_t L = r.layers();
  std::uint32_t from = r.load_claimed(c) > 0 ? r.load_bottom(c) : unclaimed_start;
  if (from >= L) return L;
  for (std::uint32_t l = std::max({from, span_begin, r.compute_top(c)}); l < span_end; ++l)
    if (r.at(c, l) == cell_state::pending) return l;
  return L;
}

/// grant_loads with pipeline stages (caps::stage_bounds): the same order
/// within each stage's layers, each stage's link kept under `queue_bytes`
/// and the cap on its own.
template <class Start>
std::uint64_t grant_stage_loads(batch_state& b, const request_state& r, std::uint32_t lo, Start start,
                                std::uint64_t queue_bytes, std::uint64_t max_grant_bytes,
                                std::vector<msg::grant>& out) {
  const auto& bounds = b.limits().stage_bounds;
  const std::uint32_t L = r.layers(), P = r.cached();
  const std::uint64_t cell = r.cell_bytes();
  std::uint64_t granted = 0;
  for (std::uint32_t s = 0; s + 1 < bounds.size(); ++s) {
    const std::uint32_t sb = bounds[s], se = std::min(bounds[s + 1], L);
    for (;;) {
      std::uint32_t best_c = P, best_l = L;
      for (std::uint32_t c = P; c-- > lo;) {
        std::uint32_t l = next_stage_load_layer(r, c, start(c), sb, se);
        if (l >= se) continue;
        auto t = r.tier_of(c);
        auto used = b.stage_load_in_flight(s, t);
        if (used > 0 && used + cell > queue_bytes) continue;
        if (!b.fits_stage_load(s, t, cell, 1) || !b.fits_load(t, cell, 1)) continue;
        if (l < best_l) best_c = c, best_l = l;
      }
      if (best_c == P) break;
      auto t = r.tier_of(best_c);
      std::uint32_t begin = best_c;
      auto used = b.stage_load_in_flight(s, t);
      auto room = [&](std::uint32_t n) {
        std::uint64_t bytes = std::uint64_t(n) * cell;
        return bytes <= max_grant_bytes && (used == 0 || used + bytes <= queue_bytes) &&
               b.fits_stage_load(s, t, bytes, n) && b.fits_load(t, bytes, n);
      };
      while (begin > lo && r.tier_of(begin - 1) == t &&
             next_stage_load_layer(r, begin - 1, start(begin - 1), sb, se) == best_l && room(best_c + 1 - (begin - 1)))
        --begin;
      emit(b, r, msg::action::load, msg::cell_range{begin, best_c + 1, best_l, best_l + 1}, t, out);
      granted += std::uint64_t(best_c + 1 - begin) * cell;
    }
  }
  return granted;
}

template <class Start>
std::uint64_t grant_loads(batch_state& b, const request_state& r, std::uint32_t lo, Start start,
                          std::uint64_t queue_bytes, std::uint64_t max_grant_bytes, std::vector<msg::grant>& out,
                          std::uint32_t layer_run) {
  if (b.limits().stages() > 1) return grant_stage_loads(b, r, lo, start, queue_bytes, max_grant_bytes, out);
  const std::uint32_t L = r.layers(), P = r.cached();
  const std::uint64_t cell = r.cell_bytes();
  std::uint64_t granted = 0;
  for (;;) {
    // The lowest next layer over chunks whose link has room; ties to the highest chunk.
    std::uint32_t best_c = P, best_l = L;
    for (std::uint32_t c = P; c-- > lo;) {
      std::uint32_t l = next_load_layer(r, c, start(c));
      if (l >= L || l < r.compute_top(c) || r.at(c, l) != cell_state::pending) continue;
      auto t = r.tier_of(c);
      auto used = b.in_flight().load_bytes[static_cast<std::size_t>(t)];
      if (used > 0 && used + cell > queue_bytes) continue;
      if (!b.fits_load(t, cell, 1)) continue;
      if (l < best_l) best_c = c, best_l = l;
    }
    if (best_c == P) return granted;
    auto t = r.tier_of(best_c);
    // Extend downward over adjacent chunks at the same next layer and tier.
    std::uint32_t begin = best_c;
    auto used = b.in_flight().load_bytes[static_cast<std::size_t>(t)];
    auto room = [&](std::uint32_t n) {
      std::uint64_t bytes = std::uint64_t(n) * cell;
      return bytes <= max_grant_bytes && (used == 0 || used + bytes <= queue_bytes) && b.fits_load(t, bytes, n);
    };
    while (begin > lo && r.tier_of(begin - 1) == t && next_load_layer(r, begin - 1, start(begin - 1)) == best_l &&
           r.at(begin - 1, best_l) == cell_state::pending && room(best_c + 1 - (begin - 1)))
      --begin;
    // One chunk: upward over its next pending layers, up to layer_run.
    std::uint32_t top = best_l + 1;
    if (begin == best_c)
      while (top < L && top - best_l < layer_run && r.at(best_c, top) == cell_state::pending && room(top + 1 - best_l))
        ++top;
    emit(b, r, msg::action::load, msg::cell_range{begin, best_c + 1, best_l, top}, t, out);
    granted += std::uint64_t(best_c + 1 - begin) * (top - best_l) * cell;
  }
}

}  // namespace kvflow::policies::detail
