// `kvflow bench`: restoration measured through the runtime. For every tier
// configuration, context length and batch size it primes the cache with the
// prompts' prefixes, then restores the full prompts under every policy
// (store=false, so every policy sees the same cache) and records TTFT; then,
// optionally, a Poisson stream of mixed-length prompts at a set share of the
// measured capacity. Each restore's KV digest and first token are checked
// against compute_only's. Writes restore.json, restore.md and Chrome trace
// files of one batched restore per traced policy.

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <future>
#include <iostream>
#include <map>
#include <random>
#include <set>
#include <sstream>
#include <thread>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include "actors/runtime.hpp"
#include "apps/node_cluster.hpp"
#include "apps/commands.hpp"
#include "kernels/model/config.hpp"
#include "kernels/model/kv_layout.hpp"
#include "messages/error.hpp"

namespace kvflow::app {
namespace {

using clock_type = std::chrono::steady_clock;
using json = nlohmann::json;
using prompt_list = std::vector<std::vector<std::int32_t>>;

struct bench_options {
  std::string preset = "llama-3-8b";
  std::string backend = "auto";
  int threads = 0;
  std::uint64_t seed = 1;
  std::vector<int> contexts{16384};
  std::vector<int> suffix_tokens{256};  // swept: each value is a full run of the other axes
  int chunk_tokens = 256;
  std::vector<std::string> tiers{"disk", "25", "10"};
  std::vector<std::string> policies{"compute_only", "load_only", "bidirectional", "two_pointer", "oracle"};
  std::vector<int> batches{1};
  std::vector<std::string> batch_tiers;  // tiers that run batches > 1 and streams; empty: all
  int repeats = 3;
  int poisson = 0;            // requests of the Poisson stream; 0: none
  double poisson_load = 0.7;  // arrival rate over the measured capacity
  std::string capacity_policy = "two_pointer";  // restores the stream serially to measure capacity
  int trace_batch = 0;        // 0: the largest batch; negative: no trace
  std::vector<std::string> trace_policies{"two_pointer", "bidirectional"};
  int trace_context = 0;      // 0: the first context where the batch runs
  std::vector<std::string> references;  // prefill_reference.py's JSON files
  bool no_digest = false;
  bool append = false;
  std::string out_dir;
  std::string device_name;  // e.g. the GPU's name, for the records
  std::string disk_root;    // folder of the disk tier's chunk files; empty: the temp folder
  std::string paced_root;   // same for paced tiers; empty: disk_root
};

// One tier configuration: "host" (pinned host pool), "disk" (unpaced,
// O_DIRECT), a number (the disk paced to that many Gbit/s), or "mixed" /
// "mixed:N": a host pool for about half of a point's prompts in front of the
// disk (paced to N Gbit/s), so that part of each restore comes from each.
struct tier_config {
  std::string name;
  bool host = false;
  bool mixed = false;
  double gbps = 0;
  bool remote = false;  // "remote:N": a kvflow node behind a veth pair shaped to N Gbit/s
};

double parse_gbps(const std::string& s) {
  try {
    std::size_t used = 0;
    double g = std::stod(s, &used);
    if (used == s.size() && g > 0) return g;
  } catch (const std::exception&) {
  }
  return 0;
}

tier_config parse_tier(const std::string& s) {
  if (s == "host" || s == "disk") return {s, s == "host", false, 0};
  if (s == "mixed") return {s, false, true, 0};
  if (s.rfind("remote:", 0) == 0) {
    double g = parse_gbps(s.substr(7));
    if (g > 0) return {s, false, false, g, true};
  }
  if (s.rfind("mixed:", 0) == 0) {
    double g = parse_gbps(s.substr(6));
    if (g > 0) return {s, false, true, g};
  } else if (double g = parse_gbps(s); g > 0) {
    return {s, false, false, g};
  }
  throw error(errc::invalid_argument,
              "--tiers: '" + s +
                  "' is not host, disk, a positive Gbit/s rate, mixed, mixed:<Gbit/s> or remote:<Gbit/s>");
}

// The measurements of one (context, tier, batch or stream, policy) point.
struct point {
  int context = 0;
  std::string tier;
  int batch = 0;
  std::string policy;
  std::vector<double> per_repeat_mean;  // mean TTFT of the batch, per repeat
  std::vector<double> all_ttft;         // every request of every repeat
  double computed = 0, loaded = 0, host_bytes = 0, disk_bytes = 0;  // sums over requests
  double remote_bytes = 0, remote_busy_s = 0;  // bytes over the link, and the time loads ran (traced)
  double mean() const {  // batch 1: median of repeats; batches, streams: mean of all requests
    if (batch == 1) {
      auto v = per_repeat_mean;
      std::sort(v.begin(), v.end());
      return v.size() % 2 ? v[v.size() / 2] : (v[v.size() / 2 - 1] + v[v.size() / 2]) / 2;
    }
    double s = 0;
    for (double t : all_ttft) s += t;
    return s / all_ttft.size();
  }
  double p99() const {  // nearest rank
    auto v = all_ttft;
    std::sort(v.begin(), v.end());
    auto rank = static_cast<std::size_t>(std::ceil(0.99 * v.size()));
    return v[std::max<std::size_t>(rank, 1) - 1];
  }
  void add(const restore_report& r) {
    all_ttft.push_back(r.ttft_s);
    computed += r.cells_computed;
    loaded += r.cells_loaded;
    host_bytes += r.bytes_from_host;
    disk_bytes += r.bytes_from_disk;
    remote_bytes += r.bytes_from_remote;
    // The time the link worked: the union of the request's load spans.
    std::vector<std::pair<double, double>> loads;
    for (auto& sp : r.spans)
      if (!sp.compute && sp.source == "remote") loads.emplace_back(sp.start_s, sp.end_s);
    std::sort(loads.begin(), loads.end());
    double end = -1e30;
    for (auto& [a, b] : loads) {
      if (b <= end) continue;
      remote_busy_s += b - std::max(a, end);
      end = b;
    }
  }
};

// One restore of a prompt list: the reports and each submit's offset from
// the first submit, in seconds.
struct restore_run {
  std::vector<restore_report> reports;
  std::vector<double> submit_s;
};

std::vector<std::int32_t> random_tokens(std::mt19937_64& rng, int count, int vocab) {
  std::uniform_int_distribution<int> pick(0, vocab - 1);
  std::vector<std::int32_t> t(count);
  for (auto& x : t) x = pick(rng);
  return t;
}

// compute_only and load_only first, oracle last: the oracle reads the rates
// the runtime's cost model observed in the earlier runs.
std::vector<std::string> run_order(std::vector<std::string> p) {
  auto rank = [](const std::string& s) { return s == "compute_only" ? 0 : s == "load_only" ? 1 : s == "oracle" ? 3 : 2; };
  std::stable_sort(p.begin(), p.end(), [&](auto& a, auto& b) { return rank(a) < rank(b); });
  return p;
}

std::string fmt(double v, const char* f = "%.3f") {
  char buf[32];
  std::snprintf(buf, sizeof buf, f, v);
  return buf;
}

std::string clock_text(double s) {
  auto t = static_cast<long>(std::lround(std::max(0.0, s)));
  char buf[32];
  if (t >= 3600)
    std::snprintf(buf, sizeof buf, "%ldh%02ldm%02lds", t / 3600, t / 60 % 60, t % 60);
  else
    std::snprintf(buf, sizeof buf, "%ldm%02lds", t / 60, t % 60);
  return buf;
}

// Runs done out of the total on stderr: one line redrawn in place on a
// terminal, a plain line per finished run otherwise (logs to a file).
class progress {
 public:
  progress() : tty_(::isatty(STDERR_FILENO) == 1), start_(clock_type::now()) {}
  void set_total(std::size_t n) { total_ = n; }
  std::size_t total() const { return total_; }

