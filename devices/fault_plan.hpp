#pragma once
// Fault injection for tests and soaks: a plan of faults that the tiers and
// actors consult at a few narrow points (a disk read, a disk write, a tier
// answering a load grant, a completion message). Never active by default: a
// plan exists only when a test builds one or KVFLOW_FAULTS names one.

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <random>
#include <string>

namespace kvflow::devices {

/// Which fault; each has a probability in the plan.
enum class fault : std::uint8_t {
  disk_read_error,       ///< a disk read completes with EIO
  disk_truncate,         ///< a chunk file is truncated between its open and its read
  disk_write_full,       ///< a chunk write fails with ENOSPC (the partial file is removed)
  tier_stall,            ///< a tier never answers a load grant (the request's deadline must end it)
  duplicate_completion,  ///< a completion message is sent twice, the copy after later ones
  count_,
};

/// A parsed plan: per fault, the probability that one occasion injects it.
/// Thread-safe; each roll is a draw from one seeded generator.
class fault_plan {
 public:
  /// Parses "name=p,name=p,...,seed=N" (names as in to_string(fault); p in
  /// [0, 1]). Throws kvflow::error(invalid_argument) naming a bad entry.
  static std::shared_ptr<fault_plan> parse(const std::string& spec);
  /// The plan of the environment variable KVFLOW_FAULTS, read once per call
  /// (callers read it once at start-up); null when unset or empty.
  static std::shared_ptr<fault_plan> from_env();

  /// True when this occasion of `f` is to fail (and counts it).
  bool roll(fault f);
  /// Faults of kind `f` injected so far.
  std::uint64_t injected(fault f) const;
  double probability(fault f) const { return p_[static_cast<std::size_t>(f)]; }
  void set(fault f, double p) { p_[static_cast<std::size_t>(f)] = p; }
  std::string describe() const;

 private:
  double p_[static_cast<std::size_t>(fault::count_)] = {};
  std::atomic<std::uint64_t> injected_[static_cast<std::size_t>(fault::count_)] = {};
  std::mutex m_;
  std::mt19937_64 rng_{1};
};

/// "disk_read_error", "disk_truncate", ...
const char* to_string(fault f);

}  // namespace kvflow::devices
