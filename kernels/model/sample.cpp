#include <algorithm>
#include <cmath>
#include <numeric>
#include <string>

#include "kernels/model/engine.hpp"
#include "messages/error.hpp"
#include "messages/mix.hpp"

namespace kvflow::model {
namespace {

// Uniform in [0, 1) from (seed, step) alone: a step's draw never depends on
// earlier steps, so a resumed or replayed request draws the same.
double uniform(std::uint64_t seed, std::uint64_t step) {
  std::uint64_t x = splitmix64(splitmix64(seed) ^ splitmix64(step ^ 0x6a09e667f3bcc909ull));
  return static_cast<double>(x >> 11) * (1.0 / 9007199254740992.0);
}

}  // namespace

std::int32_t sample(const std::vector<float>& logits, const sampling& s, std::uint64_t step) {
  if (logits.empty()) throw error(errc::invalid_argument, "sample: empty logits");
  if (!(s.temperature >= 0.0f) || std::isinf(s.temperature)) {
    throw error(errc::invalid_argument, "sample: temperature " + std::to_string(s.temperature));
  }
  if (std::isnan(s.top_p)) throw error(errc::invalid_argument, "sample: top_p is NaN");
  // Greedy: the first index of the largest logit; NaN never wins.
  int best = -1;
  for (std::size_t i = 0; i < logits.size(); ++i) {
    if (std::isnan(logits[i])) continue;
    if (best < 0 || logits[i] > logits[best]) best = static_cast<int>(i);
  }
  if (best < 0) throw error(errc::invalid_argument, "sample: every logit is NaN");
  if (s.temperature == 0.0f || s.top_p <= 0.0f || (std::isinf(logits[best]) && logits[best] > 0)) return best;

  // Softmax of logits / temperature in double; -inf and NaN get no mass.
  const double t = s.temperature;
  const double top = logits[best] / t;
  std::vector<std::int32_t> ids;
  std::vector<double> p(logits.size(), 0.0);
  double total = 0.0;
  for (std::size_t i = 0; i < logits.size(); ++i) {
    float l = logits[i];
    if (std::isnan(l) || std::isinf(l)) continue;
    p[i] = std::exp(l / t - top);
    if (p[i] > 0.0) {
      total += p[i];
      ids.push_back(static_cast<std::int32_t>(i));
    }
  }
  if (ids.empty()) return best;
  // Nucleus: the most probable tokens (ties: lower id first) until their mass
  // reaches top_p; always at least one.
  std::sort(ids.begin(), ids.end(),
            [&](std::int32_t a, std::int32_t b) { return p[a] > p[b] || (p[a] == p[b] && a < b); });
  std::size_t keep = ids.size();
  if (s.top_p < 1.0f) {
    double need = static_cast<double>(s.top_p) * total, mass = 0.0;
    for (std::size_t i = 0; i < ids.size(); ++i) {
      mass += p[ids[i]];
      if (mass >= need) {
        keep = i + 1;
        break;
      }
    }
  }
  double kept = 0.0;
  for (std::size_t i = 0; i < keep; ++i) kept += p[ids[i]];
  double u = uniform(s.seed, step) * kept, acc = 0.0;
  for (std::size_t i = 0; i < keep; ++i) {
    acc += p[ids[i]];
    if (u < acc) return ids[i];
  }
  return ids[keep - 1];
}

}  // namespace kvflow::model

namespace kvflow::model {

void engine::check_fused(const std::vector<chunk_job>& jobs) {
  for (std::size_t i = 1; i < jobs.size(); ++i)
    if (jobs[i].layer_begin != jobs[0].layer_begin || jobs[i].layer_end != jobs[0].layer_end)
      throw error(errc::invalid_argument, "engine::run_fused: job " + std::to_string(i) + " has layers [" +
                                              std::to_string(jobs[i].layer_begin) + ", " +
                                              std::to_string(jobs[i].layer_end) + "), job 0 has [" +
                                              std::to_string(jobs[0].layer_begin) + ", " +
                                              std::to_string(jobs[0].layer_end) + ")");
}

}  // namespace kvflow::model
