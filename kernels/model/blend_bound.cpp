#include "kernels/model/blend_bound.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "kernels/cpu/rope.hpp"
#include "messages/error.hpp"

namespace kvflow::model {
namespace {

// One prompt: the full recompute and the documents placed as cached.
struct prompt_state {
  const quality_case* qc = nullptr;
  int n = 0;
  kv_shape shape;
  std::vector<char> is_document;
  std::vector<int> document_rows;  // document positions except the last position
  full_reference full;
  std::vector<float> placed;
};

// Scores `kv` (document rows as given, others ignored): the prompt's other
// rows and its last position are recomputed over every layer on it.
agreement score_kv(engine& e, const prompt_state& p, std::vector<float> kv) {
  const config& c = e.cfg();
  std::vector<std::int32_t> rows, tokens;
  for (int t = 0; t < p.n; ++t)
    if (!p.is_document[t] || t == p.n - 1) {
      rows.push_back(t);
      tokens.push_back(p.qc->prompt[t]);
    }
  const kv_block block{kv.data(), p.shape};
  std::vector<float> hidden(rows.size() * static_cast<std::size_t>(c.hidden));
  selected_job job;
  job.tokens = tokens.data();
  job.positions = rows.data();
  job.count = static_cast<int>(rows.size());
  job.layer_end = c.layers;
  job.kv = block;
  job.hidden = {hidden.data(), job.count};
  e.run_selected(job);
  const std::vector<float> last(hidden.end() - c.hidden, hidden.end());
  return compare_distributions(p.full.logp, answer_distributions(e, block, last, p.full.answer));
}

// The full recompute's rows `t` of layers [l0, l1) into `kv`.
void make_exact(const prompt_state& p, std::vector<float>& kv, int t, int l0, int l1) {
  const kv_shape& s = p.shape;
  for (int l = l0; l < l1; ++l)
    for (int k = 0; k < 2; ++k)
      for (int h = 0; h < s.kv_heads; ++h) {
        const std::size_t o = s.offset(l, k, h, t, 0);
        std::memcpy(kv.data() + o, p.full.kv.data() + o, sizeof(float) * s.head_dim);
      }
}

// Lower is better: disagreements first, then KL.
bool better(const agreement& a, const agreement& b) {
  const int ma = a.samples - a.agreements, mb = b.samples - b.agreements;
  return ma != mb ? ma < mb : a.kl_sum < b.kl_sum;
}

void add(agreement& to, const agreement& a) {
  to.samples += a.samples;
  to.agreements += a.agreements;
  to.near_tie_misses += a.near_tie_misses;
  to.kl_sum += a.kl_sum;
}

}  // namespace

std::vector<bound_point> evaluate_bounds(engine& e, const std::vector<quality_case>& cases, int answer_tokens,
                                         const bound_options& opts) {
  if (!(opts.ratio > 0 && opts.ratio < 1))
    throw error(errc::invalid_argument, "evaluate_bounds: ratio " + std::to_string(opts.ratio) + " outside (0, 1)");
  if (opts.candidates < 1 || opts.steps < 1)
    throw error(errc::invalid_argument, "evaluate_bounds: greedy needs candidates and steps >= 1");
  const config& c = e.cfg();
  const auto inv = cpu::rope_inv_freq(c.head_dim, c.rope_theta, c.scaling);
  std::vector<bound_point> points;
  points.push_back({"placed", "", 0, 0, {}});
  points.push_back({"full", "", 0, 1, {}});
  for (int cut : opts.layer_cuts) {
    if (cut <= 0 || cut >= c.layers)
      throw error(errc::invalid_argument, "evaluate_bounds: layer cut " + std::to_string(cut) + " outside (0, " +
                                              std::to_string(c.layers) + ")");
    points.push_back({"exact_layers_from", "", cut, 1, {}});
    points.push_back({"exact_layers_below", "", cut, 1, {}});
  }
  const std::size_t first_token_point = points.size();
  if (opts.tokens)
    for (const char* s : {"true_deviation", "marginal", "greedy"})
      points.push_back({"oracle_tokens", s, 0, opts.ratio, {}});

  for (const auto& qc : cases) {
    prompt_state p;
    p.qc = &qc;
    p.n = static_cast<int>(qc.prompt.size());
    check_segments(qc.segments, p.n);
    p.shape = kv_shape_of(c, p.n, dtype::f32);
    p.is_document.assign(static_cast<std::size_t>(p.n), 0);
    for (const auto& s : qc.segments)
      if (s.document) std::fill(p.is_document.begin() + s.begin, p.is_document.begin() + s.begin + s.count, 1);
    for (int t = 0; t < p.n - 1; ++t)
      if (p.is_document[t]) p.document_rows.push_back(t);
    p.full = full_recompute(e, qc, answer_tokens);
    // Rows outside documents start as the full recompute's (score_kv
    // recomputes them anyway); document rows as placed.
    p.placed = p.full.kv;
    const auto sink = opts.sink ? sink_prefix(qc.prompt, qc.segments) : std::vector<std::int32_t>{};
    for (const auto& s : qc.segments) {
      if (!s.document) continue;
      const kv_shape ds = kv_shape_of(c, s.count, dtype::f32);
      std::vector<float> doc(ds.bytes() / sizeof(float));
      document_kv(e, {qc.prompt.begin() + s.begin, qc.prompt.begin() + s.begin + s.count}, {doc.data(), ds}, sink);
      place_document({doc.data(), ds}, s.begin, {p.placed.data(), p.shape}, inv, static_cast<int>(sink.size()));
    }

    std::size_t at = 0;
    const agreement placed_score = score_kv(e, p, p.placed);
    add(points[at++].score, placed_score);
    add(points[at++].score, score_kv(e, p, p.full.kv));
    for (int cut : opts.layer_cuts) {
      auto from = p.placed, below = p.placed;
      for (int t : p.document_rows) {
        make_exact(p, from, t, cut, c.layers);
        make_exact(p, below, t, 0, cut);
      }
      add(points[at++].score, score_kv(e, p, from));
      add(points[at++].score, score_kv(e, p, below));
    }
    if (!opts.tokens) continue;
    at = first_token_point;
    const int k = std::clamp(static_cast<int>(std::lround(opts.ratio * p.document_rows.size())), 1,
                             static_cast<int>(p.document_rows.size()));
    auto exact_for = [&](const std::vector<int>& order, int count) {
      auto kv = p.placed;
      for (int i = 0; i < count; ++i) make_exact(p, kv, order[i], 0, c.layers);
      return kv;
    };
    // (a) True deviation: relative K/V change per head, summed over layers.
    std::vector<double> deviation(static_cast<std::size_t>(p.n), 0);
    for (int t : p.document_rows)
      for (int l = 0; l < c.layers; ++l)
        for (int kv = 0; kv < 2; ++kv)
          for (int h = 0; h < c.kv_heads; ++h) {
            const std::size_t o = p.shape.offset(l, kv, h, t, 0);
            double diff = 0, norm = 0;
            for (int d = 0; d < c.head_dim; ++d) {
              diff += std::pow(p.full.kv[o + d] - p.placed[o + d], 2);
              norm += std::pow(p.full.kv[o + d], 2);
            }
            deviation[t] += std::sqrt(diff / (norm + 1e-20));
          }
    auto order = p.document_rows;
    std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return deviation[a] > deviation[b]; });
    add(points[at++].score, score_kv(e, p, exact_for(order, k)));
    // (b) Marginal: each token exact alone.
    std::vector<agreement> alone(static_cast<std::size_t>(p.n));
    for (int t : p.document_rows) alone[t] = score_kv(e, p, exact_for({t}, 1));
    order = p.document_rows;
    std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return better(alone[a], alone[b]); });
    add(points[at++].score, score_kv(e, p, exact_for(order, k)));
    // (c) Greedy in `steps` steps from the best marginal candidates.
    auto kv = p.placed;
    std::vector<char> chosen(static_cast<std::size_t>(p.n), 0);
    int taken = 0;
    const int per_step = (k + opts.steps - 1) / opts.steps;
    agreement current = placed_score;
    while (taken < k) {
      std::vector<std::pair<agreement, int>> scored;
      for (int t : order) {
        if (chosen[t]) continue;
        auto trial = kv;
        make_exact(p, trial, t, 0, c.layers);
        scored.push_back({score_kv(e, p, trial), t});
        if (static_cast<int>(scored.size()) == opts.candidates) break;
      }
      std::stable_sort(scored.begin(), scored.end(),
                       [](const auto& a, const auto& b) { return better(a.first, b.first); });
      for (int i = 0; i < per_step && taken < k && i < static_cast<int>(scored.size()); ++i, ++taken) {
        chosen[scored[i].second] = 1;
        make_exact(p, kv, scored[i].second, 0, c.layers);
      }
      current = score_kv(e, p, kv);
    }
    add(points[at++].score, current);
  }
  return points;
}

}  // namespace kvflow::model
