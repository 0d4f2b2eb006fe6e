// two_pointer (CacheFlow) and oracle.
//
// Per request, in chunk-major order over the cached prefix [0, P*L):
//   [0, x)   claimed by compute (the compute pointer x moves up),
//   [x, y)   free,
//   [y, P*L) claimed by loads (the load pointer y moves down, a chunk at a time),
// and a planned meeting point z in [x, y]: compute takes [x, z), loads take
// [z, y). A chunk's computed layers are always [0, k), its loaded ones [k, L),
// so the meeting chunk is split by layers. Once compute reaches z, every free
// cell above it is loaded layer-major (layer 0 of every chunk first) and the
// suffix [P, S) computes a layer row at a time behind the loads.
//
// Each tick:
//   1. plan every request alone: the z minimising
//        max(compute left(z) + suffix, loads left(z) + one suffix row)
//      with the cost model; sort requests by that estimate (shortest
//      remaining restore first);
//   2. re-plan in that order with each resource's start delayed by the work
//      in flight on it (any request's: the GPU and the links run grants in
//      order) and the work planned for the requests before it (a request
//      that waits for the GPU plans to load more);
//   3. in that order, grant compute (head up to z, then suffix rows) while
//      the GPU queue has room, and loads (committed cells, then the next
//      chunk down towards z) while each link's queue has room;
//   4. if the GPU would still idle, let compute run past z where the
//      request's loads outlast that compute.
// The oracle is the same with the run's true costs given in advance (and a
// wider search around the crossing).

#include <algorithm>
#include <array>
#include <cmath>
#include <unordered_map>

#include "policies/grant_helpers.hpp"
#include "policies/policy.hpp"

namespace kvflow::policies {
namespace {

struct plan_t {
  std::uint64_t x = 0, y = 0, z = 0;  // chunk-major positions
  double compute_s = 0, load_s = 0, est = 0;
};

class two_pointer final : public policy {
 public:
  two_pointer(policy_options o, bool oracle) : opts_(std::move(o)), oracle_(oracle) {}
  const char* name() const override { return to_string(oracle_ ? policy_kind::oracle : policy_kind::two_pointer); }

  std::optional<split_point> planned_split(std::uint64_t id) const override {
    auto it = splits_.find(id);
    if (it == splits_.end()) return std::nullopt;
    return it->second;
  }

  std::vector<msg::grant> decide(batch_state& b, const cost_model& measured) override {
    const cost_model& costs = opts_.truth ? *opts_.truth : measured;
    std::vector<msg::grant> out;
    // The trip is the runtime's, measured even where the oracle plans on the truth.
    const double trip = costs.cell_s(0) > 0 ? std::ceil(measured.compute_trip_s() / costs.cell_s(0)) : 0.0;
    trip_cells_ = std::isfinite(trip) ? static_cast<std::uint64_t>(std::clamp(trip, 0.0, 1e9)) : 0;
    struct entry {
      double est;
      std::uint64_t arrival;
      const request_state* r;
      plan_t p;
    };
    std::vector<entry> order;
    for (auto& r : b.requests()) {
      if (r.restored()) continue;
      order.push_back(entry{0, r.arrival(), &r, {}});
      // Aging: a request's key falls by age_weight per second it has
      // waited (keys compare at one instant, so registration time stands
      // in for the wait).
      order.back().est = make_plan(*order.back().r, costs, 0, 0).est + opts_.age_weight * r.registered_s();
    }
    std::sort(order.begin(), order.end(),
              [](const entry& a, const entry& b) { return a.est != b.est ? a.est < b.est : a.arrival < b.arrival; });
    // The GPU and each link run their grants in order: whatever is in
    // flight now, of any request, runs before anything granted from here.
    // A request's own work in flight is in its plan; everyone else's delays
    // it (the first request registered may have taken 0.1 s of a link before
    // a shorter one arrived a millisecond later).
    std::vector<in_flight_s> own(order.size());
    in_flight_s all;
    for (std::size_t i = 0; i < order.size(); ++i) {
      own[i] = in_flight_of(*order[i].r, costs);
      all.gpu += own[i].gpu;
      for (std::size_t t = 0; t < msg::tier_count; ++t) all.link[t] += own[i].link[t];
    }
    double gpu_busy = 0;
    std::array<double, msg::tier_count> link_busy{};
    splits_.clear();
    for (std::size_t i = 0; i < order.size(); ++i) {
      auto& e = order[i];
      auto ti = static_cast<std::size_t>(e.r->cached() > 0 ? e.r->tier_of(e.r->cached() - 1) : msg::tier::host);
      e.p = make_plan(*e.r, costs, gpu_busy + all.gpu - own[i].gpu, link_busy[ti] + all.link[ti] - own[i].link[ti]);
      gpu_busy += std::max(0.0, e.p.compute_s - own[i].gpu);
      link_busy[ti] += std::max(0.0, e.p.load_s - own[i].link[ti]);
      auto L = e.r->layers();
      splits_[e.r->id()] = split_point{static_cast<std::uint32_t>(e.p.z / L), static_cast<std::uint32_t>(e.p.z % L)};
    }
    for (auto& e : order) {
      grant_compute(b, *e.r, e.p.z, out);
      grant_loads(b, *e.r, e.p, costs, out);
    }
    // Work conservation: a GPU that would idle computes past the split, where
    // the request's loads will take longer than that compute (else its suffix
    // would wait behind it).
    for (auto& e : order) {
      auto room = gpu_room(b, *e.r);
      if (!whole_piece(b, *e.r, room)) break;
      auto head = std::min(e.r->chunks() - 1, static_cast<std::uint32_t>(e.p.x / e.r->layers()));
      if (e.p.load_s < 2.0 * double(room) * costs.cell_s(head)) continue;
      detail::grant_head(b, *e.r, std::uint64_t(e.r->cached()) * e.r->layers(), room, out, piece(b, *e.r));
    }
    return out;
  }

