#include "policies/policy.hpp"

#include <algorithm>
#include <cmath>
#include <iterator>

#include "messages/error.hpp"
#include "policies/grant_helpers.hpp"

namespace kvflow::policies {

std::unique_ptr<policy> make_two_pointer(const policy_options& opts);
std::unique_ptr<policy> make_oracle(const policy_options& opts);

namespace detail {

void emit(batch_state& b, const request_state& r, msg::action act, const msg::cell_range& cells, msg::tier source,
          std::vector<msg::grant>& out) {
  msg::grant g;
  g.request_id = r.id();
  g.act = act;
  g.cells = cells;
  g.source = act == msg::action::load ? source : msg::tier::gpu;
  b.apply(g);
  out.push_back(g);
}

std::uint32_t layer_run(const cost_model& costs, msg::tier t, std::uint64_t cell_bytes, std::uint32_t layers) {
  const double cell_s = costs.load_s(t, double(cell_bytes));
  const double want = cell_s > 0 ? std::ceil(costs.latency_s(t) / (0.05 * cell_s)) : 1.0;
  return static_cast<std::uint32_t>(std::isfinite(want) ? std::clamp(want, 1.0, std::max(1.0, layers / 4.0)) : 1.0);
}

std::uint64_t head_position(const request_state& r) {
  const std::uint32_t L = r.layers();
  for (std::uint32_t c = 0; c < r.chunks(); ++c)
    if (r.compute_top(c) < r.load_bottom(c)) return std::uint64_t(c) * L + r.compute_top(c);
  return std::uint64_t(r.chunks()) * L;
}

namespace {

// One grant from head cell (c, top): chunks [c, c + w) that all have `top`
// layers computed, layers [top, e), as wide as compute_group and as deep as
// `left` cells allow over that width, below chunk-major `limit`, under
// every chunk's load claims and where layer l's inputs are there
// (ready_prefix(l) >= c; chunk c + i's own inputs come from this grant).
// A `left` narrower than the chunks that could go together grants nothing
// while the GPU has work: a sliver (a budget's remainder of 2 cells after a
// 64-cell grant) would split the group for good, its chunks a layer apart,
// and every later grant of them would run narrower (H200, chunk 256: 2- and
// 4-chunk forwards cost 0.28-0.34 ms a cell against 0.19-0.22 at 8).
// Returns cells granted (0: none possible).
std::uint64_t grant_wide(batch_state& b, const request_state& r, std::uint32_t c, std::uint32_t top,
                         std::uint64_t limit, std::uint64_t left, std::vector<msg::grant>& out) {
  const std::uint32_t L = r.layers(), S = r.chunks(), G = b.limits().compute_group;
  // Chunk c + i may compute layers below min(L, its load claims, its share of the limit).
  auto cap = [&](std::uint32_t ci) {
    std::uint64_t e = std::min<std::uint32_t>(L, r.load_bottom(ci));
    std::uint64_t base = std::uint64_t(ci) * L;
    return limit <= base ? std::uint64_t(0) : std::min<std::uint64_t>(e, limit - base);
  };
  std::uint32_t w = 1;
  while (w < G && c + w < S && r.compute_top(c + w) == top && cap(c + w) > top) ++w;
  if (w > left) {
    if (b.in_flight().compute_cells > 0) return 0;
    w = static_cast<std::uint32_t>(std::max<std::uint64_t>(1, left));
  }
  std::uint64_t e = std::min<std::uint64_t>(cap(c), top + std::max<std::uint64_t>(1, left / w));
  for (std::uint32_t i = 1; i < w; ++i) e = std::min(e, cap(c + i));
  std::uint32_t end = top;
  while (end < e && r.ready_prefix(end) >= c) ++end;
  if (end == top) return 0;
  emit(b, r, msg::action::compute, msg::cell_range{c, c + w, top, end}, msg::tier::gpu, out);
  return std::uint64_t(w) * (end - top);
}

}  // namespace

std::uint64_t grant_head(batch_state& b, const request_state& r, std::uint64_t limit, std::uint64_t budget,
                         std::vector<msg::grant>& out, std::uint64_t max_grant) {
  const std::uint32_t L = r.layers(), S = r.chunks();
  std::uint64_t granted = 0;
  while (granted < budget) {
    auto pos = head_position(r);
    if (pos >= limit || pos >= std::uint64_t(S) * L) break;
    auto c = static_cast<std::uint32_t>(pos / L), top = static_cast<std::uint32_t>(pos % L);
    std::uint64_t left = budget - granted;
    left = std::min(left, b.compute_room());
    if (left == 0) break;
    if (max_grant > 0) left = std::min(left, max_grant);
    if (b.limits().compute_group > 1) {
      auto n = grant_wide(b, r, c, top, limit, left, out);
      if (n == 0) break;
      granted += n;
      continue;
    }
    // Whole free chunks, several at once when budget and limit allow.
    if (top == 0 && r.load_bottom(c) == L && r.load_claimed(c) == 0) {
      std::uint32_t n = 0;
      while (c + n < S && std::uint64_t(c + n + 1) * L <= limit && std::uint64_t(n + 1) * L <= left &&
             r.compute_top(c + n) == 0 && r.load_claimed(c + n) == 0)
        ++n;
      bool ready = n > 0;
      for (std::uint32_t l = 0; ready && l < L; ++l) ready = r.ready_prefix(l) >= c;
      if (ready) {
        emit(b, r, msg::action::compute, msg::cell_range{c, c + n, 0, L}, msg::tier::gpu, out);
        granted += std::uint64_t(n) * L;
        continue;
      }
    }
    // Part of one chunk: up to its load claims, the limit and the budget, as far as inputs are there.
    std::uint64_t end = std::min<std::uint64_t>({r.load_bottom(c), top + left, limit - std::uint64_t(c) * L});
    if (end > L) end = L;
    std::uint32_t e = top;
    while (e < end && r.ready_prefix(e) >= c) ++e;
    if (e == top) break;
    emit(b, r, msg::action::compute, msg::cell_range{c, c + 1, top, e}, msg::tier::gpu, out);
    granted += e - top;
  }
  return granted;
}

std::uint64_t grant_suffix(batch_state& b, const request_state& r, std::uint64_t budget, std::vector<msg::grant>& out) {
  const std::uint32_t L = r.layers(), S = r.chunks(), P = r.cached();
  std::uint64_t granted = 0;
  while (granted < budget) {
    std::uint64_t left = budget - granted;
    left = std::min(left, b.compute_room());
    if (left == 0) break;
    // Layer-major: chunks [P, a) are one layer ahead of [a, S).
    std::uint32_t level = L;
    for (std::uint32_t c = P; c < S; ++c) level = std::min(level, r.compute_top(c));
    if (level >= L) break;
    std::uint32_t a = P;
    while (a < S && r.compute_top(a) > level) ++a;
    if (r.ready_prefix(level) < a || (level > 0 && r.compute_top(a) < level)) break;
    if (a == P) {
      // Whole rows, as many layers as the prefix allows.
      std::uint64_t row = S - P;
      if (row <= left) {
        std::uint32_t l2 = level;
        while (l2 < L && r.ready_prefix(l2) >= P && std::uint64_t(l2 + 1 - level) * row <= left) ++l2;
        emit(b, r, msg::action::compute, msg::cell_range{P, S, level, l2}, msg::tier::gpu, out);
        granted += std::uint64_t(l2 - level) * row;
        continue;
      }
    }
    auto n = static_cast<std::uint32_t>(std::min<std::uint64_t>(S - a, left));
    emit(b, r, msg::action::compute, msg::cell_range{a, a + n, level, level + 1}, msg::tier::gpu, out);
    granted += n;
  }
  return granted;
}

}  // namespace detail

namespace {

using detail::emit;

std::uint64_t grant_bytes(const policy_options& o, const request_state& r) {
  return o.max_load_grant_bytes ? o.max_load_grant_bytes : r.chunk_bytes();
}

// Every chunk computed, first come first served, the largest grants the cap allows.
class compute_only final : public policy {
 public:
  const char* name() const override { return to_string(policy_kind::compute_only); }
  std::vector<msg::grant> decide(batch_state& b, const cost_model&) override {
    std::vector<msg::grant> out;
    for (auto& r : b.requests()) {
      if (r.restored()) continue;
      // Two grants of half the cap each: the device starts the second while
      // the first one's completion travels back and the next is granted.
      auto half = std::max<std::uint64_t>(r.layers(), b.limits().compute_cells / 2);
      detail::grant_head(b, r, std::uint64_t(r.chunks()) * r.layers(), b.compute_room(), out, half);
    }
    return out;
  }
};

// Every cached cell loaded layer by layer; the suffix computed a layer row at
// a time as soon as the prefix has that layer. First come first served.
class load_only final : public policy {
 public:
  explicit load_only(policy_options o) : opts_(std::move(o)) {}
  const char* name() const override { return to_string(policy_kind::load_only); }
  std::vector<msg::grant> decide(batch_state& b, const cost_model&) override {
    std::vector<msg::grant> out;
    for (auto& r : b.requests()) {
      if (r.restored()) continue;
      std::uint64_t queue = std::uint64_t(opts_.load_queue_chunks) * r.chunk_bytes();
      detail::grant_loads(
          b, r, 0, [](std::uint32_t) { return 0u; }, queue, grant_bytes(opts_, r), out);
      detail::grant_suffix(b, r, b.compute_room(), out);
    }
    return out;
  }

