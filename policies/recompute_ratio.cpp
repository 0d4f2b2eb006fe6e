#include "policies/recompute_ratio.hpp"

#include <algorithm>
#include <string>

#include "messages/error.hpp"

namespace kvflow::policies {
namespace {

int check_of(const recompute_inputs& in) { return std::clamp(in.check_layers, 0, in.layers); }

}  // namespace

double recompute_compute_s(const recompute_inputs& in, double r) {
  const int check = check_of(in);
  const double per = in.token_layer_s / in.compute_share;
  const double all = in.document_tokens + in.other_tokens;
  return per * (all * check + (r * in.document_tokens + in.other_tokens) * (in.layers - check));
}

double recompute_load_s(const recompute_inputs& in, double r) {
  if (in.document_tokens <= 0) return 0;
  const int check = check_of(in);
  const double rows = in.document_tokens * ((check > 0 ? 1 : 0) + (1 - r) * (in.layers - check));
  return in.load_latency_s + rows * in.kv_bytes_per_token_layer / in.load_bytes_per_s;
}

double recompute_estimate_s(const recompute_inputs& in, double r) {
  const double compute = recompute_compute_s(in, r);
  return std::max(compute, recompute_load_s(in, r) + in.tail_share * compute);
}

namespace {

struct split_parts {
  double compute_s = 0, rest_compute_s = 0, load_s = 0, load_bytes = 0;
};

split_parts split_of(const recompute_inputs& in, double front, double r) {
  const int check = check_of(in);
  const double per = in.token_layer_s / in.compute_share;
  const double front_per = (in.front_token_layer_s > 0 ? in.front_token_layer_s : in.token_layer_s) / in.compute_share;
  recompute_inputs rest = in;
  rest.document_tokens = (1 - front) * in.document_tokens;
  split_parts s;
  // The rest's own compute: check layers over its tokens and the other
  // tokens, the selected rows and the other tokens above them.
  s.rest_compute_s = per * ((rest.document_tokens + in.other_tokens) * check +
                            (r * rest.document_tokens + in.other_tokens) * (in.layers - check));
  s.compute_s = front_per * front * in.document_tokens * in.layers + s.rest_compute_s;
  if (rest.document_tokens > 0) {
    s.load_s = recompute_load_s(rest, r);
    s.load_bytes =
        rest.document_tokens * ((check > 0 ? 1 : 0) + (1 - r) * (in.layers - check)) * in.kv_bytes_per_token_layer;
  }
  return s;
}

}  // namespace

double recompute_split_estimate_s(const recompute_inputs& in, double front, double r) {
  const auto s = split_of(in, front, r);
  return std::max(s.compute_s, s.load_s + in.tail_share * s.rest_compute_s);
}

recompute_plan choose_recompute_ratio(const recompute_inputs& in) {
  auto bad = [](const std::string& what) { throw error(errc::invalid_argument, "recompute ratio: " + what); };
  if (in.layers <= 0) bad("layers = " + std::to_string(in.layers));
  if (in.document_tokens < 0 || in.other_tokens < 0) bad("negative token count");
  if (!(in.token_layer_s > 0)) bad("token_layer_s must be positive");
  if (!(in.compute_share > 0 && in.compute_share <= 1)) bad("compute_share outside (0, 1]");
  if (in.kv_bytes_per_token_layer < 0 || in.load_bytes_per_s < 0 || in.load_latency_s < 0) bad("negative rate");
  if (!(in.min_ratio >= 0 && in.min_ratio <= in.max_ratio && in.max_ratio <= 1)) bad("ratio bounds");
  if (!(in.min_speedup >= 1)) bad("min_speedup below 1");
  if (!(in.tail_share >= 0 && in.tail_share < 1)) bad("tail_share outside [0, 1)");
  if (in.front_token_layer_s < 0) bad("negative front_token_layer_s");
  if (in.fixed_s < 0 || in.full_recompute_s < 0) bad("negative fixed_s or full_recompute_s");

  recompute_plan p;
  // Computing every token of every layer: the plan's alternative.
  const double prefill_per = in.front_token_layer_s > 0 ? in.front_token_layer_s : in.token_layer_s;
  p.full_recompute_s = in.full_recompute_s > 0
                           ? in.full_recompute_s
                           : prefill_per / in.compute_share * (in.document_tokens + in.other_tokens) * in.layers;
  const auto full = [&] {
    p.ratio = 1;
    p.front_share = 0;
    p.full_recompute = true;
    p.compute_s = p.estimate_s = p.full_recompute_s;
    p.load_s = p.load_bytes = 0;
    return p;
  };
  // Reuse needs a document and a tier to load it from.
  if (in.document_tokens <= 0 || in.load_bytes_per_s <= 0) return full();

  // compute(r) = a + b r rises, load(r) = c0 + c (1 - r) falls; the time is
  // max(compute, load + t compute) with t = tail_share, whose two sides meet
  // at (1 - t)(a + b r) = load(r): r_b. Below r_b the loads bound the time,
  // so recompute up to it is free.
  const double a = recompute_compute_s(in, 0);
  const double b = recompute_compute_s(in, 1) - a;
  const double load1 = recompute_load_s(in, 1);
  const double c = recompute_load_s(in, 0) - load1;
  const double keep = 1 - in.tail_share;
  const double balance = keep * b + c > 0 ? (load1 + c - keep * a) / (keep * b + c) : in.min_ratio;
  p.ratio = std::clamp(balance, in.min_ratio, in.max_ratio);
  p.compute_s = recompute_compute_s(in, p.ratio);
  p.load_s = recompute_load_s(in, p.ratio);
  p.estimate_s = recompute_estimate_s(in, p.ratio);
  const int check = check_of(in);
  p.load_bytes =
      in.document_tokens * ((check > 0 ? 1 : 0) + (1 - p.ratio) * (in.layers - check)) * in.kv_bytes_per_token_layer;
  if (in.split_front) {
    // The leading share in steps of 1/512: the estimate is piecewise
    // linear in it, a scan is exact enough and stays pure.
    double best_f = 0, best_s = recompute_split_estimate_s(in, 0, in.min_ratio);
    for (int i = 1; i < 512; ++i) {
      const double f = i / 512.0, t = recompute_split_estimate_s(in, f, in.min_ratio);
      if (t < best_s) best_f = f, best_s = t;
    }
    if (best_s < p.estimate_s) {
      const auto parts = split_of(in, best_f, in.min_ratio);
      p.front_share = best_f;
      p.ratio = in.min_ratio;
      p.estimate_s = best_s;
      p.compute_s = parts.compute_s;
      p.load_s = parts.load_s;
      p.load_bytes = parts.load_bytes;
    }
  }
  // The fixed cost of the reuse path counts here only: it is the same for
  // every reuse plan, so it cannot change which one is best.
  p.fixed_s = in.fixed_s;
  if ((p.estimate_s + in.fixed_s) * in.min_speedup >= p.full_recompute_s) return full();
  return p;
}

}  // namespace kvflow::policies