  void start(const std::string& what) {
    current_ = what;
    if (tty_) draw();
  }
  void finish(const std::string& result) {
    ++done_;
    if (tty_)
      draw();
    else
      std::fprintf(stderr, "[%zu/%zu] %s: %s  elapsed %s  eta %s\n", done_, total_, current_.c_str(), result.c_str(),
                   clock_text(elapsed()).c_str(), eta().c_str());
  }
  // A message on its own line, the bar redrawn below it.
  void say(const std::string& line) {
    if (tty_) std::fputs("\r\033[K", stderr);
    std::fputs((line + "\n").c_str(), stderr);
    if (tty_ && !current_.empty()) draw();
  }
  // Before others write to stderr (the runtime's log line).
  void clear_line() {
    if (tty_) std::fputs("\r\033[K", stderr);
  }
  void close() {
    if (tty_) std::fputs("\n", stderr);
  }

 private:
  double elapsed() const { return std::chrono::duration<double>(clock_type::now() - start_).count(); }
  std::string eta() const {
    if (done_ == 0 || done_ >= total_) return done_ >= total_ ? "0m00s" : "?";
    return clock_text(elapsed() / done_ * (total_ - done_));
  }
  void draw() const {
    const int width = 20;
    int fill = total_ ? static_cast<int>(width * done_ / total_) : 0;
    std::string bar = std::string(fill, '#') + std::string(width - fill, '.');
    std::fprintf(stderr, "\r[%s] %zu/%zu runs  point: %s  elapsed %s  eta %s\033[K", bar.c_str(), done_, total_,
                 current_.c_str(), clock_text(elapsed()).c_str(), eta().c_str());
    std::fflush(stderr);
  }

  bool tty_;
  clock_type::time_point start_;
  std::size_t total_ = 0, done_ = 0;
  std::string current_;
};

class bench {
 public:
  explicit bench(bench_options o) : opt_(std::move(o)), cfg_(model::preset(opt_.preset)) {
    if (opt_.suffix_tokens.empty()) throw error(errc::invalid_argument, "--suffix-tokens: no value");
    const int longest_suffix = *std::max_element(opt_.suffix_tokens.begin(), opt_.suffix_tokens.end());
    const int shortest_suffix = *std::min_element(opt_.suffix_tokens.begin(), opt_.suffix_tokens.end());
    if (opt_.chunk_tokens <= 0 || shortest_suffix <= 0 || opt_.repeats <= 0)
      throw error(errc::invalid_argument, "--chunk-tokens, --suffix-tokens and --repeats must be positive");
    for (int c : opt_.contexts) {
      if (c <= longest_suffix + opt_.chunk_tokens)
        throw error(errc::invalid_argument, "--contexts: " + std::to_string(c) +
                                                " leaves no cached chunk after a suffix of " +
                                                std::to_string(longest_suffix) + " tokens");
      if (c + 1 > cfg_.max_positions)
        throw error(errc::invalid_argument, "--contexts: " + std::to_string(c) + " tokens plus the first new one exceed " +
                                                opt_.preset + "'s " + std::to_string(cfg_.max_positions) +
                                                " positions (use at most " + std::to_string(cfg_.max_positions - 1) +
                                                ")");
    }
    for (int b : opt_.batches)
      if (b <= 0) throw error(errc::invalid_argument, "--batch: " + std::to_string(b) + " is not positive");
    if (opt_.poisson < 0 || (opt_.poisson > 0 && !(opt_.poisson_load > 0)))
      throw error(errc::invalid_argument, "--poisson must be >= 0 and --poisson-load positive");
    policies_ = run_order(opt_.policies);
    for (auto& t : opt_.tiers) tiers_.push_back(parse_tier(t));
    trace_batch_ = opt_.trace_batch;
    if (trace_batch_ == 0) trace_batch_ = *std::max_element(opt_.batches.begin(), opt_.batches.end());
    for (auto& f : opt_.references) read_reference(f);
    if (opt_.append && !opt_.out_dir.empty()) read_previous();
    std::size_t total = 0;
    for (auto& t : tiers_) {
      for (int b : opt_.batches)
        if (batch_runs_on(b, t.name)) total += opt_.contexts.size() * policies_.size() * opt_.repeats;
      if (poisson_on(t.name)) total += opt_.contexts.size() * (policies_.size() + 1);  // + the capacity run
    }
    progress_.set_total(total * opt_.suffix_tokens.size());
  }

  int run() {
    for (int suffix : opt_.suffix_tokens) {
      suffix_ = suffix;
      for (auto& t : tiers_) run_tier(t);
    }
    progress_.close();
    auto table = markdown();
    std::cout << table;
    if (!opt_.out_dir.empty()) write_out(table, true);
    if (mismatches_) std::cerr << "kvflow bench: " << mismatches_ << " restores differ from compute_only\n";
    return mismatches_ ? 1 : 0;
  }

 private:
  bool batch_runs_on(int b, const std::string& tier) const { return b == 1 || stream_runs_on(tier); }
  bool stream_runs_on(const std::string& tier) const {
    return opt_.batch_tiers.empty() ||
           std::find(opt_.batch_tiers.begin(), opt_.batch_tiers.end(), tier) != opt_.batch_tiers.end();
  }
  bool poisson_on(const std::string& tier) const { return opt_.poisson > 0 && stream_runs_on(tier); }