 private:
  policy_options opts_;
};

// Cake, per request: compute whole chunks upward from chunk 0, load whole
// chunks downward from chunk P-1, each as fast as its resource takes grants,
// until they meet; then the suffix. Requests take turns (round robin), or
// with `fcfs` are served first come, first served, as a serving engine's
// scheduler takes them: the first request's compute and loads fill their
// queues, and a later one gets a resource where those before it cannot use
// it. Neither order is better for every batch: round robin lets a short
// request behind a long one finish early, first come first served does
// not finish every request near the end.
class bidirectional final : public policy {
 public:
  bidirectional(policy_options o, bool fcfs) : opts_(std::move(o)), fcfs_(fcfs) {}
  const char* name() const override {
    return to_string(fcfs_ ? policy_kind::bidirectional_fcfs : policy_kind::bidirectional);
  }
  std::vector<msg::grant> decide(batch_state& b, const cost_model&) override {
    std::vector<msg::grant> out;
    auto& rs = b.requests();
    if (rs.empty()) return out;
    if (fcfs_) {
      for (auto& r : rs)
        if (!r.restored())
          while (step(b, r, out)) {
          }
      return out;
    }
    std::size_t n = rs.size(), first = turn_++ % n;
    for (bool progress = true; progress;) {
      progress = false;
      for (std::size_t i = 0; i < n; ++i) {
        auto& r = rs[(first + i) % n];
        if (r.restored()) continue;
        progress |= step(b, r, out);
      }
    }
    return out;
  }

