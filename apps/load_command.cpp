// `kvflow load`: scripted load tests against any OpenAI-compatible endpoint.
// Requests come from a Lua scenario (apps/load/scenarios/) or a mooncake
// trace (apps/load/traces/); arrivals are Poisson at a rate, a fixed number
// in flight, or the trace's timestamps. Prints vLLM's `bench serve` table,
// writes the same keys as JSON (plus per-request records and TTFT by turn)
// and a PNG plot through apps/load/plot_load.py when matplotlib is there.

#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <sstream>

#include <nlohmann/json.hpp>

#include "apps/commands.hpp"
#include "apps/load/openai_client.hpp"
#include "apps/load/report.hpp"
#include "apps/load/runner.hpp"
#include "apps/load/scenario.hpp"
#include "apps/load/trace.hpp"
#include "messages/error.hpp"

#ifndef KVFLOW_LOAD_DIR
#define KVFLOW_LOAD_DIR "apps/load"
#endif

namespace kvflow::app {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

// Set by the first Ctrl-C: the run stops sending and reports what it has.
std::atomic<bool> interrupted{false};

extern "C" void on_interrupt(int) {
  interrupted.store(true);
  std::signal(SIGINT, SIG_DFL);  // a second Ctrl-C ends the process at once
}

struct load_options {
  std::string url = "http://127.0.0.1:8000";
  std::string api_key;
  std::string model;
  double timeout_s = 600;
  std::string scenario;
  std::string trace;
  std::vector<std::string> args;
  bool token_ids = false;
  int vocab = 512;
  int block_tokens = 512;
  double speedup = 1;
  double scale = 1;
  int max_output = 0;
  bool no_stream = false;
  bool ignore_eos = false;
  bool no_usage = false;
  bool keep_alive = false;
  double request_rate = 0;
  int concurrency = 0;
  std::size_t num_requests = 0;
  double duration_s = 0;
  std::uint64_t seed = 1;
  std::vector<std::string> goodput;
  std::string out;
  std::string plot;
  bool no_plot = false;
  bool no_progress = false;
  std::string label;
};

// A path as given, else a shipped file: NAME, NAME.lua or NAME.jsonl under
// apps/load/<folder>/ of the source tree this kvflow was built from.
std::string resolve(const std::string& given, const char* folder, const char* ext) {
  if (fs::exists(given)) return given;
  for (const auto& candidate :
       {fs::path(KVFLOW_LOAD_DIR) / folder / given, fs::path(KVFLOW_LOAD_DIR) / folder / (given + ext)})
    if (fs::exists(candidate)) return candidate.string();
  return given;  // the reader says it cannot be read
}

std::map<std::string, std::string> parse_args(const std::vector<std::string>& items) {
  std::map<std::string, std::string> out;
  for (const auto& item : items) {
    auto eq = item.find('=');
    if (eq == std::string::npos || eq == 0)
      throw error(errc::invalid_argument, "--arg " + item + ": expected KEY=VALUE");
    out[item.substr(0, eq)] = item.substr(eq + 1);
  }
  return out;
}

std::string iso_now() {
  std::time_t t = std::time(nullptr);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y%m%d-%H%M%S", std::gmtime(&t));
  return buf;
}

// Runs plot_load.py when python3 can import matplotlib; says why not otherwise.
void plot(const std::string& json_path, const std::string& png_path) {
  fs::path script = fs::path(KVFLOW_LOAD_DIR) / "plot_load.py";
  if (!fs::exists(script)) {
    std::cerr << "load: plot skipped: " << script.string() << " not found\n";
    return;
  }
  if (std::system("python3 -c 'import matplotlib' > /dev/null 2>&1") != 0) {
    std::cerr << "load: plot skipped: python3 with matplotlib not found (pip install matplotlib)\n";
    return;
  }
  auto quote = [](const std::string& s) {
    std::string q = "'";
    for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
    return q + "'";
  };
  std::string cmd = "python3 " + quote(script.string()) + " " + quote(json_path) + " --out " + quote(png_path);
  if (std::system(cmd.c_str()) != 0)
    std::cerr << "load: plot_load.py failed; the JSON report is still at " << json_path << "\n";
  else
    std::cerr << "load: plot written to " << png_path << "\n";
}

int run_load_command(const load_options& o) {
  using namespace kvflow::load;
  if (o.scenario.empty() == o.trace.empty())
    throw error(errc::invalid_argument, "give one of --scenario FILE.lua or --trace FILE.jsonl (see --help)");
  if (o.vocab < 2) throw error(errc::invalid_argument, "--vocab must be at least 2");
  if (o.block_tokens < 1) throw error(errc::invalid_argument, "--block-tokens must be at least 1");
  if (!(o.timeout_s > 0)) throw error(errc::invalid_argument, "--timeout must be positive");
  auto slos = parse_slos(o.goodput);

  endpoint_config ep;
  ep.base_url = o.url;
  ep.api_key = o.api_key;
  ep.timeout_s = o.timeout_s;
  ep.stream_usage = !o.no_usage;
  ep.keep_alive = o.keep_alive;
  ep.model = o.model;
  std::unique_ptr<request_source> source;
  std::string workload;
  run_options ro;
  ro.request_rate = o.request_rate;
  ro.concurrency = o.concurrency;
  ro.duration_s = o.duration_s;
  ro.seed = o.seed;
  ro.progress = !o.no_progress;
  ro.num_requests = o.num_requests;
  if (!o.scenario.empty()) {
    scenario_options so;
    so.path = resolve(o.scenario, "scenarios", ".lua");
    so.args = parse_args(o.args);
    so.token_ids = o.token_ids;
    so.vocab = o.vocab;
    so.seed = o.seed;
    so.stream = !o.no_stream;
    workload = so.path;
    source = std::make_unique<scenario_source>(so);
    if (ro.request_rate <= 0 && ro.concurrency <= 0) ro.concurrency = 1;
    if (ro.num_requests == 0 && ro.duration_s <= 0) ro.num_requests = 100;
  } else {
    trace_options to;
    to.block_tokens = o.block_tokens;
    to.token_ids = o.token_ids;
    to.vocab = o.vocab;
    to.speedup = o.speedup;
    to.scale = o.scale;
    to.max_output = o.max_output;
    to.stream = !o.no_stream;
    // A rate given with a trace replaces its timestamps; a cap only caps.
    to.use_timestamps = o.request_rate <= 0;
    workload = resolve(o.trace, "traces", ".jsonl");
    auto entries = read_trace(workload);
    if (ro.num_requests == 0 || ro.num_requests > entries.size()) ro.num_requests = entries.size();
    source = std::make_unique<trace_source>(std::move(entries), to);
  }
  {
    // Reach the server before sending: an unreachable endpoint is one clear
    // error, not a run of failed requests. (Scripts and traces are read first,
    // so their errors show without a server.)
    endpoint_config probe_cfg = ep;
    probe_cfg.timeout_s = std::min(o.timeout_s, 10.0);
    openai_client probe(probe_cfg);
    try {
      auto ids = probe.models();
      if (ep.model.empty()) {
        if (ids.empty()) throw error(errc::not_found, o.url + " lists no models; name one with --model");
        ep.model = ids.front();
      }
    } catch (const error& e) {
      if (e.code() == errc::peer_down || ep.model.empty()) throw;
      std::cerr << "load: warning: " << e.what() << " (going on with --model " << ep.model << ")\n";
    }
  }

  // --ignore-eos applies to every request, whatever built it.
  struct eos_source : request_source {
    request_source& inner;
    explicit eos_source(request_source& s) : inner(s) {}
    std::optional<scenario_request> next(const scenario_context& c) override {
      auto r = inner.next(c);
      if (r && !r->api.body.contains("ignore_eos")) r->api.body["ignore_eos"] = true;
      return r;
    }
    std::optional<double> on_response(const scenario_context& c, const request_record& rec) override {
      return inner.on_response(c, rec);
    }
    std::optional<double> next_arrival_s() override { return inner.next_arrival_s(); }
    bool exhausted() const override { return inner.exhausted(); }
  };
  std::unique_ptr<request_source> wrapped;
  request_source* src = source.get();
  if (o.ignore_eos) {
    wrapped = std::make_unique<eos_source>(*source);
    src = wrapped.get();
  }

  std::ostringstream how;
  if (ro.request_rate > 0)
    how << ro.request_rate << " req/s Poisson";
  else
    how << (!o.trace.empty() ? "trace timestamps" : "no rate");
  if (ro.concurrency > 0) how << ", at most " << ro.concurrency << " in flight";
  std::cerr << "load: " << workload << " -> " << o.url << " (model " << ep.model << "), " << how.str() << "\n";
  ro.stop = &interrupted;
  auto previous = std::signal(SIGINT, on_interrupt);
  auto result = run_load(*src, ep, ro);
  std::signal(SIGINT, previous);
  if (interrupted) std::cerr << "load: interrupted: reporting the requests sent so far\n";
  auto rep = make_report(result.records, result.duration_s, slos);
  std::cout << report_table(rep) << std::flush;

  if (!o.out.empty()) {
    json meta = {{"date", iso_now()},
                 {"backend", "openai"},
                 {"base_url", o.url},
                 {"model_id", ep.model},
                 {"label", o.label},
                 {"scenario", o.scenario.empty() ? json(nullptr) : json(workload)},
                 {"trace", o.trace.empty() ? json(nullptr) : json(workload)},
                 {"request_rate", ro.request_rate > 0 ? json(ro.request_rate) : json("inf")},
                 {"max_concurrency", ro.concurrency > 0 ? json(ro.concurrency) : json(nullptr)},
                 {"num_prompts", result.records.size()},
                 {"seed", o.seed},
                 {"token_ids", o.token_ids},
                 {"stream", !o.no_stream},
                 {"interrupted", interrupted.load()}};
    if (!o.trace.empty()) {
      meta["speedup"] = o.speedup;
      meta["scale"] = o.scale;
      meta["block_tokens"] = o.block_tokens;
    }
    json g = json::object();
    if (slos.ttft_ms) g["ttft"] = *slos.ttft_ms;
    if (slos.tpot_ms) g["tpot"] = *slos.tpot_ms;
    if (slos.e2el_ms) g["e2el"] = *slos.e2el_ms;
    meta["goodput_slos_ms"] = g;
    auto j = report_json(rep, result.records, meta);
    fs::path out(o.out);
    if (out.has_parent_path()) fs::create_directories(out.parent_path());
    std::ofstream f(out);
    if (!(f << j.dump(2) << "\n")) throw error(errc::io_failure, "cannot write " + o.out);
    f.close();
    std::cerr << "load: report written to " << o.out << "\n";
    if (!o.no_plot) plot(o.out, o.plot.empty() ? fs::path(o.out).replace_extension(".png").string() : o.plot);
  }
  return 0;
}

}  // namespace