  // The KV element type of the engine the runtime picks: f32 on the CPU,
  // bf16 on CUDA; for "auto", asked of a probe runtime once.
  model::dtype kv_type() {
    if (!kv_type_known_) {
      std::string backend = opt_.backend;
      if (backend == "auto") {
        runtime_options ro;
        ro.preset = opt_.preset;
        ro.seed = opt_.seed;
        ro.backend = opt_.backend;
        ro.threads = opt_.threads;
        ro.chunk_tokens = opt_.chunk_tokens;
        ro.host_tier_gb = 0;
        progress_.clear_line();
        runtime probe(ro);
        backend = probe.describe().find(" on cuda") != std::string::npos ? "cuda" : "cpu";
      }
      kv_type_ = backend == "cuda" ? model::dtype::bf16 : model::dtype::f32;
      kv_type_known_ = true;
    }
    return kv_type_;
  }
  double kv_bytes(int tokens) { return static_cast<double>(model::kv_shape::of(cfg_, tokens, kv_type()).bytes()); }

  // The cached prefixes of the prompts one point restores.
  double prefix_bytes(const prompt_list& prompts) {
    double sum = 0;
    for (auto& p : prompts) sum += kv_bytes(static_cast<int>(p.size()) - suffix_);
    return sum;
  }
  // The most any point of this tier restores (the prompts are drawn the same
  // way again): the host pool holds it, the disk keeps it (and drops older
  // points' files, least recently used first, beyond 1.25 times that).
  double tier_bytes_needed(const tier_config& t) {
    double most = 0;
    for (int ctx : opt_.contexts) {
      for (int b : opt_.batches)
        if (batch_runs_on(b, t.name)) most = std::max(most, prefix_bytes(make_prompts(ctx, b, static_cast<std::uint64_t>(b))));
      if (poisson_on(t.name)) most = std::max(most, prefix_bytes(make_prompts(ctx, opt_.poisson, poisson_key())));
    }
    return most;
  }
  std::uint64_t poisson_key() const { return 7919 + static_cast<std::uint64_t>(opt_.poisson); }

  // Distinct random prompts (no shared prefix). More than one mixes lengths
  // from 4k (a quarter of short contexts) to the context, in whole chunks.
  prompt_list make_prompts(int ctx, int count, std::uint64_t key) const {
    std::mt19937_64 rng(opt_.seed * 1000003 + ctx * 31 + key);
    int low = std::min(4096, ctx / 4);
    std::uniform_int_distribution<int> len(low / opt_.chunk_tokens, ctx / opt_.chunk_tokens);
    prompt_list prompts;
    for (int i = 0; i < count; ++i) {
      int n = count == 1 ? ctx : std::max(len(rng) * opt_.chunk_tokens, suffix_ + opt_.chunk_tokens + 1);
      prompts.push_back(random_tokens(rng, n, cfg_.vocab_size));
    }
    return prompts;
  }

  std::unique_ptr<runtime> make_runtime(const tier_config& t, double host_bytes) {
    runtime_options ro;
    ro.preset = opt_.preset;
    ro.seed = opt_.seed;
    ro.backend = opt_.backend;
    ro.threads = opt_.threads;
    ro.chunk_tokens = opt_.chunk_tokens;
    ro.policy = "two_pointer";
    ro.host_tier_gb = host_bytes / 1e9;
    ro.disk_gbps = t.gbps;
    ro.disk_tier_gb = std::max(4.0, tier_bytes_needed(t) * 1.25 / 1e9);
    // A paced tier stands for remote storage: its files may lie on a faster
    // medium (tmpfs) than the pace, so that the pace is the bottleneck.
    std::string root = t.gbps > 0 && !opt_.paced_root.empty() ? opt_.paced_root : opt_.disk_root;
    if (root.empty()) root = std::filesystem::temp_directory_path().string();
    tier_root_ = root;
    disk_dir_ = (std::filesystem::path(root) /
                 ("kvflow-bench-" + std::to_string(::getpid()) + "-" + std::to_string(runtimes_++)))
                    .string();
    std::filesystem::remove_all(disk_dir_);
    ro.disk_dir = disk_dir_;
    remote_tier_ = t.remote;
    if (t.remote) {
      // The cached prefix lives on a kvflow node in a network namespace of
      // its own, in its host tier, behind a veth pair shaped to the rate.
      ro.disk_gbps = 0;
      ro.local_tiers = false;
      ro.remote_gbps = t.gbps;
      app::node_cluster_options co;
      co.kvflow_exe = "/proc/self/exe";
      co.nodes = 1;
      co.gbps = t.gbps;
      co.node_args = {"--host-gb", std::to_string(tier_bytes_needed(t) * 1.25 / 1e9 + 1)};
      cluster_ = std::make_unique<app::node_cluster>(co);
      if (!cluster_->namespaced())
        progress_.say("warning: tier " + t.name + ": no network namespace here (root and ip/tc needed): unshaped loopback");
      remote_gbps_ = t.gbps;
      // About a second of traffic at the shaped rate.
      link_raw_gbps_ = cluster_->measure_gbps(static_cast<std::size_t>(std::max(16e6, t.gbps * 1e9 / 8)));
      progress_.say(cluster_->describe() + ", raw TCP stream " + fmt(link_raw_gbps_) + " Gbit/s");
      ro.cluster_members = cluster_->members();
      ro.ucx_tls = cluster_->ucx_tls();
      ro.ucx_devices = cluster_->ucx_devices();
    }
    progress_.clear_line();
    auto rt = std::make_unique<runtime>(ro);
    if (device_.empty()) {
      // "kvflow: <model> (...) on <backend>", without the tier details.
      auto d = rt->describe();
      device_ = d.substr(0, d.find(", chunks of"));
      if (!opt_.device_name.empty()) device_ = opt_.device_name + ", " + device_;
    }
    return rt;
  }
  void drop_runtime(std::unique_ptr<runtime>& rt) {
    rt.reset();
    cluster_.reset();
    std::error_code ec;
    std::filesystem::remove_all(disk_dir_, ec);
  }

  // A mixed tier's host pool, in chunks: half of the prompts' cached chunks,
  // so that the LRU keeps the later prompts only.
  int mixed_host_blocks(const prompt_list& prompts) const {
    int chunks = 0;
    for (auto& p : prompts) chunks += (static_cast<int>(p.size()) - suffix_) / opt_.chunk_tokens;
    return std::max(1, chunks / 2);
  }