 private:
  // One chunk of compute and one chunk of load for r, if their queues have room.
  bool step(batch_state& b, const request_state& r, std::vector<msg::grant>& out) {
    const std::uint32_t L = r.layers(), P = r.cached();
    bool any = false;
    // Compute in half chunks, lookahead of them in flight: the device has the
    // next half queued while one finishes, and the pointers still meet
    // within a chunk.
    // (With compute_group G, G chunks wide: run as one forward.)
    const std::uint64_t G = b.limits().compute_group;
    const std::uint64_t half = (L + 1) / 2 * G;
    std::uint64_t queue_cells = std::uint64_t(opts_.lookahead_chunks) * half;
    // A whole half chunk of room (or an idle GPU): slivers would split every
    // later grant as small.
    auto in_flight = b.in_flight().compute_cells;
    if (in_flight == 0 || in_flight + half <= queue_cells) {
      std::uint64_t budget = std::min<std::uint64_t>(half, queue_cells - in_flight);
      any |= detail::grant_head(b, r, std::uint64_t(r.chunks()) * L, budget, out) > 0;
    }
    // The load pointer: finish the lowest claimed chunk, else take the chunk
    // below it while compute has not reached it; as many of the chunk's
    // layers as the link's queue and cap take (the whole chunk normally).
    std::uint32_t lo = P;
    while (lo > 0 && r.load_claimed(lo - 1) > 0) --lo;
    std::uint32_t j = lo, from = 0;
    if (lo < P && r.load_claimed(lo) < L - r.load_bottom(lo)) {
      from = r.load_bottom(lo) + r.load_claimed(lo);
    } else if (lo > 0 && r.compute_top(lo - 1) == 0) {
      j = lo - 1;
    } else {
      return any;
    }
    auto t = r.tier_of(j);
    std::uint64_t queue = detail::link_queue_bytes(b, r, opts_.load_queue_chunks);
    auto used = b.in_flight().load_bytes[static_cast<std::size_t>(t)];
    std::uint32_t to = L;
    auto fits = [&](std::uint32_t n) {
      std::uint64_t bytes = std::uint64_t(n) * r.cell_bytes();
      return (used == 0 || used + bytes <= queue) && b.fits_load(t, bytes, n);
    };
    while (to > from && !fits(to - from)) --to;
    if (to > from) {
      emit(b, r, msg::action::load, msg::cell_range{j, j + 1, from, to}, t, out);
      any = true;
    }
    return any;
  }

