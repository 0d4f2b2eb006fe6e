#pragma once
// The scheduler actor: the batch state, the caps and a policy object. Each
// tick (a registration, a completion or a rate sample) it asks the policy for
// grants and sends them to the request actors.

#include <deque>
#include <memory>
#include <string>
#include <unordered_map>

#include <caf/actor.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/stateful_actor.hpp>

#include "messages/codec.hpp"
#include "policies/batch_state.hpp"
#include "policies/cost_model.hpp"
#include "policies/policy.hpp"

namespace kvflow {

struct scheduler_state {
  policies::batch_state batch;
  policies::caps configured;   ///< caps as configured; load caps shrink to the window
  double load_window_s = 0.1;  ///< seconds of a link's rate that may be in flight
  /// A registration into an empty batch holds every link this long, so
  /// that requests submitted together are all known before any link is
  /// committed (compute starts at once). Counts windows, so that a late
  /// message of an earlier one is ignored.
  double admission_window_s = 0;
  std::uint64_t windows = 0;
  policies::cost_model costs;
  std::unique_ptr<policies::policy> active;
  std::string active_name;
  std::unordered_map<std::uint64_t, caf::actor> requests;
  struct waiting {
    msg::register_request reg;
    std::string policy;
    caf::actor who;
  };
  std::deque<waiting> queue;  ///< registrations for another policy than the active one
  std::uint64_t grants_sent = 0;
  /// Compute grants in flight: their request and when each was sent
  /// (now_ns), and when the GPU last finished one: the trips
  /// cost_model::observe_compute_trip learns.
  std::unordered_map<std::uint64_t, std::pair<std::uint64_t, std::uint64_t>> computing;
  std::uint64_t gpu_finished_ns = 0;
  static inline const char* name = "kvflow.scheduler";
};

/// Messages:
///   (frame register, string policy, actor request): adds a request (an empty
///       policy name means the default). Requests of one policy share a batch;
///       a registration for another policy waits until the batch drains.
///   frame cellDone | rateSample | progress{done}: updates the batch and the
///       cost model, then ticks.
///   (window_atom, uint64 window): the admission window `window` is over:
///       the links open, then a tick.
///   (stats_atom) -> (uint64 grants_sent, uint64 compute_samples)
///   (stats_atom, uint8 tier, uint16 link) -> (uint64 rate samples, double
///       bytes per second): what it learned of a tier (link 0) or one link
/// Grants go to request actors as frames; a registration the batch refuses
/// gets an error frame back.
/// `admission_window_s`: scheduler_state::admission_window_s (0: none).
caf::behavior scheduler_actor(caf::stateful_actor<scheduler_state>* self, std::string default_policy,
                              policies::caps caps, policies::cost_prior prior, double admission_window_s);

}  // namespace kvflow
