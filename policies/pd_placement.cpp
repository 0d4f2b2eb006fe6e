#include "policies/pd_placement.hpp"

#include <algorithm>
#include <limits>

namespace kvflow::policies {
namespace {

bool any_up(const std::vector<pd_instance>& xs, pd_role role) {
  return std::any_of(xs.begin(), xs.end(), [&](const pd_instance& x) { return x.up && x.role == role; });
}

std::uint64_t cached_at(const pd_request& r, std::size_t i) {
  if (i >= r.cached_tokens.size()) return 0;
  return std::min(r.cached_tokens[i], r.prompt_tokens);
}

double prefill_estimate(const pd_instance& x, const pd_request& r, std::size_t i, const pd_costs& c) {
  const double work = static_cast<double>(x.queued_prefill_tokens + r.prompt_tokens - cached_at(r, i));
  // A busy device serves the queue slower: its share left is what we get.
  const double left = std::max(0.05, 1.0 - std::clamp(x.utilisation, 0.0, 1.0) * 0.5);
  return work * c.prefill_s_per_token / left;
}

double decode_estimate(const pd_instance& x, const pd_costs& c) {
  const double fill = static_cast<double>(x.active_decodes) / std::max<std::uint32_t>(x.max_decodes, 1);
  // A full batch cannot take the request until one ends: make it a last resort.
  const double full = x.active_decodes >= x.max_decodes ? 1e6 : 0.0;
  return (x.active_decodes + 1) * c.decode_s_per_active * (1.0 + fill) + full;
}

}  // namespace

std::optional<pd_choice> place(const std::vector<pd_instance>& instances, const pd_request& r, const pd_costs& costs) {
  const bool prefill_role = any_up(instances, pd_role::prefill);
  const bool decode_role = any_up(instances, pd_role::decode);
  std::optional<pd_choice> best;
  double best_p = std::numeric_limits<double>::infinity();
  pd_choice choice;
  for (std::size_t i = 0; i < instances.size(); ++i) {
    const auto& x = instances[i];
    if (!x.up || (prefill_role && x.role != pd_role::prefill)) continue;
    const double p = prefill_estimate(x, r, i, costs);
    if (p < best_p) {
      best_p = p;
      choice.prefill = i;
      choice.prefill_s = p;
      best = choice;
    }
  }
  if (!best) return std::nullopt;
  double best_d = std::numeric_limits<double>::infinity();
  const double transfer = static_cast<double>(r.prompt_tokens) * costs.transfer_s_per_token;
  for (std::size_t i = 0; i < instances.size(); ++i) {
    const auto& x = instances[i];
    if (!x.up || (decode_role && x.role != pd_role::decode)) continue;
    const double t = i == best->prefill ? 0.0 : transfer;
    const double d = decode_estimate(x, costs) + t;
    if (d < best_d) {
      best_d = d;
      best->decode = i;
      best->transfer_s = t;
    }
  }
  return best;
}

pd_pressure pressure(const std::vector<pd_instance>& instances, const pd_costs& costs, const pd_rebalance_options& o) {
  double queued = 0, active = 0, capacity = 0;
  int prefillers = 0;
  for (const auto& x : instances) {
    if (!x.up) continue;
    // Queued prefill work counts wherever it waits (an instance that just
    // switched to decode still drains its queue); decode load counts on the
    // decode instances, whose batches it fills.
    queued += static_cast<double>(x.queued_prefill_tokens);
    if (x.role == pd_role::prefill) {
      ++prefillers;
    } else {
      active += x.active_decodes;
      capacity += std::max<std::uint32_t>(x.max_decodes, 1);
    }
  }
  pd_pressure p;
  p.prefill = prefillers == 0 ? (queued > 0 ? std::numeric_limits<double>::infinity() : 0.0)
                              : queued * costs.prefill_s_per_token / prefillers / std::max(o.prefill_target_s, 1e-9);
  p.decode = capacity == 0 ? (active > 0 ? std::numeric_limits<double>::infinity() : 0.0) : active / capacity;
  return p;
}

std::optional<pd_switch> pd_rebalancer::observe(double now_s, const std::vector<pd_instance>& instances,
                                                const pd_costs& costs) {
  const auto p = pressure(instances, costs, o_);
  std::optional<pd_role> starved;
  if (p.prefill >= o_.min_pressure && p.prefill > o_.imbalance_ratio * p.decode) starved = pd_role::prefill;
  if (p.decode >= o_.min_pressure && p.decode > o_.imbalance_ratio * p.prefill) starved = pd_role::decode;
  if (starved != starved_) {
    starved_ = starved;
    since_s_ = now_s;
  }
  if (!starved_ || now_s - since_s_ < o_.hold_s || now_s - last_switch_s_ < o_.cooldown_s) return std::nullopt;
  // The starved role takes an instance from the other one, which keeps at least one.
  const pd_role donor = *starved_ == pd_role::prefill ? pd_role::decode : pd_role::prefill;
  std::optional<std::size_t> pick;
  int donors = 0;
  for (std::size_t i = 0; i < instances.size(); ++i) {
    const auto& x = instances[i];
    if (!x.up || x.role != donor) continue;
    ++donors;
    auto load = [&](const pd_instance& y) {
      return donor == pd_role::decode ? static_cast<double>(y.active_decodes)
                                      : static_cast<double>(y.queued_prefill_tokens);
    };
    if (!pick || load(x) < load(instances[*pick])) pick = i;
  }
  if (!pick || donors < 2) return std::nullopt;
  last_switch_s_ = now_s;
  since_s_ = now_s;  // a further switch needs the imbalance to hold again
  return pd_switch{*pick, *starved_};
}

}  // namespace kvflow::policies