 private:
  // The GPU queue is kept a quarter chunk deep per lookahead chunk: compute
  // granted is compute committed, and a shallow queue lets a new rate or a
  // new request change the plan within a few milliseconds of GPU time.
  // With compute_group G the quarter chunk is G chunks wide (a grant spans
  // G chunks a quarter of the layers deep, run as one forward).
  // A grant's trip beyond GPU work (cost_model::compute_trip_s: a decode
  // step the gpu actor runs first, the actors' messages) must be covered by
  // the piece still in flight when one completes: twice that many cells
  // more, up to the cap. Else the GPU idles for every trip, and a plan that
  // counts on its compute rate falls behind.
  std::uint64_t gpu_target(const batch_state& b, const policy_options& o, const request_state& r) const {
    std::uint64_t base =
        std::uint64_t(o.lookahead_chunks) * std::max<std::uint32_t>(1, (r.layers() + 3) / 4) * b.limits().compute_group;
    return std::max(base, std::min<std::uint64_t>(b.limits().compute_cells, base + 2 * trip_cells_));
  }

  // Compute is granted in pieces of half the target, so that one is queued
  // on the device behind the other.
  std::uint64_t piece(const batch_state& b, const request_state& r) const {
    return std::max<std::uint64_t>(1, gpu_target(b, opts_, r) / 2);
  }

  // Whether `room` takes a whole piece, or the GPU is idle. Granting a sliver
  // of room would split every later grant as small (a completion frees only
  // what it held), and one-cell grants run far slower than whole pieces.
  bool whole_piece(const batch_state& b, const request_state& r, std::uint64_t room) const {
    return room > 0 && (room >= piece(b, r) || b.in_flight().compute_cells == 0);
  }

  std::uint64_t gpu_room(const batch_state& b, const request_state& r) const {
    std::uint64_t target = gpu_target(b, opts_, r);
    auto used = b.in_flight().compute_cells;
    return used >= target ? 0 : target - used;
  }

  void grant_compute(batch_state& b, const request_state& r, std::uint64_t z, std::vector<msg::grant>& out) {
    auto room = gpu_room(b, r);
    if (!whole_piece(b, r, room)) return;
    room -= detail::grant_head(b, r, z, room, out, piece(b, r));
    if (room > 0 && detail::head_position(r) >= z) detail::grant_suffix(b, r, room, out);
  }

