#pragma once
// The batch as the scheduler sees it: every request's cells (chunk x layer)
// and their state, the caps, and what is in flight now.

#include <array>
#include <cstdint>
#include <optional>
#include <unordered_map>
#include <vector>

#include "messages/types.hpp"

namespace kvflow::policies {

/// A cell moves pending -> *_granted -> computed | loaded, never back.
enum class cell_state : std::uint8_t { pending, compute_granted, load_granted, computed, loaded };

/// Limits on work in flight. A single cell larger than a cap is admitted
/// only while nothing else is in flight on that resource.
struct caps {
  std::uint64_t compute_cells = 64;  ///< cells granted to the GPU and not done
  /// Adjacent chunks a compute grant spans where it can (the GPU runs a
  /// grant's chunks as one forward, so small chunks compute as fast as
  /// large ones): policies grant this many chunks a few layers deep rather
  /// than one chunk many layers deep. 1: one chunk, chunk-major.
  std::uint32_t compute_group = 1;
  /// Adjacent chunks a load unit spans: policies size a link's queue and
  /// their largest load grant in this many chunks' bytes, so that the
  /// queue does not shrink with the chunk. Apart from compute_group: a
  /// forward wide enough for the GPU is more bytes than a link needs queued.
  std::uint32_t load_group = 1;
  /// Loads a policy keeps in flight per link, in chunks' bytes (its
  /// policy_options::load_queue_chunks; the scheduler passes this one).
  std::uint32_t load_queue_chunks = 2;
  std::array<std::uint64_t, msg::tier_count> load_bytes{1ull << 30, 1ull << 30, 1ull << 30,
                                                        1ull << 30};  ///< by msg::tier
  /// Layer-pipeline stages (policies/stage_plan): stage s owns layers
  /// [stage_bounds[s], stage_bounds[s + 1]) and has its own link of each
  /// tier, so load_bytes caps each stage's link and a grant's bytes count on
  /// the links of the stages its layers belong to. Empty: one stage.
  std::vector<std::uint32_t> stage_bounds;
  std::uint32_t stages() const {
    return stage_bounds.size() > 2 ? static_cast<std::uint32_t>(stage_bounds.size() - 1) : 1;
  }
};

/// Work in flight now: granted and not yet done.
struct usage {
  std::uint64_t compute_cells = 0;
  std::array<std::uint64_t, msg::tier_count> load_bytes{};                   ///< over every stage's links
  std::vector<std::array<std::uint64_t, msg::tier_count>> stage_load_bytes;  ///< [stage][tier], with caps::stage_bounds
};

/// One request: chunks [0, P) cached (a tier each), [P, S) new; L layers.
/// The last chunk is never cached (its last row gives the first token).
class request_state {
 public:
  /// Throws kvflow::error(invalid_argument) for an unusable registration.
  request_state(const msg::register_request& reg, std::uint64_t arrival, double registered_s = 0);

  std::uint64_t id() const { return id_; }
  std::uint64_t arrival() const { return arrival_; }     ///< registration order in the batch
  double registered_s() const { return registered_s_; }  ///< registration time on the caller's clock
  std::uint32_t chunks() const { return chunks_; }       ///< S
  std::uint32_t layers() const { return layers_; }       ///< L
  std::uint32_t cached() const { return static_cast<std::uint32_t>(tiers_.size()); }  ///< P
  msg::tier tier_of(std::uint32_t chunk) const { return tiers_[chunk]; }
  /// Which link of its tier holds cached chunk `chunk` (0: the tier's only one).
  std::uint16_t link_of(std::uint32_t chunk) const { return links_.empty() ? 0 : links_[chunk]; }
  std::uint64_t chunk_bytes() const { return chunk_bytes_; }
  std::uint64_t cell_bytes() const { return chunk_bytes_ / layers_; }

  cell_state at(std::uint32_t chunk, std::uint32_t layer) const { return cells_[std::size_t(chunk) * layers_ + layer]; }
  /// Leading chunks whose cell at `layer` is computed, compute-granted or
  /// loaded: a compute cell (c, l) may be granted once ready_prefix(l) >= c
  /// and (c, l-1) is computed or compute-granted (the GPU runs a request's
  /// compute grants in grant order; loads must have completed).
  std::uint32_t ready_prefix(std::uint32_t layer) const { return ready_[layer]; }
  /// Whether compute cell (c, l) may be granted now.
  bool compute_ready(std::uint32_t chunk, std::uint32_t layer) const;
  /// Per chunk: leading layers computed or compute-granted (computed layers
  /// are always a prefix [0, k)); lowest load-claimed layer (L if none);
  /// load-claimed and loaded cell counts.
  std::uint32_t compute_top(std::uint32_t chunk) const { return top_[chunk]; }
  std::uint32_t load_bottom(std::uint32_t chunk) const { return bottom_[chunk]; }
  std::uint32_t load_claimed(std::uint32_t chunk) const { return claimed_[chunk]; }
  std::uint32_t loaded(std::uint32_t chunk) const { return loaded_[chunk]; }
  /// Compute cells granted and not done.
  std::uint64_t compute_in_flight() const { return computing_; }
  std::uint64_t cells_done() const { return done_; }
  std::uint64_t cells_total() const { return std::uint64_t(chunks_) * layers_; }
  bool restored() const { return done_ == cells_total(); }

