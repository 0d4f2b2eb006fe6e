#pragma once
// The request actor: one per request. Finds which chunks of its prompt the
// tiers hold, registers with the scheduler, carries out the grants it gets
// (compute on the gpu actor, loads on tier actors), then takes the first
// token, stores the prompt's new chunks and decodes.

#include <chrono>
#include <exception>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <unordered_map>
#include <vector>

#include <caf/actor.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/stateful_actor.hpp>

#include "actors/runtime.hpp"
#include "actors/workspace.hpp"
#include "devices/fault_plan.hpp"
#include "messages/types.hpp"

namespace kvflow {

/// A layer-pipeline stage as a request sees it: its layers, its actor
/// (stage_actor) and its own tier links.
struct stage_route {
  std::uint32_t layer_begin = 0, layer_end = 0;
  caf::actor actor;
  std::vector<std::pair<msg::tier, caf::actor>> tiers;  ///< loads of its layers; empty: request_env::tiers
};

/// The actors a request works with. Tiers are listed fastest first; a
/// chunk found in several is loaded from the first.
struct request_env {
  caf::actor scheduler;
  caf::actor gpu;
  std::vector<std::pair<msg::tier, caf::actor>> tiers;
  std::chrono::milliseconds step_timeout{600000};  ///< one grant's (one transfer's) deadline
  /// Injected faults (tests and soaks; null: none): duplicate_completion
  /// sends a cellDone to the scheduler twice, the copy after later ones.
  std::shared_ptr<devices::fault_plan> faults;
  /// Holds the requests' deadline timers (deadline_watchdog); null: each
  /// request keeps its own, which keeps its actor's memory until it fires.
  caf::actor watchdog;
  /// Layer-pipeline stages in layer order; empty: the gpu actor computes
  /// every layer. With stages, compute grants enter at the first stage,
  /// each stage loads its own layers of a load grant over its own links, and the
  /// first token comes from the last stage (decode stays on the gpu actor).
  std::vector<stage_route> stages;
};

using report_callback = std::function<void(std::exception_ptr, restore_report)>;

struct request_params {
  std::string policy;
  submit_options opts;
  std::chrono::steady_clock::time_point submitted;
  report_callback done;
  std::function<std::string(const std::vector<std::int32_t>&)> detokenize;  ///< may be empty
  std::vector<std::int32_t> stop_tokens;                                    ///< end decoding early
  /// The whole request's deadline, from `submitted`: past it the request
  /// fails with deadline_exceeded (restore, first token and decode alike).
  std::chrono::milliseconds deadline{600000};
};

struct request_state {
  request_env env;
  workspace_ptr ws;
  request_params params;
  restore_report report;
  std::uint64_t cells_total = 0;
  std::uint64_t cells_done = 0;
  /// The fastest tier holding each full prompt chunk; nullopt: none does.
  std::vector<std::optional<msg::tier>> chunk_tier;
  std::vector<std::uint16_t> chunk_link;  ///< link of the tier holding each chunk (0: its only one)
  bool finished = false;
  static inline const char* name = "kvflow.request";
};

struct watchdog_state {
  using clock_type = std::chrono::steady_clock;
  struct entry {
    caf::actor request;
    std::multimap<clock_type::time_point, std::uint64_t>::iterator at;  // in `due`
  };
  std::unordered_map<std::uint64_t, entry> waiting;          // requests by actor id
  std::multimap<clock_type::time_point, std::uint64_t> due;  // ids by deadline
  std::multiset<clock_type::time_point> armed;               // CAF timers in flight
  static inline const char* name = "kvflow.deadline_watchdog";
};

/// Keeps the requests' deadlines: (deadline_atom, id, actor, ms) registers
/// request actor `id` for `ms` from now, (done_atom, id) forgets it, and a
/// deadline that comes first is sent to the request as deadline_atom.
/// A request done long before its deadline frees everything it held at
/// once: the watchdog keeps one CAF timer for its earliest deadline, not
/// one per request (a timer, with its message, stays in CAF's clock until
/// it fires: one per request kept about 220 bytes per request for the
/// whole request_timeout_s, the soak's residual growth). (stats_atom)
/// answers (waiting requests, timers in flight), for tests.
/// `expected_requests` sizes its table up front. (It also keeps the spawn
/// off CAF 0.17's argument-less path, whose empty argument tuple UBSan
/// reports as a reference bound to a null pointer.)
caf::behavior deadline_watchdog(caf::stateful_actor<watchdog_state>* self, std::size_t expected_requests);

/// Runs one request from lookup to its report. The callback is called
/// exactly once, with an exception on failure (a refused grant, a timeout,
/// a vanished actor); the actor then quits.
caf::behavior request_actor(caf::stateful_actor<request_state>* self, request_env env, workspace_ptr ws,
                            request_params params);

}  // namespace kvflow
