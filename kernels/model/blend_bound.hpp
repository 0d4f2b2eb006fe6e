#pragma once
// What the best restore of a kind could reach (issue 20's quality bar):
// oracles that take the full recompute's own KV, which no runtime has.
// Rows or layers of the documents get the full recompute's exact KV, the
// rest stays as placed from documents computed alone, the prompt's other
// tokens are recomputed over it, and the answer is scored as
// evaluate_blend_quality scores a selection. Exact KV for a token is more
// than recomputing it can give (a recomputed token still attends to the
// stale rest), so a token bound is an upper bound for its selection.
//  - layer bounds: every document token exact in layers [L, layers) (the
//    cached KV's loss in layers below L alone) and in [0, L).
//  - token bounds at `ratio`: exact KV in every layer for the document
//    tokens chosen by their true K/V deviation (summed over layers, relative
//    per head), by how much each alone lowers the loss (marginal), and
//    greedily: steps of a few tokens, each time the candidates (the best
//    marginal ones not yet chosen) that lower the loss most on top of those
//    already chosen. The loss is (disagreements, KL) in that order: the
//    greedy set aims at the top-1 bar.

#include <string>
#include <vector>

#include "kernels/model/blend_quality.hpp"

namespace kvflow::model {

struct bound_options {
  double ratio = 0.15;
  std::vector<int> layer_cuts{2, 4, 8, 16, 24};
  bool tokens = true;   ///< the token bounds (slow: hundreds of restores per prompt)
  int candidates = 32;  ///< greedy: candidates scored per step
  int steps = 6;        ///< greedy: steps to reach `ratio`
  bool sink = false;    ///< documents computed after the sink prefix (sink_prefix)
};

struct bound_point {
  std::string kind;       ///< "exact_layers_from", "exact_layers_below", "oracle_tokens"
  std::string selection;  ///< oracle_tokens: "true_deviation", "marginal", "greedy"; else ""
  int layer = 0;          ///< the cut L of a layer bound
  double ratio = 0;       ///< share of document tokens exact (token bounds; 1 for layer bounds)
  agreement score;
  double top1() const { return score.samples ? static_cast<double>(score.agreements) / score.samples : 0; }
  double kl() const { return score.samples ? score.kl_sum / score.samples : 0; }
};

/// The bounds over `cases`; the first points are the placed documents
/// alone ("placed", nothing exact) and the full recompute ("full").
std::vector<bound_point> evaluate_bounds(engine& e, const std::vector<quality_case>& cases, int answer_tokens,
                                         const bound_options& opts);

}  // namespace kvflow::model