command_runner add_load_command(CLI::App& app) {
  auto o = std::make_shared<load_options>();
  auto* cmd = app.add_subcommand("load", "Load-test an OpenAI-compatible endpoint with a Lua scenario or a trace");
  cmd->footer(
      "Examples:\n"
      "  kvflow load --scenario multi_turn --arg sessions=8 --arg turns=4 --concurrency 4 --out out/chat.json\n"
      "  kvflow load --scenario rag --request-rate 2 --num-requests 200 --goodput ttft:500 tpot:50\n"
      "  kvflow load --trace small --token-ids --vocab 128256 --speedup 2 --url http://gpu:8000\n"
      "Scenarios and traces are looked up as given, then under apps/load/scenarios/ and apps/load/traces/\n"
      "(multi_turn, rag, long_doc; trace small). The Lua API is in apps/load/scenarios/README.md.\n"
      "Arrivals: --request-rate alone is open-loop Poisson; --concurrency alone keeps that many in flight;\n"
      "both: Poisson, capped. A trace is replayed at its timestamps (/ --speedup) unless a rate is given.\n"
      "A failed request is counted and reported, never fatal; exit status 1 means the run could not start\n"
      "or the script failed.");
  cmd->add_option("--url", o->url, "Base URL of the server (a trailing /v1 is optional)")->capture_default_str();
  cmd->add_option("--api-key", o->api_key, "Sent as Authorization: Bearer KEY")->envname("OPENAI_API_KEY");
  cmd->add_option("--model", o->model, "The requests' \"model\" (default: the first of /v1/models)");
  cmd->add_option("--timeout", o->timeout_s, "Seconds to connect, and between two reads of one answer")
      ->capture_default_str();
  auto* sc = cmd->add_option("--scenario", o->scenario, "Lua scenario (a file, or a shipped name)");
  auto* tr = cmd->add_option("--trace", o->trace, "mooncake_trace JSONL file (or a shipped name)");
  sc->excludes(tr);
  cmd->add_option("--arg", o->args, "KEY=VALUE for the scenario's init(args) and kvflow.args (repeatable)");
  cmd->add_flag("--token-ids", o->token_ids,
                "Prompts as token-id arrays (for random-weight presets, which have no tokenizer)");
  cmd->add_option("--vocab", o->vocab, "Token ids are drawn from [1, VOCAB) (512 suits every preset)")
      ->capture_default_str();
  cmd->add_option("--block-tokens", o->block_tokens, "Tokens per trace hash id (mooncake: 512)")->capture_default_str();
  cmd->add_option("--speedup", o->speedup, "Trace timestamps are divided by this")->capture_default_str();
  cmd->add_option("--scale", o->scale, "Trace input lengths and --block-tokens are multiplied by this (small models)")
      ->capture_default_str();
  cmd->add_option("--max-output", o->max_output, "Caps a trace request's output_length (0: no cap)");
  cmd->add_flag("--no-stream", o->no_stream, "Whole answers instead of server-sent events (TTFT = E2EL)");
  cmd->add_flag("--ignore-eos", o->ignore_eos, "Add \"ignore_eos\": true so answers run to max_tokens");
  cmd->add_flag("--no-usage", o->no_usage, "Do not ask for usage in streams (stream_options.include_usage)");
  cmd->add_flag("--keep-alive", o->keep_alive,
                "Reuse connections (off: a new one per request, so a server with a thread per connection "
                "never waits on idle ones)");
  cmd->add_option("--request-rate", o->request_rate, "Poisson arrivals per second (default: none)");
  cmd->add_option("--concurrency", o->concurrency,
                  "At most this many requests in flight (default 1 for a scenario without --request-rate)");
  cmd->add_option("--num-requests", o->num_requests,
                  "Requests to send (default 100 for scenarios, the whole trace for traces)");
  cmd->add_option("--duration", o->duration_s, "Stop sending after this many seconds");
  cmd->add_option("--seed", o->seed, "Seed of the arrivals and of the script's random numbers")->capture_default_str();
  cmd->add_option("--goodput", o->goodput, "SLOs in ms, as vLLM's: ttft:500 tpot:50 e2el:2000");
  cmd->add_option("--out", o->out, "Write the JSON report here (and a PNG beside it)");
  cmd->add_option("--plot", o->plot, "PNG path (default: --out with .png)");
  cmd->add_flag("--no-plot", o->no_plot, "Do not run plot_load.py");
  cmd->add_flag("--no-progress", o->no_progress, "No progress line on stderr");
  cmd->add_option("--label", o->label, "A free-form label stored in the JSON report");
  return [o] { return run_load_command(*o); };
}

}  // namespace kvflow::app