  void run_tier(const tier_config& t) {
    // host: the pool holds every prompt, so loads never reach the disk;
    // disk and paced: no host tier, every load reads the (paced) disk;
    // mixed: a runtime per point, its pool sized for that point's prompts.
    std::unique_ptr<runtime> shared;
    if (!t.mixed) shared = make_runtime(t, t.host ? tier_bytes_needed(t) * 1.25 + 0.5e9 : 0);
    auto with_runtime = [&](const prompt_list& prompts, auto&& fn) {
      if (shared) return fn(*shared, 0);
      int blocks = mixed_host_blocks(prompts);
      // Half a block more against rounding (the pool holds whole blocks).
      auto rt = make_runtime(t, (blocks + 0.5) * kv_bytes(opt_.chunk_tokens));
      fn(*rt, blocks);
      drop_runtime(rt);
    };
    for (int ctx : opt_.contexts) {
      for (int b : opt_.batches) {
        if (!batch_runs_on(b, t.name)) continue;
        auto prompts = make_prompts(ctx, b, static_cast<std::uint64_t>(b));
        with_runtime(prompts, [&](runtime& rt, int blocks) { run_point(rt, ctx, t, prompts, blocks); });
      }
      if (poisson_on(t.name)) {
        auto prompts = make_prompts(ctx, opt_.poisson, poisson_key());
        with_runtime(prompts, [&](runtime& rt, int blocks) { run_poisson(rt, ctx, t, prompts, blocks); });
      }
    }
    if (shared) drop_runtime(shared);
  }

  // Stores every prompt's prefix and waits until it is in the tiers. With a
  // small host pool (mixed tier, `pool_blocks` > 0) it primes one prompt
  // after the other, at most pool_blocks new chunks per step and a flush
  // after each, so that the LRU demotes the earlier chunks in order. (A store
  // that evicts a chunk whose disk copy is still queued pins it for the
  // demotion and goes on evicting: one step larger than the pool would empty
  // it.) Stores are write-through: the disk holds every chunk.
  void prime(runtime& rt, const prompt_list& prompts, int pool_blocks) {
    submit_options so;
    so.policy = "compute_only";
    so.max_new_tokens = 1;
    so.store = true;
    auto prefix = [&](const std::vector<std::int32_t>& p, std::size_t n) {
      return std::vector<std::int32_t>(p.begin(), p.begin() + static_cast<std::ptrdiff_t>(n));
    };
    if (pool_blocks > 0) {
      for (auto& p : prompts) {
        std::size_t cached = p.size() - suffix_;
        std::size_t step = static_cast<std::size_t>(pool_blocks) * opt_.chunk_tokens;
        for (std::size_t end = std::min(step, cached);; end = std::min(end + step, cached)) {
          rt.submit(prefix(p, end), so).get();
          rt.flush();
          if (end == cached) break;
        }
      }
      return;
    }
    std::vector<std::future<restore_report>> primed;
    for (auto& p : prompts) primed.push_back(rt.submit(prefix(p, p.size() - suffix_), so));
    for (auto& f : primed) f.get();
    rt.flush();
  }

  submit_options restore_options(const std::string& policy) const {
    submit_options so;
    so.policy = policy;
    so.max_new_tokens = 1;
    so.store = false;
    so.digest_kv = !opt_.no_digest;
    so.trace = so.trace || remote_tier_;  // load spans give the link's busy time
    return so;
  }

  // Submits every prompt, at once or at its arrival offset (seconds from the
  // first submit), and waits for every report.
  restore_run restore(runtime& rt, const prompt_list& prompts, const submit_options& so,
                      const std::vector<double>* arrivals = nullptr) {
    restore_run run;
    std::vector<std::future<restore_report>> futs;
    auto t0 = clock_type::now();
    for (std::size_t i = 0; i < prompts.size(); ++i) {
      if (arrivals) std::this_thread::sleep_until(t0 + std::chrono::duration<double>((*arrivals)[i]));
      run.submit_s.push_back(std::chrono::duration<double>(clock_type::now() - t0).count());
      futs.push_back(rt.submit(prompts[i], so));
    }
    for (auto& f : futs) run.reports.push_back(f.get());
    return run;
  }

  // Against compute_only's restore of the same prompt (the first one seen).
  void check(std::vector<restore_report>& reference, const restore_report& r, std::size_t i,
             const std::string& policy, const tier_config& t) {
    if (reference[i].first_token < 0) reference[i] = r;
    if (r.kv_sha256 != reference[i].kv_sha256 || r.first_token != reference[i].first_token) {
      mismatches_++;
      progress_.say("MISMATCH: " + policy + " prompt " + std::to_string(i) + " (" + std::to_string(r.prompt_tokens) +
                    " tokens): kv " + r.kv_sha256.substr(0, 12) + " first token " + std::to_string(r.first_token) +
                    ", " + reference[i].policy + " has kv " + reference[i].kv_sha256.substr(0, 12) +
                    " first token " + std::to_string(reference[i].first_token));
    }
    if (policy == "load_only" && t.host && r.bytes_from_disk > 0)
      progress_.say("warning: host tier: load_only read " + std::to_string(r.bytes_from_disk) + " bytes from disk");
  }

  std::string label(int ctx, const tier_config& t, int batch, const std::string& what) const {
    std::string suffix = opt_.suffix_tokens.size() > 1 ? " suffix " + std::to_string(suffix_) : "";
    return opt_.preset + " ctx " + std::to_string(ctx) + suffix + " tier " + t.name + " batch " +
           std::to_string(batch) + " " + what;
  }

  void run_point(runtime& rt, int ctx, const tier_config& t, const prompt_list& prompts, int pool_blocks) {
    int batch = static_cast<int>(prompts.size());
    prime(rt, prompts, pool_blocks);
    std::vector<restore_report> reference(batch);  // compute_only's, per prompt
    std::map<std::string, point> points;
    for (int rep = 0; rep < opt_.repeats; ++rep) {
      for (auto& policy : policies_) {
        auto so = restore_options(policy);
        bool trace = rep == 0 && batch == trace_batch_ && !traced_.count(policy) &&
                     (opt_.trace_context == 0 || opt_.trace_context == ctx) &&
                     std::find(opt_.trace_policies.begin(), opt_.trace_policies.end(), policy) !=
                         opt_.trace_policies.end();
        so.trace = trace || remote_tier_;
        progress_.start(label(ctx, t, batch, policy) + (trace ? " (traced)" : ""));
        auto run = restore(rt, prompts, so);
        double mean = account(points[policy], run, reference, ctx, t, policy);
        progress_.finish(fmt(mean) + " s");
        if (trace) {
          traced_.insert(policy);
          write_trace(ctx, t, policy, prompts, run);
        }
      }
    }
    add_records(points, prompts, {{"arrival", "together"}, {"rate_per_s", nullptr}});
  }