 private:
  friend class batch_state;
  // Marks a rectangle; checks each cell's dependencies in chunk order
  // (compute) and throws kvflow::error(invalid_argument) on a violation,
  // leaving the request as it was.
  void grant(msg::action act, const msg::cell_range& cells);
  // Marks a granted rectangle done.
  void complete(msg::action act, const msg::cell_range& cells);

  void advance_ready(std::uint32_t layer);
  std::string where() const;

  std::uint64_t id_, arrival_;
  double registered_s_;
  std::uint32_t chunks_, layers_;
  std::vector<msg::tier> tiers_;
  std::vector<std::uint16_t> links_;  // empty or one per cached chunk
  std::uint64_t chunk_bytes_;
  std::vector<cell_state> cells_;                               // [chunk][layer]
  std::vector<std::uint32_t> ready_;                            // [layer]
  std::vector<std::uint32_t> top_, bottom_, claimed_, loaded_;  // [chunk]
  std::uint64_t computing_ = 0;
  std::uint64_t done_ = 0;
};

/// All registered requests, the caps and the work in flight. The scheduler
/// owns one; a policy's decide() applies each grant it returns to it.
class batch_state {
 public:
  explicit batch_state(caps c = {}) { set_limits(c); }

  /// Adds a request registered at `now_s` (seconds on the caller's clock);
  /// throws kvflow::error(invalid_argument) on a duplicate id or a bad shape.
  const request_state& add(const msg::register_request& reg, double now_s = 0);
  /// Forgets a request (restored or failed); its grants in flight stop counting.
  void remove(std::uint64_t request_id);
  const request_state* find(std::uint64_t request_id) const;
  /// Requests in registration order.
  const std::vector<request_state>& requests() const { return requests_; }

  const caps& limits() const { return caps_; }
  void set_limits(const caps& c);
  const usage& in_flight() const { return used_; }
  /// Whether a grant of this size fits its resource's cap now (or is one
  /// cell on an idle resource).
  bool fits_compute(std::uint64_t cells) const;
  bool fits_load(msg::tier t, std::uint64_t bytes, std::uint64_t cells) const;
  /// The same for the link of stage `stage` alone (fits_load counts the
  /// links of every stage together).
  bool fits_stage_load(std::uint32_t stage, msg::tier t, std::uint64_t bytes, std::uint64_t cells) const;
  /// Bytes in flight on stage `stage`'s link of tier t.
  std::uint64_t stage_load_in_flight(std::uint32_t stage, msg::tier t) const;
  /// Compute cells that fit now: the cap's room, or 1 on an idle GPU.
  std::uint64_t compute_room() const;
  /// While held, no load fits (fits_load and fits_stage_load say no, even
  /// one cell on an idle link): the scheduler holds the links for its
  /// admission window, while the batch is still registering.
  void hold_loads(bool held) { loads_held_ = held; }
  bool loads_held() const { return loads_held_; }

  /// Records a grant: checks caps and dependencies (throws
  /// kvflow::error(capacity_exceeded | invalid_argument | not_found)), marks
  /// its cells granted, counts it in flight and assigns g.grant_id.
  void apply(msg::grant& g);
  /// Records a completion of a grant made here; returns a rate sample for
  /// loads (bytes over the finished - started time). Unknown grant ids (a
  /// removed request) are ignored.
  std::optional<msg::rate_sample> apply(const msg::cell_done& done);

 private:
  struct in_flight_grant {
    msg::grant g;
    std::uint64_t bytes;
  };
  request_state* find_mut(std::uint64_t request_id);
  // Adds (sign +1) or removes (-1) a load grant's bytes on its stages' links.
  void charge_stages(const msg::grant& g, std::uint64_t cell_bytes, int sign);

  caps caps_;
  usage used_;
  std::vector<request_state> requests_;
  std::unordered_map<std::uint64_t, in_flight_grant> grants_;
  std::uint64_t next_grant_ = 1, next_arrival_ = 0;
  bool loads_held_ = false;
};

/// Cells in a rectangle.
inline std::uint64_t cell_count(const msg::cell_range& r) {
  return std::uint64_t(r.chunk_end - r.chunk_begin) * (r.layer_end - r.layer_begin);
}

}  // namespace kvflow::policies
