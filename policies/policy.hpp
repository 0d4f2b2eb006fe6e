#pragma once
// Restore policies: each scheduler tick, the batch state and the cost model
// in, the grants to send out. Pure: no actors, no I/O, no clocks.

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "messages/types.hpp"
#include "policies/batch_state.hpp"
#include "policies/cost_model.hpp"

namespace kvflow::policies {

/// The restore policies, in the order policy_names() lists them.
/// bidirectional is per-request Cake with requests taking turns (round
/// robin); bidirectional_fcfs is the same served first come, first served.
enum class policy_kind : std::uint8_t {
  compute_only,
  load_only,
  bidirectional,
  two_pointer,
  oracle,
  bidirectional_fcfs
};

/// Name of a policy in flags, messages, logs and results ("two_pointer", ...).
const char* to_string(policy_kind kind);

/// The policy called `name`; nullopt when no policy is.
std::optional<policy_kind> policy_from_name(const std::string& name);

struct policy_options {
  /// Compute in flight (two_pointer: in quarter chunks; bidirectional: in
  /// half chunks): small keeps the split adaptable and the GPU queue short for
  /// higher-priority requests; 2 keeps a second grant queued on the device
  /// while the first one's completion travels back through the actors.
  std::uint32_t lookahead_chunks = 2;
  /// two_pointer serves the request with the least estimated restore time
  /// left first, less this weight times the time it has waited: 0 is
  /// shortest-remaining-first (best mean TTFT, starves long prompts under a
  /// stream), 1 orders by estimated finish counted from registration.
  double age_weight = 0.5;
  /// Loads in flight per link, in chunks' bytes (a granted load is never
  /// revoked, so this is how much a wrong rate estimate can commit).
  std::uint32_t load_queue_chunks = 2;
  /// two_pointer loads only where the plan expects that to shorten the
  /// restore by at least this share: loads commit cells to a link, and on a
  /// restore of tens of milliseconds the plan's own error (grant latencies,
  /// suffix rows waiting for their layer) is of that order.
  double min_load_gain = 0.05;
  /// Largest load grant; 0: one chunk's bytes.
  std::uint64_t max_load_grant_bytes = 0;
  /// The oracle's costs: the true per-cell line and bandwidths of the run.
  std::optional<cost_model> truth;
};

/// Where a request's compute and load meet in its cached prefix, in
/// chunk-major order: chunks before `chunk` are computed, chunk `chunk`
/// computes layers [0, layer) and loads the rest, later cached chunks load.
struct split_point {
  std::uint32_t chunk = 0;
  std::uint32_t layer = 0;
};

/// A restore policy. Not thread-safe; the scheduler actor owns it and calls
/// decide() on every tick (after a registration, a completion or a rate
/// change).
class policy {
 public:
  virtual ~policy() = default;
  virtual const char* name() const = 0;

  /// Grants to send now, for any requests of `batch`. Every grant returned
  /// has been applied to `batch` (cells marked granted, counted in flight,
  /// grant_id set), so no cap of batch.limits() is exceeded and every
  /// compute grant's inputs are computed, compute-granted earlier for the
  /// same request (the GPU runs a request's compute grants in order) or
  /// loaded. Compute grants run chunk by chunk, each chunk's layer range
  /// upward. May return nothing when caps are full or all is granted.
  virtual std::vector<msg::grant> decide(batch_state& batch, const cost_model& costs) = 0;

  /// The split a planning policy intends for a request now (two_pointer,
  /// oracle); nullopt for the others or an unknown request.
  virtual std::optional<split_point> planned_split(std::uint64_t request_id) const {
    (void)request_id;
    return std::nullopt;
  }
};

/// Names make_policy knows, in policy_kind's order.
const std::vector<std::string>& policy_names();

/// A policy of `kind`; the oracle needs opts.truth: throws
/// kvflow::error(invalid_argument) without it.
std::unique_ptr<policy> make_policy(policy_kind kind, policy_options opts = {});

/// The same by name; throws kvflow::error(not_found) listing the known names.
std::unique_ptr<policy> make_policy(const std::string& name, policy_options opts = {});

}  // namespace kvflow::policies
