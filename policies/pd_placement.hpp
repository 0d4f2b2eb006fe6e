#pragma once
// Load-aware prefill/decode placement (FlowKV): which instance prefills a
// request and which decodes it, from each instance's queue, measured
// utilisation and the prefix it already caches; and when an instance should
// change role because prefill and decode load stayed imbalanced. Pure: the
// caller measures, passes the time in, and carries out the decisions.

#include <cstddef>
#include <cstdint>
#include <optional>
#include <vector>

namespace kvflow::policies {

enum class pd_role : std::uint8_t { prefill, decode };

/// What an instance reports about itself.
struct pd_instance {
  pd_role role = pd_role::prefill;
  std::uint64_t queued_prefill_tokens = 0;  ///< prompt tokens admitted and not yet prefilled
  std::uint32_t active_decodes = 0;         ///< requests in its decode batch
  std::uint32_t max_decodes = 64;           ///< its decode batch's capacity (> 0)
  double utilisation = 0;                   ///< measured busy share of the device, [0, 1]
  bool up = true;
};

/// Rates the placement weighs, measured by the caller (seconds).
struct pd_costs {
  double prefill_s_per_token = 1e-4;   ///< compute of one prompt token on one instance
  double transfer_s_per_token = 1e-5;  ///< moving one token's KV between two instances
  /// Seconds one more active decode adds to a request's time on a decode
  /// instance (a fuller batch makes each step slower).
  double decode_s_per_active = 1e-3;
};

/// One request to place.
struct pd_request {
  std::uint64_t prompt_tokens = 0;
  /// Prompt tokens whose KV each instance already holds (prefix cache),
  /// indexed like the instances; empty: none anywhere.
  std::vector<std::uint64_t> cached_tokens;
};

struct pd_choice {
  std::size_t prefill = 0;
  std::size_t decode = 0;
  double prefill_s = 0;   ///< estimated wait + compute on the prefill instance
  double transfer_s = 0;  ///< KV move to the decode instance (0 when the same)
};

/// Picks the prefill instance with the smallest estimated time to first
/// token: its queue plus the prompt's uncached tokens, slowed by its
/// utilisation; and the decode instance with the smallest estimated cost:
/// its batch's load plus the KV transfer (none when it is the prefill
/// instance itself). Only instances of the matching role that are up are
/// candidates; where no instance of a role is up, any instance that is up
/// takes it. Returns nullopt when none is up. Ties go to the lower index.
std::optional<pd_choice> place(const std::vector<pd_instance>& instances, const pd_request& r, const pd_costs& costs);

/// When roles change.
struct pd_rebalance_options {
  /// One role's pressure must exceed the other's by this factor...
  double imbalance_ratio = 2.0;
  /// ...and be at least this (a lightly loaded system keeps its roles)...
  double min_pressure = 0.5;
  /// ...for this long without a break, before an instance switches.
  double hold_s = 2.0;
  /// After a switch, no other switch for this long (the new role's load
  /// must show first).
  double cooldown_s = 2.0;
  /// Prefill pressure 1 means this many seconds of queued prefill work per
  /// prefill instance.
  double prefill_target_s = 1.0;
};

struct pd_switch {
  std::size_t instance = 0;
  pd_role to = pd_role::prefill;
};

/// Pressure of each role: prefill as queued prefill seconds per prefill
/// instance over prefill_target_s; decode as the mean fill of the decode
/// batches. 1 is saturated for both.
struct pd_pressure {
  double prefill = 0;
  double decode = 0;
};
pd_pressure pressure(const std::vector<pd_instance>& instances, const pd_costs& costs, const pd_rebalance_options& o);

/// Hysteresis over observations: feed it the instances at times `now_s`
/// (non-decreasing); it answers a role switch once one role's pressure has
/// stayed above imbalance_ratio times the other's (and above min_pressure)
/// for hold_s, never leaving a role with no instance. The instance that
/// switches is the least loaded of the relieved role (fewest active
/// decodes, or least queued prefill).
class pd_rebalancer {
 public:
  explicit pd_rebalancer(pd_rebalance_options o = {}) : o_(o) {}
  std::optional<pd_switch> observe(double now_s, const std::vector<pd_instance>& instances, const pd_costs& costs);

 private:
  pd_rebalance_options o_;
  std::optional<pd_role> starved_;  // the role under pressure since since_s_
  double since_s_ = 0;
  double last_switch_s_ = -1e300;
};

}  // namespace kvflow::policies
