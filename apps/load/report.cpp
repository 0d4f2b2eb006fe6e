#include "apps/load/report.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <numeric>

#include "messages/error.hpp"

namespace kvflow::load {
namespace {

using json = nlohmann::json;

void put_summary(json& j, const char* name, const metric_summary& s) {
  std::string n(name);
  j["mean_" + n + "_ms"] = s.mean_ms;
  j["median_" + n + "_ms"] = s.median_ms;
  j["std_" + n + "_ms"] = s.std_ms;
  j["p90_" + n + "_ms"] = s.p90_ms;
  j["p99_" + n + "_ms"] = s.p99_ms;
}

std::string row(const std::string& label, const std::string& value) {
  char buf[128];
  std::snprintf(buf, sizeof buf, "%-40s %s\n", label.c_str(), value.c_str());
  return buf;
}

std::string num(double v, int digits = 2) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", digits, v);
  return buf;
}

std::string banner(const std::string& title, char fill) {
  std::size_t width = 50;
  if (title.empty()) return std::string(width, fill) + "\n";
  std::string t = " " + title + " ";
  std::size_t left = (width - std::min(width, t.size())) / 2;
  std::string out(left, fill);
  out += t;
  out.append(width - std::min(width, out.size()), fill);
  return out + "\n";
}

std::string summary_rows(const char* label, const metric_summary& s) {
  std::string l(label);
  return row("Mean " + l + " (ms):", num(s.mean_ms)) + row("Median " + l + " (ms):", num(s.median_ms)) +
         row("Std " + l + " (ms):", num(s.std_ms)) + row("P90 " + l + " (ms):", num(s.p90_ms)) +
         row("P99 " + l + " (ms):", num(s.p99_ms));
}

}  // namespace

