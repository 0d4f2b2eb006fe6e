#pragma once
// Runs a load test: arrivals (open-loop Poisson at a rate, a cap on requests
// in flight, or a trace's timestamps), a pool of client threads that grows
// to the number of requests in flight, sessions whose next turn waits for
// the previous answer, and a progress line on stderr.

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "apps/load/openai_client.hpp"
#include "apps/load/report.hpp"
#include "apps/load/scenario.hpp"
#include "apps/load/trace.hpp"

namespace kvflow::load {

/// Where requests come from. Called from several threads, never at once for
/// the same instance (the runner serializes calls).
class request_source {
 public:
  virtual ~request_source() = default;
  /// The request for `ctx`: new work when ctx.session is empty, else that
  /// session's next turn. nullopt: no more new work, or the session ends.
  virtual std::optional<scenario_request> next(const scenario_context& ctx) = 0;
  /// After each answer: seconds until the session's next turn, or nullopt
  /// when it has none.
  virtual std::optional<double> on_response(const scenario_context& ctx, const request_record& rec) = 0;
  /// When the next new request is due (seconds since the start) for sources
  /// with their own clock (traces); nullopt: the run's arrival process decides.
  virtual std::optional<double> next_arrival_s() { return std::nullopt; }
  /// True once a source with its own clock has nothing left.
  virtual bool exhausted() const { return false; }
};

/// A Lua scenario as a request source.
class scenario_source : public request_source {
 public:
  explicit scenario_source(const scenario_options& opt) : script_(opt) {}
  std::optional<scenario_request> next(const scenario_context& ctx) override { return script_.request(ctx); }
  std::optional<double> on_response(const scenario_context& ctx, const request_record& rec) override {
    return script_.response(ctx, rec);
  }

 private:
  lua_scenario script_;
};

struct trace_options {
  int block_tokens = 512;      ///< tokens per hash id (Mooncake's traces: 512)
  bool token_ids = false;      ///< prompts as token ids instead of words
  int vocab = 512;             ///< token ids from [1, vocab)
  double speedup = 1;          ///< timestamps are divided by this
  double scale = 1;            ///< input lengths and block size are multiplied by this (small models, CPUs)
  int max_output = 0;          ///< caps output_length; 0: no cap
  bool use_timestamps = true;  ///< false: the run's arrival process instead
  bool stream = true;
};

/// A mooncake trace replayed as recorded: /v1/completions, prompt rebuilt
/// from the hash ids, max_tokens = output_length. Throws invalid_argument on
/// a speedup or scale that is not positive.
class trace_source : public request_source {
 public:
  trace_source(std::vector<trace_entry> entries, const trace_options& opt);
  std::optional<scenario_request> next(const scenario_context& ctx) override;
  std::optional<double> on_response(const scenario_context&, const request_record&) override { return std::nullopt; }
  std::optional<double> next_arrival_s() override;
  bool exhausted() const override { return next_ >= entries_.size(); }

 private:
  std::vector<trace_entry> entries_;
  trace_options opt_;
  std::size_t next_ = 0;
};

struct run_options {
  double request_rate = 0;         ///< Poisson arrivals per second; 0: no rate (as fast as the cap allows)
  int concurrency = 0;             ///< at most this many in flight; 0: no cap
  std::size_t num_requests = 0;    ///< stop sending after this many; 0: no limit
  double duration_s = 0;           ///< stop sending after this long; 0: no limit
  std::uint64_t seed = 1;          ///< the Poisson arrivals' seed
  bool progress = true;            ///< a progress line on stderr
  std::size_t max_threads = 4096;  ///< refuses to grow the client pool past this
  /// When set and true, nothing more is sent and the run ends once the
  /// requests in flight are answered (Ctrl-C); polled every 100 ms.
  const std::atomic<bool>* stop = nullptr;
};

struct run_result {
  std::vector<request_record> records;  ///< in the order they were sent
  double duration_s = 0;                ///< first send to last answer
};

/// Runs until the limits are reached or the source has no more work, then
/// waits for the requests in flight. Failed requests are records with
/// ok = false. Throws kvflow::error when the source fails (a script error),
/// after the requests in flight have finished.
run_result run_load(request_source& source, const endpoint_config& endpoint, const run_options& opt);

/// The progress line: "[#####.....]  42/100  ok 40  failed 2  in flight 8  12.3 s".
/// total 0: unknown (a bar only when a duration is set: fraction of it elapsed).
std::string progress_line(std::size_t done, std::size_t failed, std::size_t in_flight, std::size_t total,
                          double elapsed_s, double duration_s, int width);

}  // namespace kvflow::load
