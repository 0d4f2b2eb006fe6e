#pragma once
// How much of a reused document to recompute (CacheTune's ratio from the
// cost model). A prompt that stitches cached documents restores them by
// loading their KV and recomputing a share r of their tokens (the rest of
// the prompt is computed in any case). The selected tokens' compute and the
// reused tokens' loads run at once, so the restore takes about
//   T(r) = max(compute(r), load(r))
// with compute growing in r and load shrinking in r (only reused tokens'
// KV moves). Where loading is slow, recomputing up to the balance point
// costs nothing and buys quality; where compute is busy, the ratio stays at
// the quality floor; where even that is slower than computing everything,
// the plan is a full recompute. Pure: numbers in, a decision out.

namespace kvflow::policies {

/// One request's documents and the machine's rates.
struct recompute_inputs {
  double document_tokens = 0;           ///< tokens of the reused documents
  double other_tokens = 0;              ///< tokens computed in any case (system text, question)
  int layers = 0;                       ///< model layers
  int check_layers = 2;                 ///< recomputed for every token (CacheBlend's selection); 0 for EPIC
  double token_layer_s = 0;             ///< compute seconds of one token through one layer, GPU to itself
  double compute_share = 1;             ///< share of the GPU this request gets (1 idle, 0.25 among four)
  double kv_bytes_per_token_layer = 0;  ///< K and V of one token in one layer
  double load_bytes_per_s = 0;          ///< the documents' tier; 0 when none holds them
  double load_latency_s = 0;            ///< fixed cost of the loads (a round trip)
  /// Share of the recompute that can start only once the last load is in
  /// (the selected rows of the last documents attend to every loaded row
  /// before them): 1/G where the rows run as G forwards, one per group of
  /// documents as its loads land; 0 for a perfect overlap.
  double tail_share = 0;
  /// The restore can also compute the leading documents in full, with no
  /// loads, while the later ones load (the two-pointer split of the prefix
  /// restore): set where the caller runs such a plan (the bench and the
  /// runtime's document path do).
  bool split_front = false;
  /// Compute seconds of one token through one layer for consecutive rows
  /// (a prefill's rate): the leading documents computed in full and the
  /// full recompute; 0: token_layer_s.
  double front_token_layer_s = 0;
  double min_ratio = 0.15;  ///< the quality floor (apps/bench/results/nonprefix_quality.json)
  double max_ratio = 1;
  /// Reuse only where the plan is at least this much faster than a full
  /// recompute: estimates carry error (per-job costs, a rate that moved),
  /// and a reuse that turns out slower than computing loses quality for nothing.
  double min_speedup = 1.1;
  /// Seconds the reuse path costs beyond max(compute, load) whatever the
  /// plan (buffers, copies into the chunk blocks, actor hops, the estimate's
  /// own error), as measured on earlier requests; 0 where unknown. It moves
  /// every reuse plan alike, so it decides only between reuse and a full
  /// recompute.
  double fixed_s = 0;
  /// The full recompute's measured seconds for this prompt (the runtime's
  /// ordinary path, which may be faster than the rate above predicts: fused
  /// prefill forwards); 0: estimated from front_token_layer_s.
  double full_recompute_s = 0;
};

/// The plan: recompute `ratio` of the document tokens and load the rest.
struct recompute_plan {
  double ratio = 1;  ///< share of the reused documents' tokens recomputed; 1 with full_recompute
  /// Share of the document tokens, from the first document on, computed in
  /// full with no loads (split_front); `ratio` applies to the rest.
  double front_share = 0;
  bool full_recompute = false;  ///< reuse would not be faster than computing everything
  double compute_s = 0;         ///< selected tokens' and check layers' compute at this ratio
  double load_s = 0;            ///< reused tokens' loads at this ratio (overlapped with compute)
  double estimate_s = 0;        ///< recompute_estimate_s at `ratio`: the planned restore time
  double fixed_s = 0;           ///< recompute_inputs::fixed_s, on top of estimate_s for a reuse plan
  double full_recompute_s = 0;  ///< computing every token (measured where given)
  double load_bytes = 0;        ///< bytes the plan moves
};

/// Compute seconds of the plan at ratio r (see recompute_inputs).
double recompute_compute_s(const recompute_inputs& in, double r);
/// Load seconds of the plan at ratio r: the reused tokens' KV above the
/// check layers, plus the last check layer's for every document token (the
/// cached values the deviation is measured against).
double recompute_load_s(const recompute_inputs& in, double r);

/// The planned restore time at ratio r: max(compute, load + tail_share * compute).
double recompute_estimate_s(const recompute_inputs& in, double r);

/// The planned restore time with the leading `front` share of document
/// tokens computed in full (overlapping the other documents' loads) and
/// ratio r of the rest recomputed once their loads land:
/// max(compute, load + tail_share * compute of the rest).
double recompute_split_estimate_s(const recompute_inputs& in, double front, double r);

/// The ratio in [min_ratio, max_ratio] that minimises the planned time,
/// preferring more recompute where it is free (load-bound), or a full
/// recompute where reuse (estimate_s + fixed_s) would not be min_speedup
/// times faster than full_recompute_s (measured where given). With
/// split_front, a plan that computes the leading documents in full and
/// reuses the rest at min_ratio is taken where it is faster: loads slower
/// than compute then shrink to what the compute can hide, so a slow tier
/// never makes the restore slower than a full recompute. Throws
/// kvflow::error(invalid_argument) for negative or empty inputs.
recompute_plan choose_recompute_ratio(const recompute_inputs& in);

}  // namespace kvflow::policies