  void grant_loads(batch_state& b, const request_state& r, const plan_t& p, const cost_model& costs,
                   std::vector<msg::grant>& out) {
    const std::uint32_t L = r.layers(), P = r.cached();
    if (P == 0) return;
    // Loads granted commit their chunk: keep each link's queue load_queue_chunks
    // load groups deep, a grant at most one group.
    std::uint64_t queue = detail::link_queue_bytes(b, r, opts_.load_queue_chunks);
    std::uint64_t max_grant =
        opts_.max_load_grant_bytes ? opts_.max_load_grant_bytes : detail::link_queue_bytes(b, r, 1);
    const auto run = detail::layer_run(costs, r.tier_of(P - 1), r.cell_bytes(), L);
    auto x = detail::head_position(r);
    std::uint32_t h = static_cast<std::uint32_t>(std::min<std::uint64_t>(x / L, P));
    auto z = p.z;
    if (x >= z) {
      // Met: every free cell at or above the split loads, layer-major.
      auto start = [&](std::uint32_t c) -> std::uint32_t {
        std::uint64_t from = std::max<std::uint64_t>(z, std::uint64_t(c) * L + r.compute_top(c));
        return from >= std::uint64_t(c + 1) * L ? L : static_cast<std::uint32_t>(from - std::uint64_t(c) * L);
      };
      detail::grant_loads(b, r, 0, start, queue, max_grant, out, run);
      return;
    }
    // Before meeting: finish the claimed chunks, then claim the next one down
    // while it lies above the split (the head's own chunk from the split's layer).
    auto none = [L](std::uint32_t) { return L; };
    for (;;) {
      detail::grant_loads(b, r, 0, none, queue, max_grant, out, run);
      std::uint32_t lo = P;
      while (lo > h && r.load_claimed(lo - 1) > 0) --lo;
      bool pending = false;
      for (std::uint32_t c = lo; c < P && !pending; ++c)
        pending =
            detail::next_load_layer(r, c, L) < L && r.at(c, detail::next_load_layer(r, c, L)) == cell_state::pending;
      if (pending || lo == 0) return;
      std::uint32_t j = lo - 1;
      if (j < h) return;
      std::uint64_t from = std::max<std::uint64_t>(z, std::uint64_t(j) * L + r.compute_top(j));
      if (from >= std::uint64_t(j + 1) * L) return;
      // A split inside a chunk compute has not reached commits the chunk's
      // layers above it to loads before compute gets there: only once the
      // costs rest on this device's compute and this link's rate (measured,
      // or a paced link's rate set by the operator); else the link waits.
      if (j > h && from > std::uint64_t(j) * L && !(opts_.truth || learned(costs, r.tier_of(j)))) return;
      auto s = static_cast<std::uint32_t>(from - std::uint64_t(j) * L);
      auto before = out.size();
      detail::grant_loads(
          b, r, j, [&](std::uint32_t c) { return c == j ? s : L; }, queue, max_grant, out, run);
      if (out.size() == before) return;
    }
  }

  // Seconds of r's compute grants in flight, each cell at the cost of its
  // head chunk h (the first not wholly claimed, at most P).
  static double gpu_in_flight_s(const request_state& r, const cost_model& costs, std::uint32_t h) {
    return double(r.compute_in_flight()) * costs.cell_s(std::min(h, r.chunks() - 1));
  }

  // Seconds of a request's grants in flight: on the GPU and on each tier's
  // link (a chunk's load-granted cells not yet loaded).
  struct in_flight_s {
    double gpu = 0;
    std::array<double, msg::tier_count> link{};
  };
  static in_flight_s in_flight_of(const request_state& r, const cost_model& costs) {
    in_flight_s f;
    const auto h =
        static_cast<std::uint32_t>(std::min<std::uint64_t>(detail::head_position(r) / r.layers(), r.cached()));
    f.gpu = gpu_in_flight_s(r, costs, h);
    const double cell_bytes = double(r.cell_bytes());
    for (std::uint32_t c = 0; c < r.cached(); ++c)
      if (auto n = r.load_claimed(c) - r.loaded(c); n > 0)
        f.link[static_cast<std::size_t>(r.tier_of(c))] += n * costs.load_s(r.tier_of(c), r.link_of(c), cell_bytes);
    return f;
  }

  static bool learned(const cost_model& costs, msg::tier t) {
    return costs.compute_samples() > 0 && costs.rate_samples(t) > 0;
  }