slo_config parse_slos(const std::vector<std::string>& items) {
  slo_config c;
  for (const auto& item : items) {
    auto colon = item.find(':');
    if (colon == std::string::npos)
      throw error(errc::invalid_argument, "--goodput " + item + ": expected METRIC:MS such as ttft:500");
    auto name = item.substr(0, colon);
    auto value_text = item.substr(colon + 1);
    double value = 0;
    std::size_t used = 0;
    try {
      value = std::stod(value_text, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used != value_text.size() || used == 0 || !(value > 0) || !std::isfinite(value))
      throw error(errc::invalid_argument,
                  "--goodput " + item + ": '" + value_text + "' is not a positive number of ms");
    if (name == "ttft")
      c.ttft_ms = value;
    else if (name == "tpot")
      c.tpot_ms = value;
    else if (name == "e2el")
      c.e2el_ms = value;
    else
      throw error(errc::invalid_argument, "--goodput " + item + ": unknown metric '" + name + "' (ttft, tpot, e2el)");
  }
  return c;
}

double percentile(const std::vector<double>& sorted, double p) {
  if (sorted.empty()) throw error(errc::invalid_argument, "percentile of no values");
  if (!(p >= 0 && p <= 100))
    throw error(errc::invalid_argument, "percentile " + std::to_string(p) + " outside [0, 100]");
  double rank = p / 100.0 * static_cast<double>(sorted.size() - 1);
  auto lo = static_cast<std::size_t>(std::floor(rank));
  auto hi = std::min(lo + 1, sorted.size() - 1);
  double frac = rank - static_cast<double>(lo);
  return sorted[lo] + (sorted[hi] - sorted[lo]) * frac;
}

metric_summary summarize_seconds(std::vector<double> values) {
  metric_summary s;
  if (values.empty()) return s;
  for (auto& v : values) v *= 1000.0;
  std::sort(values.begin(), values.end());
  double n = static_cast<double>(values.size());
  s.mean_ms = std::accumulate(values.begin(), values.end(), 0.0) / n;
  double sq = 0;
  for (double v : values) sq += (v - s.mean_ms) * (v - s.mean_ms);
  s.std_ms = std::sqrt(sq / n);
  s.median_ms = percentile(values, 50);
  s.p90_ms = percentile(values, 90);
  s.p99_ms = percentile(values, 99);
  return s;
}

load_report make_report(const std::vector<request_record>& records, double duration_s, const slo_config& slo) {
  load_report r;
  r.duration_s = duration_s;
  std::vector<double> ttfts, tpots, itls, e2els;
  bool use_slo = slo.ttft_ms || slo.tpot_ms || slo.e2el_ms;
  std::map<int, std::vector<const request_record*>> turns;
  for (const auto& rec : records) {
    if (!rec.ok) {
      ++r.failed;
      continue;
    }
    ++r.completed;
    r.total_input_tokens += rec.prompt_tokens;
    r.total_output_tokens += rec.output_tokens;
    double tpot = 0;  // vLLM counts a single-token answer as TPOT 0 for goodput only
    if (rec.output_tokens > 1) {
      tpot = (rec.e2el_s - rec.ttft_s) / static_cast<double>(rec.output_tokens - 1);
      tpots.push_back(tpot);
    }
    ttfts.push_back(rec.ttft_s);
    e2els.push_back(rec.e2el_s);
    itls.insert(itls.end(), rec.itl_s.begin(), rec.itl_s.end());
    turns[rec.turn].push_back(&rec);
    if (use_slo) {
      bool good = (!slo.ttft_ms || rec.ttft_s * 1000.0 <= *slo.ttft_ms) &&
                  (!slo.tpot_ms || tpot * 1000.0 <= *slo.tpot_ms) &&
                  (!slo.e2el_ms || rec.e2el_s * 1000.0 <= *slo.e2el_ms);
      if (good) ++r.good_requests;
    }
  }
  if (duration_s > 0) {
    r.request_throughput = static_cast<double>(r.completed) / duration_s;
    r.output_throughput = static_cast<double>(r.total_output_tokens) / duration_s;
    r.total_token_throughput = static_cast<double>(r.total_input_tokens + r.total_output_tokens) / duration_s;
  }
  if (use_slo) r.request_goodput = duration_s > 0 ? static_cast<double>(r.good_requests) / duration_s : 0.0;
  r.ttft = summarize_seconds(ttfts);
  r.tpot = summarize_seconds(tpots);
  r.itl = summarize_seconds(itls);
  r.e2el = summarize_seconds(e2els);
  for (const auto& [turn, recs] : turns) {
    turn_summary t;
    t.turn = turn;
    t.completed = recs.size();
    std::vector<double> tt;
    double e2el = 0, prompt = 0;
    for (auto* rec : recs) {
      tt.push_back(rec->ttft_s);
      e2el += rec->e2el_s;
      prompt += static_cast<double>(rec->prompt_tokens);
    }
    auto s = summarize_seconds(tt);
    t.mean_ttft_ms = s.mean_ms;
    t.median_ttft_ms = s.median_ms;
    t.mean_e2el_ms = e2el * 1000.0 / static_cast<double>(recs.size());
    t.mean_prompt_tokens = prompt / static_cast<double>(recs.size());
    r.by_turn.push_back(t);
  }
  return r;
}

json report_json(const load_report& r, const std::vector<request_record>& records, const json& meta) {
  json j = meta.is_object() ? meta : json::object();
  j["duration"] = r.duration_s;
  j["completed"] = r.completed;
  j["failed"] = r.failed;
  j["total_input_tokens"] = r.total_input_tokens;
  j["total_output_tokens"] = r.total_output_tokens;
  j["request_throughput"] = r.request_throughput;
  j["request_goodput"] = r.request_goodput ? json(*r.request_goodput) : json(nullptr);
  j["good_requests"] = r.good_requests;
  j["output_throughput"] = r.output_throughput;
  j["total_token_throughput"] = r.total_token_throughput;
  put_summary(j, "ttft", r.ttft);
  put_summary(j, "tpot", r.tpot);
  put_summary(j, "itl", r.itl);
  put_summary(j, "e2el", r.e2el);
  json turns = json::array();
  for (const auto& t : r.by_turn)
    turns.push_back({{"turn", t.turn},
                     {"completed", t.completed},
                     {"mean_ttft_ms", t.mean_ttft_ms},
                     {"median_ttft_ms", t.median_ttft_ms},
                     {"mean_e2el_ms", t.mean_e2el_ms},
                     {"mean_prompt_tokens", t.mean_prompt_tokens}});
  j["by_turn"] = turns;
  json reqs = json::array();
  for (const auto& rec : records) {
    json itl = json::array();
    for (double v : rec.itl_s) itl.push_back(v * 1000.0);
    double tpot = rec.ok && rec.output_tokens > 1
                      ? (rec.e2el_s - rec.ttft_s) * 1000.0 / static_cast<double>(rec.output_tokens - 1)
                      : 0.0;
    reqs.push_back({{"index", rec.index},
                    {"session", rec.session.empty() ? json(nullptr) : json(rec.session)},
                    {"turn", rec.turn},
                    {"endpoint", rec.endpoint},
                    {"ok", rec.ok},
                    {"status", rec.status},
                    {"error", rec.error},
                    {"start_ms", rec.start_s * 1000.0},
                    {"ttft_ms", rec.ttft_s * 1000.0},
                    {"tpot_ms", tpot},
                    {"e2el_ms", rec.e2el_s * 1000.0},
                    {"itl_ms", itl},
                    {"prompt_tokens", rec.prompt_tokens},
                    {"output_tokens", rec.output_tokens}});
  }
  j["requests"] = reqs;
  return j;
}

std::string report_table(const load_report& r) {
  std::string out = banner("Serving Benchmark Result", '=');
  out += row("Successful requests:", std::to_string(r.completed));
  out += row("Failed requests:", std::to_string(r.failed));
  out += row("Benchmark duration (s):", num(r.duration_s));
  out += row("Total input tokens:", std::to_string(r.total_input_tokens));
  out += row("Total generated tokens:", std::to_string(r.total_output_tokens));
  out += row("Request throughput (req/s):", num(r.request_throughput));
  if (r.request_goodput) out += row("Request goodput (req/s):", num(*r.request_goodput));
  out += row("Output token throughput (tok/s):", num(r.output_throughput));
  out += row("Total Token throughput (tok/s):", num(r.total_token_throughput));
  out += banner("Time to First Token", '-');
  out += summary_rows("TTFT", r.ttft);
  out += banner("Time per Output Token (excl. 1st token)", '-');
  out += summary_rows("TPOT", r.tpot);
  out += banner("Inter-token Latency", '-');
  out += summary_rows("ITL", r.itl);
  out += banner("End-to-end Latency", '-');
  out += summary_rows("E2EL", r.e2el);
  if (r.by_turn.size() > 1) {
    out += banner("TTFT by turn", '-');
    for (const auto& t : r.by_turn)
      out += row("Turn " + std::to_string(t.turn) + " (" + std::to_string(t.completed) + " req, " +
                     num(t.mean_prompt_tokens, 0) + " prompt tok):",
                 "mean " + num(t.mean_ttft_ms) + " ms, median " + num(t.median_ttft_ms) + " ms");
  }
  out += banner("", '=');
  return out;
}

}  // namespace kvflow::load