  // Adds one run of every prompt to its point (after checking each report
  // against compute_only's); returns the run's mean TTFT.
  double account(point& pt, const restore_run& run, std::vector<restore_report>& reference, int ctx, const tier_config& t,
                 const std::string& policy) {
    int n = static_cast<int>(run.reports.size());
    pt.context = ctx;
    pt.tier = t.name;
    pt.batch = n;
    pt.policy = policy;
    double sum = 0;
    for (int i = 0; i < n; ++i) {
      check(reference, run.reports[i], i, policy, t);
      sum += run.reports[i].ttft_s;
      pt.add(run.reports[i]);
    }
    pt.per_repeat_mean.push_back(sum / n);
    return sum / n;
  }

  // Mean serial TTFT of the stream's own prompts under a single-resource
  // baseline: one request at a time, nothing else in flight.
  double serial_service(runtime& rt, const prompt_list& prompts, const std::string& policy, int ctx,
                        const tier_config& t) {
    auto so = restore_options(policy);
    so.digest_kv = false;
    progress_.start(label(ctx, t, static_cast<int>(prompts.size()), "capacity: " + policy + " one at a time"));
    double sum = 0;
    for (auto& p : prompts) sum += rt.submit(p, so).get().ttft_s;
    double mean = sum / prompts.size();
    progress_.finish(fmt(mean) + " s per request");
    return mean;
  }

  void run_poisson(runtime& rt, int ctx, const tier_config& t, const prompt_list& prompts, int pool_blocks) {
    int n = static_cast<int>(prompts.size());
    prime(rt, prompts, pool_blocks);
    // Capacity: requests per second that the system restores one at a time
    // under --capacity-policy (kvflow's own scheduler by default), measured
    // here on these prompts; the stream arrives at --poisson-load of it.
    std::string service_policy = opt_.capacity_policy;
    double service = serial_service(rt, prompts, service_policy, ctx, t);
    double rate = opt_.poisson_load / service;
    std::mt19937_64 rng(opt_.seed * 7 + ctx);
    std::exponential_distribution<double> gap(rate);
    std::vector<double> arrivals{0.0};  // the first request arrives at once
    for (int i = 1; i < n; ++i) arrivals.push_back(arrivals.back() + gap(rng));

    std::vector<restore_report> reference(n);
    std::map<std::string, point> points;
    for (auto& policy : policies_) {
      progress_.start(label(ctx, t, n, policy) + " poisson " + fmt(rate, "%.2f") + "/s");
      auto run = restore(rt, prompts, restore_options(policy), &arrivals);
      double mean = account(points[policy], run, reference, ctx, t, policy);
      progress_.finish(fmt(mean) + " s mean, " + fmt(points[policy].p99()) + " s p99");
    }
    add_records(points, prompts,
                {{"arrival", "poisson"},
                 {"rate_per_s", rate},
                 {"poisson_load", opt_.poisson_load},
                 {"service_s", service},
                 {"service_policy", service_policy},
                 {"arrival_s", arrivals}});
  }

  // One record per policy, ratios within this point's run: TTFT over the
  // baseline's (below 1: faster than the baseline).
  void add_records(std::map<std::string, point>& points, const prompt_list& prompts, const json& extra) {
    auto ttft_of = [&](const char* p) { return points.count(p) ? points[p].mean() : 0.0; };
    double comp = ttft_of("compute_only"), load = ttft_of("load_only"), orac = ttft_of("oracle");
    double bidi = ttft_of("bidirectional");
    double best = comp > 0 && load > 0 ? std::min(comp, load) : std::max(comp, load);
    double bidi_p99 = points.count("bidirectional") ? points["bidirectional"].p99() : 0.0;
    for (auto& policy : policies_) {
      auto& pt = points[policy];
      double n = static_cast<double>(pt.all_ttft.size());
      double m = pt.mean();
      auto ratio = [&](double base) { return base > 0 ? json(m / base) : json(nullptr); };
      auto ref = reference_.find({opt_.preset, pt.context});
      json transformers = ref == reference_.end() ? json(nullptr) : json(ref->second);
      bool same_shape = policy == "compute_only" && pt.batch == 1 && extra["arrival"] == "together";
      double loaded_bytes = pt.host_bytes + pt.disk_bytes;
      json rec = {{"model", opt_.preset},
                  {"context_tokens", pt.context},
                  {"suffix_tokens", suffix_},
                  {"chunk_tokens", opt_.chunk_tokens},
                  {"tier", pt.tier},
                  {"tier_dir", tier_root_},
                  {"batch", pt.batch},
                  {"policy", policy},
                  {"repeats", static_cast<int>(pt.per_repeat_mean.size())},
                  {"ttft_s", m},
                  {"ttft_p99_s", pt.p99()},
                  {"ttft_vs_compute_only", ratio(comp)},
                  {"ttft_vs_load_only", ratio(load)},
                  {"ttft_vs_best_single", ratio(best)},
                  {"ttft_vs_oracle", ratio(orac)},
                  {"ttft_vs_bidirectional", ratio(bidi)},
                  {"p99_vs_bidirectional", bidi_p99 > 0 ? json(pt.p99() / bidi_p99) : json(nullptr)},
                  {"transformers_s", transformers},
                  {"vs_transformers", same_shape && !transformers.is_null() ? json(m / ref->second) : json(nullptr)},
                  {"cells_computed", std::lround(pt.computed / n)},
                  {"cells_loaded", std::lround(pt.loaded / n)},
                  {"gb_from_host", pt.host_bytes / n / 1e9},
                  {"gb_from_disk", pt.disk_bytes / n / 1e9},
                  {"host_share", loaded_bytes > 0 ? json(pt.host_bytes / loaded_bytes) : json(nullptr)},
                  {"kv_digest_checked", !opt_.no_digest},
                  {"link_gbps", remote_tier_ ? json(remote_gbps_) : json(nullptr)},
                  {"link_raw_gbps", remote_tier_ ? json(link_raw_gbps_) : json(nullptr)},
                  {"gb_from_remote", pt.remote_bytes / n / 1e9},
                  {"link_utilization", remote_tier_ && pt.remote_busy_s > 0
                                           ? json(pt.remote_bytes * 8 / pt.remote_busy_s / (remote_gbps_ * 1e9))
                                           : json(nullptr)},
                  {"link_utilization_raw", remote_tier_ && pt.remote_busy_s > 0 && link_raw_gbps_ > 0
                                               ? json(pt.remote_bytes * 8 / pt.remote_busy_s / (link_raw_gbps_ * 1e9))
                                               : json(nullptr)},
                  {"prompt_tokens", json::array()},
                  {"device", device_}};
      rec.update(extra);
      for (auto& p : prompts) rec["prompt_tokens"].push_back(p.size());
      if (pt.tier.rfind("mixed", 0) == 0 && policy == "load_only" && (pt.host_bytes == 0 || pt.disk_bytes == 0))
        progress_.say("warning: tier " + pt.tier + ": load_only read " + fmt(pt.host_bytes / 1e9) +
                      " GB from host and " + fmt(pt.disk_bytes / 1e9) + " GB from disk: not a mixed restore");
      // --append: a point measured again replaces the earlier record, in
      // place (fields compared with the defaults the table shows).
      auto same_point = [&](const json& o) {
        static const char* keys[] = {"model", "context_tokens", "suffix_tokens", "chunk_tokens", "tier",
                                     "batch", "policy",         "poisson_load",  "device"};
        for (auto* k : keys)
          if (o.value(k, json()) != rec.value(k, json())) return false;
        auto arrival = [](const json& r) {
          auto a = r.value("arrival", json());
          return a.is_string() ? a.get<std::string>() : std::string("together");
        };
        return arrival(o) == arrival(rec);
      };
      auto old = std::find_if(records_.begin(), records_.end(), same_point);
      if (old != records_.end())
        *old = rec;
      else
        records_.push_back(rec);
    }
    // Written after every point, so that a run cut short keeps what it measured.
    if (!opt_.out_dir.empty()) write_out(markdown(), false);
  }

