#include "apps/bench_trace.hpp"

#include <algorithm>
#include <utility>

namespace kvflow::app {

using json = nlohmann::json;

json chrome_trace(const trace_facts& f, const restore_run& run) {
  auto range = [](const char* what, std::uint32_t b, std::uint32_t e) {
    return std::string(what) + std::to_string(b) + (e - b > 1 ? "-" + std::to_string(e - 1) : "");
  };
  json events = json::array();
  json requests = json::array();
  events.push_back({{"name", "process_name"},
                    {"ph", "M"},
                    {"pid", 1},
                    {"args", {{"name", "kvflow " + f.preset + " tier " + f.tier + " " + f.policy}}}});
  for (std::size_t i = 0; i < run.reports.size(); ++i) {
    const auto& r = run.reports[i];
    double base_us = run.submit_s[i] * 1e6;
    int tid_c = 2 * static_cast<int>(i), tid_l = tid_c + 1;
    for (int k = 0; k < 2; ++k) {
      int tid = k ? tid_l : tid_c;
      std::string name =
          "req " + std::to_string(i) + " (" + std::to_string(r.prompt_tokens) + " tok) " + (k ? "load" : "compute");
      events.push_back({{"name", "thread_name"}, {"ph", "M"}, {"pid", 1}, {"tid", tid}, {"args", {{"name", name}}}});
      events.push_back(
          {{"name", "thread_sort_index"}, {"ph", "M"}, {"pid", 1}, {"tid", tid}, {"args", {{"sort_index", tid}}}});
    }
    // The meeting point: the highest computed cell inside the cached
    // prefix, chunk-major; loads took the cells above it.
    bool met = false;
    std::uint32_t meet_chunk = 0, meet_layer = 0;
    for (auto& s : r.spans) {
      std::string rect = range("c", s.chunk_begin, s.chunk_end) + " " + range("l", s.layer_begin, s.layer_end);
      events.push_back({{"name", (s.compute ? "compute " : "load " + s.source + " ") + rect},
                        {"cat", s.compute ? "compute" : "load"},
                        {"ph", "X"},
                        {"pid", 1},
                        {"tid", s.compute ? tid_c : tid_l},
                        {"ts", base_us + s.start_s * 1e6},
                        {"dur", std::max(0.0, (s.end_s - s.start_s) * 1e6)},
                        {"args",
                         {{"request", i},
                          {"source", s.source},
                          {"chunk_begin", s.chunk_begin},
                          {"chunk_end", s.chunk_end},
                          {"layer_begin", s.layer_begin},
                          {"layer_end", s.layer_end}}}});
      if (s.compute && s.chunk_begin < r.cached_chunks) {
        std::uint32_t c = std::min(s.chunk_end, r.cached_chunks) - 1, l = s.layer_end - 1;
        if (!met || std::make_pair(c, l) > std::make_pair(meet_chunk, meet_layer)) {
          meet_chunk = c;
          meet_layer = l;
        }
        met = true;
      }
    }
    json meet = nullptr;
    if (met) {
      double at = 0;
      for (auto& s : r.spans)
        if (s.chunk_begin <= meet_chunk && meet_chunk < s.chunk_end) at = std::max(at, s.end_s);
      meet = {{"chunk", meet_chunk}, {"layer", meet_layer}, {"at_s", at}};
      events.push_back({{"name", "meet c" + std::to_string(meet_chunk) + " l" + std::to_string(meet_layer)},
                        {"cat", "meet"},
                        {"ph", "i"},
                        {"s", "t"},
                        {"pid", 1},
                        {"tid", tid_c},
                        {"ts", base_us + at * 1e6},
                        {"args", {{"request", i}, {"chunk", meet_chunk}, {"layer", meet_layer}}}});
    }
    events.push_back({{"name", "first token"},
                      {"cat", "ttft"},
                      {"ph", "i"},
                      {"s", "t"},
                      {"pid", 1},
                      {"tid", tid_c},
                      {"ts", base_us + r.ttft_s * 1e6},
                      {"args", {{"request", i}, {"ttft_s", r.ttft_s}}}});
    requests.push_back({{"id", i},
                        {"request_id", r.request_id},
                        {"prompt_tokens", r.prompt_tokens},
                        {"chunks", r.chunks},
                        {"cached_chunks", r.cached_chunks},
                        {"cells_computed", r.cells_computed},
                        {"cells_loaded", r.cells_loaded},
                        {"ttft_s", r.ttft_s},
                        {"submit_s", run.submit_s[i]},
                        {"meet", meet}});
  }
  return {{"traceEvents", events},
          {"displayTimeUnit", "ms"},
          {"kvflow",
           {{"model", f.preset},
            {"context_tokens", f.context_tokens},
            {"tier", f.tier},
            {"policy", f.policy},
            {"batch", run.reports.size()},
            {"layers", f.layers},
            {"chunk_tokens", f.chunk_tokens},
            {"suffix_tokens", f.suffix_tokens},
            {"device", f.device},
            {"requests", requests}}}};
}

}  // namespace kvflow::app
