#pragma once
// kvflow bench's timelines: one restore of a batch in the Chrome trace event
// format (Perfetto and chrome://tracing open it).

#include <cstddef>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "actors/runtime.hpp"

namespace kvflow::app {

// One restore of a prompt list: the reports and each submit's offset from
// the first submit, in seconds.
struct restore_run {
  std::vector<restore_report> reports;
  std::vector<double> submit_s;
  std::uint64_t wire_raw_bytes = 0, wire_bytes = 0;  ///< the remote tier's fetches during the run
};

/// What a trace says about the restore it shows.
struct trace_facts {
  std::string preset, tier, policy, device;
  int context_tokens = 0, layers = 0, chunk_tokens = 0, suffix_tokens = 0;
};

/// The trace of `run` (its reports traced: submit_options::trace): one
/// complete event per grant, compute on thread 2i and loads on 2i+1 of
/// request i, times in microseconds from the batch's first submit; an
/// instant event where compute and loads met in each request's cached prefix
/// and one at its first token; "kvflow" holds `f` and a summary per request.
nlohmann::json chrome_trace(const trace_facts& f, const restore_run& run);

}  // namespace kvflow::app
