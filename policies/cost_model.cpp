#include "policies/cost_model.hpp"

#include <algorithm>
#include <cmath>

namespace kvflow::policies {
namespace {

// Ridge weight of the prior, in cells: a few grants outweigh it, yet it keeps
// the slope defined while every sample comes from the same positions.
constexpr double prior_cells = 4.0;
// Position scale of the slope's ridge term (chunks).
constexpr double slope_scale = 8.0;

}  // namespace

cost_model::cost_model(cost_prior prior)
    : prior_(prior), a_(prior.cell_s), b_(prior.cell_slope_s), rate_(prior.bytes_per_s), latency_(prior.latency_s) {}

cost_model cost_model::fixed(double cell_s, double cell_slope_s, const std::array<double, msg::tier_count>& bytes_per_s,
                             const std::array<double, msg::tier_count>& latency_s) {
  cost_prior p;
  p.cell_s = cell_s;
  p.cell_slope_s = cell_slope_s;
  p.bytes_per_s = bytes_per_s;
  cost_model m(p);
  m.latency_ = latency_s;
  m.frozen_ = true;
  return m;
}

double cost_model::compute_s(std::uint32_t begin, std::uint32_t end, std::uint32_t layers) const {
  if (end <= begin) return 0;
  double n = end - begin;
  // sum_{c=begin}^{end-1} (a + b c) = n a + b n (begin + end - 1) / 2
  return layers * (n * a_ + b_ * n * (double(begin) + double(end) - 1) / 2);
}

double cost_model::compute_s(const msg::cell_range& cells) const {
  if (cells.layer_end <= cells.layer_begin) return 0;
  return compute_s(cells.chunk_begin, cells.chunk_end, cells.layer_end - cells.layer_begin);
}

void cost_model::observe(const msg::cell_done& done) {
  if (frozen_ || done.act != msg::action::compute) return;
  if (done.finished_ns <= done.started_ns) return;
  const auto& r = done.cells;
  if (r.chunk_end <= r.chunk_begin || r.layer_end <= r.layer_begin) return;
  double cells = double(r.chunk_end - r.chunk_begin) * (r.layer_end - r.layer_begin);
  // The first grant a model runs pays one-time setup (CUDA modules, cuBLAS
  // handles, allocator growth: 130-160 ms for a 26 ms chunk on the H100);
  // it is not the steady cost, and its weight would take dozens of samples
  // to decay.
  if (!seen_first_compute_) {
    seen_first_compute_ = true;
    return;
  }
  // A one-cell grant (a suffix row of one chunk) costs about 30% more per
  // cell than a piece: launch and completion latency dominate it. The plan
  // prices pieces, so those are what it learns from.
  if (cells < 2) return;
  double per_cell = (done.finished_ns - done.started_ns) * 1e-9 / cells;
  double x = (double(r.chunk_begin) + double(r.chunk_end) - 1) / 2;  // mean position
  double f = prior_.compute_forget;
  sw_ = f * sw_ + cells;
  sx_ = f * sx_ + cells * x;
  sxx_ = f * sxx_ + cells * x * x;
  sy_ = f * sy_ + cells * per_cell;
  sxy_ = f * sxy_ + cells * x * per_cell;
  ++compute_samples_;
  refit();
}

void cost_model::refit() {
  // Normal equations of weighted least squares plus a ridge pulling (a, b)
  // toward the prior: [sw+r, sx; sx, sxx+r s^2] [a b]' = [sy + r a0, sxy + r s^2 b0]'.
  double r = prior_cells, r2 = prior_cells * slope_scale * slope_scale;
  double m00 = sw_ + r, m01 = sx_, m11 = sxx_ + r2;
  double v0 = sy_ + r * prior_.cell_s, v1 = sxy_ + r2 * prior_.cell_slope_s;
  double det = m00 * m11 - m01 * m01;
  if (!(std::fabs(det) > 0)) return;
  double a = (v0 * m11 - m01 * v1) / det;
  double b = (m00 * v1 - m01 * v0) / det;
  if (!std::isfinite(a) || !std::isfinite(b)) return;
  // A negative cost is never right; keep the line positive over its range.
  a_ = std::max(a, 1e-9);
  b_ = std::max(b, -a_ / 1e6);
}

double cost_model::bytes_per_s(msg::tier t, std::uint16_t link) const {
  auto it = link ? per_link_.find({t, link}) : per_link_.end();
  return it != per_link_.end() && it->second.samples > 0 ? it->second.rate : bytes_per_s(t);
}

double cost_model::latency_s(msg::tier t, std::uint16_t link) const {
  auto it = link ? per_link_.find({t, link}) : per_link_.end();
  return it != per_link_.end() && it->second.samples > 0 ? it->second.latency : latency_s(t);
}

double cost_model::links_bytes_per_s(msg::tier t) const {
  double sum = 0;
  for (auto& [k, f] : per_link_)
    if (k.first == t && f.samples > 0) sum += f.rate;
  return sum;
}

std::uint64_t cost_model::rate_samples(msg::tier t) const {
  auto n = rate_samples_[static_cast<std::size_t>(t)];
  for (auto& [k, f] : per_link_)
    if (k.first == t) n += f.samples;
  return n;
}

std::uint64_t cost_model::rate_samples(msg::tier t, std::uint16_t link) const {
  if (link == 0) return rate_samples_[static_cast<std::size_t>(t)];
  auto it = per_link_.find({t, link});
  return it == per_link_.end() ? 0 : it->second.samples;
}

void cost_model::observe(const msg::rate_sample& s) {
  if (frozen_ || s.bytes == 0 || s.elapsed_ns == 0) return;
  auto i = static_cast<std::size_t>(s.source);
  if (i >= rate_.size()) return;
  const double x = double(s.bytes), y = s.elapsed_ns * 1e-9;
  if (s.link == 0) {
    if (rate_samples_[i]++ == 0)  // the first replaces the prior at once
      return fit_link(links_[i], true, rate_[i], latency_[i], prior_.latency_s[i], x, y, 1);
    auto& p = pools_[i];
    if (p.count > 0 && p.bytes != x) flush_pool(i);
    p.bytes = x;
    p.seconds += y;
    ++p.count;
    if (p.seconds >= prior_.rate_pool_s) flush_pool(i);
    return;
  }
  auto it = per_link_.find({s.source, s.link});
  if (it == per_link_.end()) {
    // Links come from the network (a node index): keep their count bounded.
    if (per_link_.size() >= max_links) return;
    it = per_link_.emplace(std::make_pair(s.source, s.link), link_fit{}).first;
  }
  // A link's samples (a node's, summed over grants that were in flight
  // together, see actors/remote_tier_actor) hide its per-grant latency in
  // the pipeline and split its time among grants only roughly: the rate
  // alone, as decayed bytes over decayed seconds, so that what one sample
  // overcounts the next gives back.
  auto& f = it->second;
  const double d = 1 - prior_.rate_alpha;
  f.sums.sx = d * f.sums.sx + x;
  f.sums.sy = d * f.sums.sy + y;
  ++f.samples;
  f.rate = f.sums.sx / f.sums.sy;
  f.latency = 0;
}

void cost_model::flush_pool(std::size_t i) {
  auto& p = pools_[i];
  if (p.count == 0) return;
  fit_link(links_[i], false, rate_[i], latency_[i], prior_.latency_s[i], p.bytes, p.seconds / double(p.count),
           double(p.count));
  p = sample_pool{};
}

void cost_model::fit_link(link_sums& L, bool first, double& rate, double& latency, double latency0, double x, double y,
                          double weight) const {
  // A pool of `weight` samples decays the older ones as one sample does:
  // the memory spans a few pools, not a few of its bursty samples.
  const double f = 1 - prior_.rate_alpha;
  L.s0 = f * L.s0 + weight;
  L.sx = f * L.sx + weight * x;
  L.sxx = f * L.sxx + weight * x * x;
  L.sy = f * L.sy + weight * y;
  L.sxy = f * L.sxy + weight * x * y;
  // The first measurement replaces the prior (a configured nominal rate).
  // (A prior latency stays, up to half the sample's time.)
  if (first) {
    latency = std::min(latency0, 0.5 * y);
    rate = x / (y - latency);
    return;
  }
  // Least squares of seconds = l + k * bytes, with ridges: l toward the
  // prior's latency (half a sample's weight) and k toward its last value (a
  // twentieth, at the samples' mean size). Samples of one size cannot tell
  // latency from bandwidth; the ridges then keep l near the prior's and let
  // k follow the rate.
  const double mean_x = L.sx / L.s0;
  const double rl = 0.5, rk = 0.05 * mean_x * mean_x;
  const double k_prev = 1 / rate;
  double m00 = L.s0 + rl, m01 = L.sx, m11 = L.sxx + rk;
  double v0 = L.sy + rl * latency0, v1 = L.sxy + rk * k_prev;
  double det = m00 * m11 - m01 * m01;
  double l = 0, k = k_prev;
  if (std::fabs(det) > 0) {
    l = (v0 * m11 - m01 * v1) / det;
    k = (m00 * v1 - m01 * v0) / det;
  }
  if (!(l >= 0) || !std::isfinite(k)) {
    // No latency: the rate alone.
    l = 0;
    k = v1 / m11;
  }
  if (!(k > 0) || !std::isfinite(k) || !std::isfinite(l)) return;
  rate = 1 / k;
  latency = l;
}

void cost_model::observe_compute_trip(double to_gpu_s, bool gpu_was_idle, double from_gpu_s) {
  if (frozen_) return;
  auto learn = [&](double v, double& mean, std::uint64_t& samples) {
    if (!(v >= 0 && v <= 1)) return;  // NaN too
    if (samples++ == 0) return;       // the first grant pays one-time setup
    mean = samples == 2 ? v : (1 - prior_.rate_alpha) * mean + prior_.rate_alpha * v;
  };
  if (gpu_was_idle) learn(to_gpu_s, to_gpu_s_, to_gpu_samples_);
  learn(from_gpu_s, from_gpu_s_, from_gpu_samples_);
}

}  // namespace kvflow::policies