  policy_options opts_;
  bool fcfs_;
  std::size_t turn_ = 0;
};

}  // namespace

// The one table of policy names, in policy_kind's order.
constexpr const char* kind_names[] = {"compute_only", "load_only", "bidirectional",
                                      "two_pointer",  "oracle",    "bidirectional_fcfs"};
static_assert(std::size(kind_names) == static_cast<std::size_t>(policy_kind::bidirectional_fcfs) + 1);

const char* to_string(policy_kind kind) { return kind_names[static_cast<std::size_t>(kind)]; }

std::optional<policy_kind> policy_from_name(const std::string& name) {
  for (std::size_t i = 0; i < std::size(kind_names); ++i)
    if (name == kind_names[i]) return static_cast<policy_kind>(i);
  return std::nullopt;
}

const std::vector<std::string>& policy_names() {
  static const std::vector<std::string> names(std::begin(kind_names), std::end(kind_names));
  return names;
}

std::unique_ptr<policy> make_policy(policy_kind kind, policy_options opts) {
  if (opts.lookahead_chunks == 0) opts.lookahead_chunks = 2;
  switch (kind) {
    case policy_kind::compute_only:
      return std::make_unique<compute_only>();
    case policy_kind::load_only:
      return std::make_unique<load_only>(std::move(opts));
    case policy_kind::bidirectional:
      return std::make_unique<bidirectional>(std::move(opts), false);
    case policy_kind::bidirectional_fcfs:
      return std::make_unique<bidirectional>(std::move(opts), true);
    case policy_kind::two_pointer:
      return make_two_pointer(opts);
    case policy_kind::oracle:
      if (!opts.truth)
        throw error(errc::invalid_argument, "policy oracle: policy_options.truth (the run's true costs) is required");
      return make_oracle(opts);
  }
  throw error(errc::invalid_argument, "policy kind " + std::to_string(static_cast<int>(kind)) + " does not exist");
}

std::unique_ptr<policy> make_policy(const std::string& name, policy_options opts) {
  if (auto kind = policy_from_name(name)) return make_policy(*kind, std::move(opts));
  std::string known;
  for (auto& n : policy_names()) known += (known.empty() ? "" : ", ") + n;
  throw error(errc::not_found, "unknown policy '" + name + "' (known: " + known + ")");
}

}  // namespace kvflow::policies