  // Chrome trace event format (Perfetto and chrome://tracing open it): one
  // complete event per grant, compute on thread 2i and loads on 2i+1 of
  // request i, times in microseconds from the batch's first submit.
  void write_trace(int ctx, const tier_config& t, const std::string& policy, const prompt_list& prompts,
                   const restore_run& run) {
    if (opt_.out_dir.empty()) return;
    auto range = [](const char* what, std::uint32_t b, std::uint32_t e) {
      return std::string(what) + std::to_string(b) + (e - b > 1 ? "-" + std::to_string(e - 1) : "");
    };
    json events = json::array();
    json requests = json::array();
    events.push_back({{"name", "process_name"}, {"ph", "M"}, {"pid", 1},
                      {"args", {{"name", "kvflow " + opt_.preset + " tier " + t.name + " " + policy}}}});
    for (std::size_t i = 0; i < run.reports.size(); ++i) {
      const auto& r = run.reports[i];
      double base_us = run.submit_s[i] * 1e6;
      int tid_c = 2 * static_cast<int>(i), tid_l = tid_c + 1;
      for (int k = 0; k < 2; ++k) {
        int tid = k ? tid_l : tid_c;
        std::string name = "req " + std::to_string(i) + " (" + std::to_string(r.prompt_tokens) + " tok) " +
                           (k ? "load" : "compute");
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
      events.push_back({{"name", "first token"}, {"cat", "ttft"}, {"ph", "i"}, {"s", "t"}, {"pid", 1}, {"tid", tid_c},
                        {"ts", base_us + r.ttft_s * 1e6}, {"args", {{"request", i}, {"ttft_s", r.ttft_s}}}});
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
    json doc = {{"traceEvents", events},
                {"displayTimeUnit", "ms"},
                {"kvflow",
                 {{"model", opt_.preset},
                  {"context_tokens", ctx},
                  {"tier", t.name},
                  {"policy", policy},
                  {"batch", prompts.size()},
                  {"layers", cfg_.layers},
                  {"chunk_tokens", opt_.chunk_tokens},
                  {"suffix_tokens", suffix_},
                  {"device", device_},
                  {"requests", requests}}}};
    std::string file = "restore_trace_" + policy + ".json";
    std::filesystem::create_directories(opt_.out_dir);
    auto path = std::filesystem::path(opt_.out_dir) / file;
    std::ofstream out(path);
    out << doc.dump() << "\n";
    if (!out) throw error(errc::io_failure, "cannot write " + path.string());
    traces_.erase(std::remove_if(traces_.begin(), traces_.end(), [&](const json& j) { return j["file"] == file; }),
                  traces_.end());
    traces_.push_back({{"file", file},
                       {"model", opt_.preset},
                       {"policy", policy},
                       {"tier", t.name},
                       {"context_tokens", ctx},
                       {"batch", prompts.size()},
                       {"chunk_tokens", opt_.chunk_tokens}});
  }

  // prefill_reference.py's records: a list of {model, context_tokens, impl,
  // seconds, ...}; the transformers ones are the outside peer.
  void read_reference(const std::string& file) {
    std::ifstream in(file);
    if (!in) throw error(errc::not_found, "--reference: cannot read " + file);
    json j;
    try {
      in >> j;
      for (auto& r : j)
        if (r.value("impl", "") == "transformers")
          reference_[{r.at("model").get<std::string>(), r.at("context_tokens").get<int>()}] = r.at("seconds").get<double>();
    } catch (const json::exception& e) {
      throw error(errc::invalid_argument, "--reference " + file + ": not prefill_reference.py's JSON (" +
                                              e.what() + ")");
    }
    for (auto& r : j)
      if (r.value("impl", "") == "transformers") reference_device_ = r.value("device", "");
  }

  // --append: keep an earlier run's records, traces and notes in --out.
  void read_previous() {
    auto path = std::filesystem::path(opt_.out_dir) / "restore.json";
    std::ifstream in(path);
    if (!in) return;
    try {
      json j;
      in >> j;
      if (j.is_array()) {
        records_ = j.get<std::vector<json>>();
      } else {
        records_ = j.value("records", json::array()).get<std::vector<json>>();
        traces_ = j.value("timelines", json::array()).get<std::vector<json>>();
        previous_notes_ = j.value("notes", json::array()).get<std::vector<std::string>>();
      }
    } catch (const json::exception& e) {
      throw error(errc::invalid_argument, "--append: " + path.string() + " is not a restore.json (" + e.what() + ")");
    }
  }

  // Notes of this run merged into the earlier ones (--append): a note
  // replaces an earlier one with the same text before its first colon.
  std::vector<std::string> notes() const {
    std::vector<std::string> n = previous_notes_;
    auto add = [&](const std::string& s) {
      auto key = s.substr(0, s.find(':'));
      auto same = std::find_if(n.begin(), n.end(), [&](auto& o) { return o.substr(0, o.find(':')) == key; });
      if (same == n.end())
        n.push_back(s);
      else
        *same = s;
    };
    add("TTFT: batch 1, the median of the repeats; batches and streams, the mean over every request (of every "
        "repeat), each from its own submit. vs X: this TTFT over X's in the same run and point (below 1: faster). "
        "best single: the better of compute_only and load_only.");
    add("Tiers: host (pinned host pool), disk (O_DIRECT, no host tier), N (the disk paced to N Gbit/s; its files "
        "under the record's tier_dir), mixed[:N] (a host pool for half of the point's cached chunks in front of the "
        "disk, paced to N Gbit/s if given: prompts primed one after another, so the LRU keeps the later chunks in "
        "host and the disk holds every chunk; restores do not promote, so every policy sees the same split; "
        "host_share = bytes loaded from host over all loaded bytes).");
    add("Arrival: together, every prompt of the batch submitted at once; poisson, the batch column is the stream's "
        "request count, arrivals at exponential gaps (seeded, the same for every policy) at rate_per_s = "
        "poisson_load / service_s, where service_s is the mean TTFT of service_policy (kvflow's scheduler, "
        "two_pointer, unless --capacity-policy says otherwise) restoring the stream's own prompts one at a time, "
        "measured in this run just before the stream: the system's capacity, not a baseline's.");
    std::string tiers;
    for (auto& t : opt_.tiers) tiers += (tiers.empty() ? "" : ",") + t;
    if (!reference_.empty()) {
      std::string s = opt_.preset + " vs transformers: compute_only's batch-1 TTFT (the whole prompt recomputed in "
                      "chunks through the runtime) over PyTorch/transformers prefill of the same model and length "
                      "(prefill_reference.py" + (reference_device_.empty() ? "" : ", " + reference_device_) + "):";
      bool any = false;
      for (auto& j : records_)
        if (j["model"] == opt_.preset && !j.value("vs_transformers", json()).is_null()) {
          s += " " + std::to_string(j["context_tokens"].get<int>()) + " tok " + j["tier"].get<std::string>() + " " +
               fmt(j["vs_transformers"].get<double>(), "%.2fx") + ";";
          any = true;
        }
      if (any) add(s);
    }
    add(opt_.preset + " on " + tiers + ": " +
        (mismatches_ ? std::to_string(mismatches_) + " restores DIFFER from compute_only."
                     : std::string("every restore's ") + (opt_.no_digest ? "" : "KV digest and ") +
                           "first token equal compute_only's" +
                           (opt_.no_digest ? " (KV digests not checked: --no-digest)." : ".")));
    add("Device (" + opt_.preset + "): " + device_);
    return n;
  }

  std::string markdown() const {
    std::ostringstream md;
    md << "| model | context | suffix | chunk | tier | batch | arrival | policy | TTFT s | p99 s | vs compute_only | "
          "vs load_only | vs best single | vs oracle | vs bidirectional | vs transformers | computed | loaded | "
          "host GB | disk GB |\n";
    md << "|---|---:|---:|---:|---|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n";
    auto r = [](const json& v) { return v.is_null() ? std::string("-") : fmt(v.get<double>(), "%.2fx"); };
    for (auto& j : records_)
      md << "| " << j["model"].get<std::string>() << " | " << j["context_tokens"] << " | " << j["suffix_tokens"]
         << " | " << j.value("chunk_tokens", 0) << " | " << j["tier"].get<std::string>() << " | " << j["batch"] << " | "
         << j.value("arrival", "together") << " | " << j["policy"].get<std::string>() << " | " << fmt(j["ttft_s"])
         << " | " << fmt(j["ttft_p99_s"]) << " | " << r(j["ttft_vs_compute_only"]) << " | "
         << r(j.value("ttft_vs_load_only", json())) << " | " << r(j["ttft_vs_best_single"]) << " | "
         << r(j["ttft_vs_oracle"]) << " | " << r(j["ttft_vs_bidirectional"]) << " | "
         << r(j.value("vs_transformers", json())) << " | " << j["cells_computed"] << " | " << j["cells_loaded"]
         << " | " << fmt(j.value("gb_from_host", 0.0), "%.2f") << " | " << fmt(j.value("gb_from_disk", 0.0), "%.2f")
         << " |\n";
    md << "\n";
    for (auto& n : notes()) md << n << "\n\n";
    if (!traces_.empty()) {
      md << "Timelines (Chrome trace format; open in https://ui.perfetto.dev):";
      for (auto& t : traces_)
        md << " " << t["file"].get<std::string>() << " (" << t["model"].get<std::string>() << " "
           << t["context_tokens"] << " tok, tier " << t["tier"].get<std::string>() << ", batch " << t["batch"] << ");";
      md << "\n";
    }
    return md.str();
  }

  void write_out(const std::string& table, bool say) const {
    std::filesystem::create_directories(opt_.out_dir);
    auto json_path = std::filesystem::path(opt_.out_dir) / "restore.json";
    auto md_path = std::filesystem::path(opt_.out_dir) / "restore.md";
    // "traces": the file names (plot_restore.py reads every key with "trace"
    // in it as names); "timelines": what each shows.
    json names = json::array();
    for (auto& t : traces_) names.push_back(t["file"]);
    json doc = {{"records", records_}, {"traces", names}, {"timelines", traces_}, {"notes", notes()},
                {"device", device_}};
    if (!opt_.references.empty()) doc["reference"] = opt_.references;
    // Written aside and renamed, so that a run killed mid-write keeps the
    // previous complete file.
    auto tmp_json = json_path.string() + ".tmp", tmp_md = md_path.string() + ".tmp";
    {
      std::ofstream js(tmp_json), md(tmp_md);
      js << doc.dump(1) << "\n";
      md << table;
      if (!js || !md) throw error(errc::io_failure, "cannot write " + tmp_json + " or " + tmp_md);
    }
    std::filesystem::rename(tmp_json, json_path);
    std::filesystem::rename(tmp_md, md_path);
    if (say) std::cerr << "wrote " << json_path.string() << " and " << md_path.string() << "\n";
  }

  bench_options opt_;
  model::config cfg_;
  std::vector<std::string> policies_;
  std::vector<tier_config> tiers_;
  std::vector<json> records_, traces_;
  std::vector<std::string> previous_notes_;
  std::map<std::pair<std::string, int>, double> reference_;  // (model, tokens) -> transformers prefill s
  std::string reference_device_;
  std::set<std::string> traced_;
  int trace_batch_ = 0;
  std::string device_;
  std::string tier_root_;  // where the current tier's chunk files lie
  std::string disk_dir_;   // the current runtime's chunk files
  std::unique_ptr<app::node_cluster> cluster_;  // the remote tier's node, for remote:N
  bool remote_tier_ = false;
  double remote_gbps_ = 0, link_raw_gbps_ = 0;
  int runtimes_ = 0;
  int suffix_ = 256;  // the --suffix-tokens value being run
  bool kv_type_known_ = false;
  model::dtype kv_type_ = model::dtype::f32;
  progress progress_;
  int mismatches_ = 0;
};

}  // namespace

command_runner add_bench_command(CLI::App& app) {
  auto opt = std::make_shared<bench_options>();
  auto* cmd = app.add_subcommand(
      "bench",
      "Measure restore TTFT per policy through the runtime. Per tier and context: prime the cache with the prompts' "
      "prefixes, restore the full prompts under every policy (batch 1, then batches arriving together, then an "
      "optional Poisson stream) and compare them in the same run (KV digests and first tokens checked against "
      "compute_only). Writes restore.json and restore.md to --out after every point, and a Chrome trace of one "
      "batched restore per traced policy.\n\nExample (CPU): kvflow bench --preset tiny-test --backend cpu "
      "--contexts 1024,2048 --suffix-tokens 64 --chunk-tokens 128 --tiers host,disk,10,mixed --batch 1,4 "
      "--poisson 6 --repeats 1 --out /tmp/bench");
  cmd->add_option("--preset", opt->preset, "Model preset with random weights (tiny-test, smollm2-135m, llama-3-8b, ...)")
      ->capture_default_str();
  cmd->add_option("--backend", opt->backend, "cpu, cuda or auto")->capture_default_str();
  cmd->add_option("--threads", opt->threads, "CPU backend threads (0: all cores)")->capture_default_str();
  cmd->add_option("--seed", opt->seed, "Seed of the weights, the prompts and the arrivals")->capture_default_str();
  cmd->add_option("--contexts", opt->contexts,
                  "Prompt lengths in tokens (batches and streams mix lengths from 4k up to these); at most the "
                  "preset's positions minus one")
      ->delimiter(',')
      ->capture_default_str();
  cmd->add_option("--suffix-tokens", opt->suffix_tokens,
                  "Uncached tokens at the end of every prompt; several values sweep it (each a full run)")
      ->delimiter(',')
      ->capture_default_str();
  cmd->add_option("--chunk-tokens", opt->chunk_tokens, "Tokens per chunk")->capture_default_str();
  cmd->add_option("--tiers", opt->tiers,
                  "Where the cached prefix lies: host (pinned pool), disk (O_DIRECT), N (the disk paced to N "
                  "Gbit/s), mixed or mixed:N (a host pool for half of each point's prompts in front of the disk, "
                  "paced to N Gbit/s: part of each batch restores from host, part from disk), remote:N (a kvflow node in a "
                  "network namespace of its own behind a veth pair shaped to N Gbit/s by tc; root and ip/tc needed)")
      ->delimiter(',')
      ->capture_default_str();
  cmd->add_option("--policies", opt->policies, "Policies to compare (compute_only and load_only run first, oracle last)")
      ->delimiter(',')
      ->capture_default_str();
  cmd->add_option("--batch", opt->batches, "Batch sizes; a batch > 1 submits that many distinct prompts at once")
      ->delimiter(',')
      ->capture_default_str();
  cmd->add_option("--batch-tiers", opt->batch_tiers, "Tiers that run batches > 1 and the Poisson stream (default: every tier)")
      ->delimiter(',');
  cmd->add_option("--repeats", opt->repeats, "Runs per policy and batch (batch 1 reports the median); a stream runs once")
      ->capture_default_str();
  cmd->add_option("--poisson", opt->poisson,
                  "Requests of a Poisson stream per context and batch tier, after the batches (0: none)")
      ->capture_default_str();
  cmd->add_option("--poisson-load", opt->poisson_load,
                  "The stream's arrival rate over the capacity, measured first: requests per second restored one at "
                  "a time under --capacity-policy on the stream's prompts")
      ->capture_default_str();
  cmd->add_option("--capacity-policy", opt->capacity_policy,
                  "Policy that restores the stream's prompts one at a time to measure capacity (requests/s)")
      ->capture_default_str();
  cmd->add_option("--trace-batch", opt->trace_batch,
                  "Batch size whose first repeat is traced (OUT/restore_trace_<policy>.json, Chrome trace format "
                  "for Perfetto) on the first tier and context where it runs; 0: the largest batch, -1: none")
      ->capture_default_str();
  cmd->add_option("--trace-policies", opt->trace_policies, "Policies traced")->delimiter(',')->capture_default_str();
  cmd->add_option("--trace-context", opt->trace_context,
                  "Context whose batch is traced (0: the first where the batch runs)")
      ->capture_default_str();
  cmd->add_option("--reference", opt->references,
                  "prefill_reference.py's JSON (files, comma-separated): adds transformers_s to every record and vs_transformers (compute_only "
                  "batch-1 TTFT over transformers prefill of the same model and length)")
      ->delimiter(',');
  cmd->add_flag("--no-digest", opt->no_digest,
                "Check first tokens only, not KV digests (a digest copies and hashes the whole prompt's KV: seconds "
                "per large restore)");
  cmd->add_flag("--append", opt->append, "Keep the records, traces and notes of --out's restore.json and add to them");
  cmd->add_option("--out", opt->out_dir, "Folder for restore.json, restore.md and trace files");
  cmd->add_option("--disk-root", opt->disk_root, "Folder for the disk tier's chunk files (default: the temp folder)");
  cmd->add_option("--paced-root", opt->paced_root,
                  "Folder for paced tiers' chunk files (default: --disk-root); e.g. /dev/shm, so that a pace above "
                  "the local disk's rate holds");
  cmd->add_option("--device-name", opt->device_name, "Name of the machine or GPU, prefixed to the records' device");
  return [opt] { return bench(*opt).run(); };
}

}  // namespace kvflow::app