  // Where compute and loads of r should meet, given that the GPU is busy
  // for gpu_busy seconds and r's link for link_busy seconds with others' work.
  plan_t make_plan(const request_state& r, const cost_model& costs, double gpu_busy, double link_busy) {
    const std::uint32_t L = r.layers(), P = r.cached(), S = r.chunks();
    plan_t p;
    const double cell_bytes = double(r.cell_bytes());
    // Each chunk at its own link's rate: a remote tier's nodes are learned apart.
    auto load_cell_s = [&](std::uint32_t c) { return costs.load_s(r.tier_of(c), r.link_of(c), cell_bytes); };

    double suffix = 0, row = 0;
    for (std::uint32_t c = P; c < S; ++c) {
      suffix += (L - r.compute_top(c)) * costs.cell_s(c);
      row += costs.cell_s(c);
    }
    if (suffix == 0) row = 0;

    std::uint64_t x = std::min<std::uint64_t>(detail::head_position(r), std::uint64_t(P) * L);
    std::uint32_t h = static_cast<std::uint32_t>(std::min<std::uint64_t>(x / L, P));
    double committed = 0;
    for (std::uint32_t c = h; c < P; ++c)
      if (r.load_claimed(c) > 0) committed += double(L - r.load_bottom(c) - r.loaded(c)) * load_cell_s(c);
    double in_flight = gpu_in_flight_s(r, costs, h);

    std::uint64_t y = std::uint64_t(P) * L;
    bool forced = false;
    if (h < P) {
      if (r.load_claimed(h) > 0) {
        y = std::uint64_t(h) * L + r.load_bottom(h);
        forced = true;  // cells below a chunk's load claims can only be computed
      } else {
        std::uint32_t c = h + 1;
        while (c < P && r.load_claimed(c) == 0) ++c;
        y = std::uint64_t(c) * L;
      }
    }
    p.x = x;
    p.y = y;
    // Cumulative compute and load seconds of the free cells [x, y), per chunk.
    std::uint32_t c_end = static_cast<std::uint32_t>((y + L - 1) / L);
    cum_c_.assign(1, 0.0);
    cum_l_.assign(1, 0.0);
    for (std::uint32_t c = h; c < c_end; ++c) {
      std::uint64_t f0 = std::max<std::uint64_t>(x, std::uint64_t(c) * L),
                    f1 = std::min<std::uint64_t>(y, std::uint64_t(c + 1) * L);
      double n = f1 > f0 ? double(f1 - f0) : 0;
      cum_c_.push_back(cum_c_.back() + n * costs.cell_s(c));
      cum_l_.push_back(cum_l_.back() + n * load_cell_s(c));
    }
    auto at = [&](const std::vector<double>& cum, std::uint64_t z) {
      if (z <= x) return 0.0;
      auto c = static_cast<std::uint32_t>(z / L);
      auto i = c - h;
      if (i + 1 >= cum.size()) return cum.back();
      std::uint64_t f0 = std::max<std::uint64_t>(x, std::uint64_t(c) * L);
      double frac = double(z - f0) / double(std::min<std::uint64_t>(y, std::uint64_t(c + 1) * L) - f0);
      return cum[i] + frac * (cum[i + 1] - cum[i]);
    };
    auto compute_left = [&](std::uint64_t z) { return in_flight + at(cum_c_, z) + suffix; };
    // One grant's latency per layer of the region [z, y): after the pointers
    // meet, loads go a layer row of adjacent chunks a grant. Before, a
    // claimed chunk loads a layer a grant, so this undercounts there. The
    // term matters where a layer's transfer is about as short as the
    // latency (smollm2's 786 KB layers: 0.6 ms from the H100 machine's disk).
    const auto last = static_cast<std::uint32_t>((y - 1) / L);
    const double grant_latency = y > 0 ? costs.latency_s(r.tier_of(last), r.link_of(last)) : 0.0;
    auto load_left = [&](std::uint64_t z) {
      double rows = z < y ? double(std::min<std::uint64_t>(L, y - z)) : 0.0;
      return committed + cum_l_.back() - at(cum_l_, z) + grant_latency * rows;
    };
    auto est = [&](std::uint64_t z) {
      double l = load_left(z);
      return std::max(gpu_busy + compute_left(z), l > 0 ? link_busy + l + row : 0.0);
    };
    std::uint64_t z = y;
    if (!forced && y > x) {
      // Compute's side grows with z, loads' side shrinks: find where they cross.
      std::uint64_t lo = x, hi = y;
      while (lo < hi) {
        std::uint64_t mid = lo + (hi - lo) / 2;
        double l = load_left(mid);
        if (gpu_busy + compute_left(mid) >= (l > 0 ? link_busy + l + row : 0.0)) {
          hi = mid;
        } else {
          lo = mid + 1;
        }
      }
      z = lo;
      if (oracle_) {
        // The oracle also searches a chunk either side of the crossing.
        std::uint64_t from = z > x + L ? z - L : x, to = std::min(y, z + L);
        double best = est(z);
        for (std::uint64_t q = from; q <= to; ++q)
          if (est(q) < best) best = est(q), z = q;
      } else if (z > x && est(z - 1) <= est(z)) {
        --z;
      }
      // Compute everything still free unless loading pays for its risk.
      if (z < y && est(z) > (1 - opts_.min_load_gain) * est(y)) z = y;
    }
    p.z = z;
    p.compute_s = compute_left(z);
    p.load_s = load_left(z);
    p.est = est(z);
    return p;
  }

  policy_options opts_;
  bool oracle_;
  std::unordered_map<std::uint64_t, split_point> splits_;
  std::vector<double> cum_c_, cum_l_;
  std::uint64_t trip_cells_ = 0;  // compute cells that cover one grant's trip
};

}  // namespace

std::unique_ptr<policy> make_two_pointer(const policy_options& opts) {
  auto o = opts;
  o.truth.reset();
  return std::make_unique<two_pointer>(std::move(o), false);
}

std::unique_ptr<policy> make_oracle(const policy_options& opts) { return std::make_unique<two_pointer>(opts, true); }

}  // namespace kvflow::policies
