#pragma once
// What `kvflow load` reports, computed as vLLM's `bench serve` computes it
// (benchmark_serving.py's calculate_metrics): TTFT, TPOT, ITL and E2EL as
// mean, median, std (population) and percentiles (linear interpolation, as
// numpy's), request and token throughput, and goodput under SLOs. JSON keys
// are vLLM's (mean_ttft_ms, median_ttft_ms, std_ttft_ms, p99_ttft_ms, ...).

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace kvflow::load {

/// One request as sent and as answered. Times in seconds.
struct request_record {
  std::size_t index = 0;      ///< order in which it was sent
  std::string session;        ///< empty: not part of a session
  int turn = 0;               ///< 0 for a session's first request
  std::string endpoint;       ///< "chat" or "completions"
  bool ok = false;            ///< a 2xx answer read to its end
  int status = 0;             ///< HTTP status; 0 when none came back
  std::string error;          ///< why it failed; empty when ok
  double start_s = 0;         ///< sent at, since the run's start
  double ttft_s = 0;          ///< to the first content chunk (the whole answer when not streamed)
  double e2el_s = 0;          ///< to the end of the answer
  std::vector<double> itl_s;  ///< gaps between content chunks (streamed only)
  std::int64_t prompt_tokens = 0;
  std::int64_t output_tokens = 0;
  std::string text;                     ///< generated text (kept for scripts; not written to the report)
  std::vector<std::int32_t> token_ids;  ///< generated ids where the server sent them (for scripts too)
};

/// Service-level objectives in ms; a request is good when it meets all set.
struct slo_config {
  std::optional<double> ttft_ms, tpot_ms, e2el_ms;
};

/// Parses vLLM's --goodput form: "ttft:500", "tpot:50", "e2el:2000" (ms), one
/// per item. Throws kvflow::error(invalid_argument) on an unknown metric, a
/// missing colon or a value that is not a positive number.
slo_config parse_slos(const std::vector<std::string>& items);

/// mean, median, std, p90, p99 of one metric, in ms; all 0 when empty.
struct metric_summary {
  double mean_ms = 0, median_ms = 0, std_ms = 0, p90_ms = 0, p99_ms = 0;
};

/// numpy.percentile(values, p) with linear interpolation; `sorted` ascending.
/// Throws invalid_argument when empty or p is outside [0, 100].
double percentile(const std::vector<double>& sorted, double p);

/// Summary of values given in seconds.
metric_summary summarize_seconds(std::vector<double> values);

/// TTFT of the completed requests of one turn index.
struct turn_summary {
  int turn = 0;
  std::size_t completed = 0;
  double mean_ttft_ms = 0, median_ttft_ms = 0, mean_e2el_ms = 0;
  double mean_prompt_tokens = 0;
};

struct load_report {
  double duration_s = 0;
  std::size_t completed = 0, failed = 0;
  std::int64_t total_input_tokens = 0, total_output_tokens = 0;
  double request_throughput = 0, output_throughput = 0, total_token_throughput = 0;
  std::optional<double> request_goodput;  ///< set when SLOs were given
  std::size_t good_requests = 0;
  metric_summary ttft, tpot, itl, e2el;
  std::vector<turn_summary> by_turn;  ///< ascending turn; only turns with requests
};

/// The report of a run that lasted `duration_s`. TPOT of a request is
/// (e2el - ttft) / (output_tokens - 1) and counts only requests with more
/// than one output token; for goodput, those count as TPOT 0 (as vLLM).
/// Throughputs are 0 when duration_s <= 0.
load_report make_report(const std::vector<request_record>& records, double duration_s, const slo_config& slo);

/// The report as vLLM's JSON keys plus "failed", "good_requests", "by_turn"
/// and "requests" (one object per request: index, session, turn, endpoint,
/// ok, status, error, start_ms, ttft_ms, tpot_ms, e2el_ms, itl_ms,
/// prompt_tokens, output_tokens); `meta` keys are merged in first.
nlohmann::json report_json(const load_report& r, const std::vector<request_record>& records,
                           const nlohmann::json& meta);

/// The report as a fixed-width table like vLLM's, for stdout.
std::string report_table(const load_report& r);

}  // namespace kvflow::load
