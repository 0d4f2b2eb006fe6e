// `kvflow bench`: restoration measured through the runtime. For every tier
// configuration, context length and batch size it primes the cache with the
// prompts' prefixes, then restores the full prompts under every policy
// (store=false, so every policy sees the same cache) and records TTFT; then,
// optionally, a Poisson stream of mixed-length prompts at a set share of the
// measured capacity. Each restore's KV digest and first token are checked
// against compute_only's. Writes restore.json, restore.md and Chrome trace
// files of one batched restore per traced policy.

#include <unistd.h>
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

#include <nlohmann/json.hpp>

#include "actors/runtime.hpp"
#include "apps/bench_records.hpp"
#include "apps/bench_trace.hpp"
#include "apps/commands.hpp"
#include "apps/node_cluster.hpp"
#include "kernels/model/config.hpp"
#include "kernels/model/kv_layout.hpp"
#include "messages/error.hpp"

namespace kvflow::app {
namespace {

using clock_type = std::chrono::steady_clock;
using json = nlohmann::json;

struct bench_options {
  std::string preset = "llama-3-8b";
  std::string backend = "auto";
  int threads = 0;
  std::uint64_t seed = 1;
  std::vector<int> contexts{16384};
  std::vector<int> suffix_tokens{256};  // swept: each value is a full run of the other axes
  int chunk_tokens = 256;
  std::size_t max_compute_cells = 0;  // runtime_options::max_compute_cells; 0: the runtime's default
  int compute_group_tokens = 0;       // runtime_options::compute_group_tokens; 0: the runtime's default
  double rate_pool_ms = -1;           // runtime_options::rate_pool_ms; negative: the runtime's default
  double admission_window_ms = -1;    // runtime_options::admission_window_ms; negative: the runtime's default
  std::vector<std::string> tiers{"disk", "25", "10"};
  std::vector<std::string> policies = kvflow::policies::policy_names();
  std::vector<int> batches{1};
  std::vector<std::string> batch_tiers;  // tiers that run batches > 1 and streams; empty: all
  int repeats = 3;
  int batch_repeats = 0;                                            // runs of a batch > 1; 0: repeats
  int poisson = 0;                                                  // requests of the Poisson stream; 0: none
  double poisson_load = 0.7;                                        // arrival rate over the measured capacity
  std::string capacity_policy = name_of(policy_kind::two_pointer);  // restores the stream serially to measure capacity
  int trace_batch = 0;                                              // 0: the largest batch; negative: no trace
  std::vector<std::string> trace_policies{name_of(policy_kind::two_pointer), name_of(policy_kind::bidirectional)};
  int trace_context = 0;                // 0: the first context where the batch runs
  std::vector<std::string> references;  // prefill_reference.py's JSON files
  bool no_digest = false;
  bool append = false;
  std::string out_dir;
  std::string device_name;                              // e.g. the GPU's name, for the records
  std::string disk_root;                                // folder of the disk tier's chunk files; empty: the temp folder
  std::size_t ucx_lanes = runtime_options{}.ucx_lanes;  // remote:N, both ends
  int link_mtu = 0;                                     // remote:N: the veth pair's MTU; 0: the kernel's 1500
  std::string wire_compression = "auto";                // remote:N: the node's --wire-compression
  std::uint32_t load_queue_chunks = 2;                  // loads in flight per link, in chunks
  std::string paced_root;                               // same for paced tiers; empty: disk_root
  int stages = 0;                                       // layer-pipeline stages; 0 or 1: none
  std::string stage_link;  // hand-off between stages: host or nccl; empty: the runtime's default

  // Per stage: host:port of a node serving it, or "local".
  std::vector<std::string> stage_nodes;
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
  throw error(
      errc::invalid_argument,
      "--tiers: '" + s + "' is not host, disk, a positive Gbit/s rate, mixed, mixed:<Gbit/s> or remote:<Gbit/s>");
}

std::vector<std::int32_t> random_tokens(std::mt19937_64& rng, int count, int vocab) {
  std::uniform_int_distribution<int> pick(0, vocab - 1);
  std::vector<std::int32_t> t(count);
  for (auto& x : t) x = pick(rng);
  return t;
}

// compute_only and load_only first, oracle last: the oracle reads the rates
// the runtime's cost model observed in the earlier runs.
std::vector<std::string> run_order(std::vector<std::string> p) {
  auto rank = [](const std::string& s) {
    return is(s, policy_kind::compute_only) ? 0
           : is(s, policy_kind::load_only)  ? 1
           : is(s, policy_kind::oracle)     ? 3
                                            : 2;
  };
  std::stable_sort(p.begin(), p.end(), [&](auto& a, auto& b) { return rank(a) < rank(b); });
  return p;
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
        throw error(errc::invalid_argument, "--contexts: " + std::to_string(c) +
                                                " tokens plus the first new one exceed " + opt_.preset + "'s " +
                                                std::to_string(cfg_.max_positions) + " positions (use at most " +
                                                std::to_string(cfg_.max_positions - 1) + ")");
    }
    for (int b : opt_.batches)
      if (b <= 0) throw error(errc::invalid_argument, "--batch: " + std::to_string(b) + " is not positive");
    if (opt_.poisson < 0 || (opt_.poisson > 0 && !(opt_.poisson_load > 0)))
      throw error(errc::invalid_argument, "--poisson must be >= 0 and --poisson-load positive");
    policies_ = run_order(opt_.policies);
    for (auto& t : opt_.tiers) tiers_.push_back(parse_tier(t));
    trace_batch_ = opt_.trace_batch;
    if (trace_batch_ == 0) trace_batch_ = *std::max_element(opt_.batches.begin(), opt_.batches.end());
    facts_.preset = opt_.preset;
    facts_.chunk_tokens = opt_.chunk_tokens;
    facts_.kv_digest_checked = !opt_.no_digest;
    facts_.tiers = opt_.tiers;
    facts_.reference_files = opt_.references;
    facts_.stages = opt_.stages;
    facts_.stage_link = opt_.stage_link;
    for (auto& f : opt_.references) records_.read_reference(f);
    if (opt_.append && !opt_.out_dir.empty()) records_.read_previous(opt_.out_dir);
    std::size_t total = 0;
    for (auto& t : tiers_) {
      for (int b : opt_.batches)
        if (batch_runs_on(b, t.name)) total += opt_.contexts.size() * policies_.size() * repeats_of(b);
      if (poisson_on(t.name)) total += opt_.contexts.size() * (policies_.size() + 1);  // + the capacity run
    }
    progress_.set_total(total * opt_.suffix_tokens.size());
  }

  int run() {
    for (int suffix : opt_.suffix_tokens) {
      facts_.suffix_tokens = suffix;
      for (auto& t : tiers_) run_tier(t);
    }
    progress_.close();
    auto table = records_.markdown();
    std::cout << table;
    if (!opt_.out_dir.empty()) records_.write(opt_.out_dir, table, true);
    if (facts_.mismatches) std::cerr << "kvflow bench: " << facts_.mismatches << " restores differ from compute_only\n";
    return facts_.mismatches ? 1 : 0;
  }

 private:
  bool batch_runs_on(int b, const std::string& tier) const { return b == 1 || stream_runs_on(tier); }
  bool stream_runs_on(const std::string& tier) const {
    return opt_.batch_tiers.empty() ||
           std::find(opt_.batch_tiers.begin(), opt_.batch_tiers.end(), tier) != opt_.batch_tiers.end();
  }
  bool poisson_on(const std::string& tier) const { return opt_.poisson > 0 && stream_runs_on(tier); }

  // The KV element type of the engine the runtime picks: f32 on the CPU,
  // bf16 on CUDA.
  model::dtype kv_type() const {
    return resolve_backend(opt_.backend) == backend_kind::cuda ? model::dtype::bf16 : model::dtype::f32;
  }
  double kv_bytes(int tokens) { return static_cast<double>(model::kv_shape_of(cfg_, tokens, kv_type()).bytes()); }

  // The cached prefixes of the prompts one point restores.
  double prefix_bytes(const prompt_list& prompts) {
    double sum = 0;
    for (auto& p : prompts) sum += kv_bytes(static_cast<int>(p.size()) - facts_.suffix_tokens);
    return sum;
  }
  // The most any point of this tier restores (the prompts are drawn the same
  // way again): the host pool holds it, the disk keeps it (and drops older
  // points' files, least recently used first, beyond 1.25 times that).
  double tier_bytes_needed(const tier_config& t) {
    double most = 0;
    for (int ctx : opt_.contexts) {
      for (int b : opt_.batches)
        if (batch_runs_on(b, t.name))
          most = std::max(most, prefix_bytes(make_prompts(ctx, b, static_cast<std::uint64_t>(b))));
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
      int n = count == 1 ? ctx : std::max(len(rng) * opt_.chunk_tokens, facts_.suffix_tokens + opt_.chunk_tokens + 1);
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
    ro.load_queue_chunks = opt_.load_queue_chunks;
    facts_.load_queue_chunks = opt_.load_queue_chunks;
    ro.max_compute_cells = opt_.max_compute_cells;
    ro.compute_group_tokens = opt_.compute_group_tokens;
    facts_.compute_group_tokens = opt_.compute_group_tokens;
    ro.rate_pool_ms = opt_.rate_pool_ms;
    facts_.rate_pool_ms = opt_.rate_pool_ms;
    if (opt_.admission_window_ms >= 0) ro.admission_window_ms = opt_.admission_window_ms;
    facts_.admission_window_ms = opt_.admission_window_ms;
    ro.policy = name_of(policy_kind::two_pointer);
    ro.stages = opt_.stages;
    ro.stage_link = opt_.stage_link;
    ro.stage_nodes = opt_.stage_nodes;
    ro.host_tier_gb = host_bytes / 1e9;
    ro.disk_gbps = t.gbps;
    ro.disk_tier_gb = std::max(4.0, tier_bytes_needed(t) * 1.25 / 1e9);
    // A paced tier stands for remote storage: its files may lie on a faster
    // medium (tmpfs) than the pace, so that the pace is the bottleneck.
    std::string root = t.gbps > 0 && !opt_.paced_root.empty() ? opt_.paced_root : opt_.disk_root;
    if (root.empty()) root = std::filesystem::temp_directory_path().string();
    facts_.tier_root = root;
    disk_dir_ = (std::filesystem::path(root) /
                 ("kvflow-bench-" + std::to_string(::getpid()) + "-" + std::to_string(runtimes_++)))
                    .string();
    std::filesystem::remove_all(disk_dir_);
    ro.disk_dir = disk_dir_;
    remote_tier_ = t.remote;
    facts_.remote_tier = t.remote;
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
      co.mtu = opt_.link_mtu;
      co.node_args = {"--host-gb",          std::to_string(tier_bytes_needed(t) * 1.25 / 1e9 + 1),
                      "--ucx-lanes",        std::to_string(opt_.ucx_lanes),
                      "--wire-compression", opt_.wire_compression};
      facts_.wire_compression = opt_.wire_compression;
      cluster_ = std::make_unique<app::node_cluster>(co);
      if (!cluster_->namespaced())
        progress_.say("warning: tier " + t.name +
                      ": no network namespace here (root and ip/tc needed): unshaped loopback");
      remote_gbps_ = t.gbps;
      facts_.link_gbps = t.gbps;
      // About a second of traffic at the shaped rate: one TCP stream, and as
      // many streams as the UCX lanes (what the loads use).
      const auto raw_bytes = static_cast<std::size_t>(std::max(16e6, t.gbps * 1e9 / 8));
      facts_.link_raw_1stream_gbps = cluster_->measure_gbps(raw_bytes);
      link_raw_gbps_ = cluster_->measure_gbps(raw_bytes, static_cast<int>(opt_.ucx_lanes));
      facts_.link_raw_gbps = link_raw_gbps_;
      facts_.ucx_lanes = opt_.ucx_lanes;
      facts_.link_mtu = opt_.link_mtu > 0 ? opt_.link_mtu : 1500;
      progress_.say(cluster_->describe() + ", raw TCP " + fmt(facts_.link_raw_1stream_gbps) + " Gbit/s (1 stream), " +
                    fmt(link_raw_gbps_) + " Gbit/s (" + std::to_string(opt_.ucx_lanes) + " streams)");
      ro.cluster_members = cluster_->members();
      ro.ucx_tls = cluster_->ucx_tls();
      ro.ucx_devices = cluster_->ucx_devices();
      ro.ucx_lanes = opt_.ucx_lanes;
      ro.cluster_cert = cluster_->tls_cert();
      ro.cluster_key = cluster_->tls_key();
      ro.cluster_ca = cluster_->tls_ca();
    }
    progress_.clear_line();
    auto rt = std::make_unique<runtime>(ro);
    if (facts_.device.empty()) {
      facts_.device = rt->describe_engine();
      if (!opt_.device_name.empty()) facts_.device = opt_.device_name + ", " + facts_.device;
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
    for (auto& p : prompts) chunks += (static_cast<int>(p.size()) - facts_.suffix_tokens) / opt_.chunk_tokens;
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
    so.policy = name_of(policy_kind::compute_only);
    so.max_new_tokens = 1;
    so.store = true;
    auto prefix = [&](const std::vector<std::int32_t>& p, std::size_t n) {
      return std::vector<std::int32_t>(p.begin(), p.begin() + static_cast<std::ptrdiff_t>(n));
    };
    if (pool_blocks > 0) {
      for (auto& p : prompts) {
        std::size_t cached = p.size() - facts_.suffix_tokens;
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
    for (auto& p : prompts) primed.push_back(rt.submit(prefix(p, p.size() - facts_.suffix_tokens), so));
    for (auto& f : primed) f.get();
    rt.flush();
  }

  int repeats_of(int batch) const { return batch > 1 && opt_.batch_repeats > 0 ? opt_.batch_repeats : opt_.repeats; }

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
    const auto before = rt.remote_wire_totals();
    std::vector<std::future<restore_report>> futs;
    auto t0 = clock_type::now();
    for (std::size_t i = 0; i < prompts.size(); ++i) {
      if (arrivals) std::this_thread::sleep_until(t0 + std::chrono::duration<double>((*arrivals)[i]));
      run.submit_s.push_back(std::chrono::duration<double>(clock_type::now() - t0).count());
      futs.push_back(rt.submit(prompts[i], so));
    }
    for (auto& f : futs) run.reports.push_back(f.get());
    const auto after = rt.remote_wire_totals();
    run.wire_raw_bytes = after.raw_bytes - before.raw_bytes;
    run.wire_bytes = after.wire_bytes - before.wire_bytes;
    return run;
  }

  // Against compute_only's restore of the same prompt (the first one seen).
  void check(std::vector<restore_report>& reference, const restore_report& r, std::size_t i, const std::string& policy,
             const tier_config& t) {
    if (reference[i].first_token < 0) reference[i] = r;
    if (r.kv_sha256 != reference[i].kv_sha256 || r.first_token != reference[i].first_token) {
      facts_.mismatches++;
      progress_.say("MISMATCH: " + policy + " prompt " + std::to_string(i) + " (" + std::to_string(r.prompt_tokens) +
                    " tokens): kv " + r.kv_sha256.substr(0, 12) + " first token " + std::to_string(r.first_token) +
                    ", " + reference[i].policy + " has kv " + reference[i].kv_sha256.substr(0, 12) + " first token " +
                    std::to_string(reference[i].first_token));
    }
    if (is(policy, policy_kind::load_only) && t.host && r.bytes_from_disk > 0)
      progress_.say("warning: host tier: load_only read " + std::to_string(r.bytes_from_disk) + " bytes from disk");
  }

  std::string label(int ctx, const tier_config& t, int batch, const std::string& what) const {
    std::string suffix = opt_.suffix_tokens.size() > 1 ? " suffix " + std::to_string(facts_.suffix_tokens) : "";
    return opt_.preset + " ctx " + std::to_string(ctx) + suffix + " tier " + t.name + " batch " +
           std::to_string(batch) + " " + what;
  }

  void run_point(runtime& rt, int ctx, const tier_config& t, const prompt_list& prompts, int pool_blocks) {
    int batch = static_cast<int>(prompts.size());
    prime(rt, prompts, pool_blocks);
    std::vector<restore_report> reference(batch);  // compute_only's, per prompt
    std::map<std::string, point> points;
    for (int rep = 0; rep < repeats_of(batch); ++rep) {
      for (auto& policy : policies_) {
        auto so = restore_options(policy);
        bool trace =
            rep == 0 && batch == trace_batch_ && !traced_.count(policy) &&
            (opt_.trace_context == 0 || opt_.trace_context == ctx) &&
            std::find(opt_.trace_policies.begin(), opt_.trace_policies.end(), policy) != opt_.trace_policies.end();
        // compute_only's and load_only's spans give the bound's costs (a
        // batch's: its own compute costs and link rate).
        so.trace = trace || remote_tier_ || is(policy, policy_kind::load_only) || is(policy, policy_kind::compute_only);
        progress_.start(label(ctx, t, batch, policy) + (trace ? " (traced)" : ""));
        auto run = restore(rt, prompts, so);
        double mean = account(points[policy], run, reference, ctx, t, policy);
        progress_.finish(fmt(mean) + " s");
        if (trace) {
          traced_.insert(policy);
          write_trace(ctx, t, policy, run);
        }
      }
    }
    add_records(points, prompts, {{"arrival", "together"}, {"rate_per_s", nullptr}});
  }

  // Adds one run of every prompt to its point (after checking each report
  // against compute_only's); returns the run's mean TTFT.
  double account(point& pt, const restore_run& run, std::vector<restore_report>& reference, int ctx,
                 const tier_config& t, const std::string& policy) {
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
      if (is(policy, policy_kind::compute_only) || (n == 1 && is(policy, policy_kind::load_only)))
        pt.add_costs(run.reports[i]);
    }
    if (is(policy, policy_kind::load_only)) pt.add_link(run.reports);
    pt.per_repeat_mean.push_back(sum / n);
    pt.wire_raw_bytes += static_cast<double>(run.wire_raw_bytes);
    pt.wire_bytes += static_cast<double>(run.wire_bytes);
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

  void add_records(std::map<std::string, point>& points, const prompt_list& prompts, const json& extra) {
    records_.add(points, policies_, prompts, extra, [this](const std::string& s) { progress_.say(s); });
    // Written after every point, so that a run cut short keeps what it measured.
    if (!opt_.out_dir.empty()) records_.write(opt_.out_dir, records_.markdown(), false);
  }
  // One file per traced policy, listed in the records.
  void write_trace(int ctx, const tier_config& t, const std::string& policy, const restore_run& run) {
    if (opt_.out_dir.empty()) return;
    trace_facts f;
    f.preset = opt_.preset;
    f.tier = t.name;
    f.policy = policy;
    f.device = facts_.device;
    f.context_tokens = ctx;
    f.layers = cfg_.layers;
    f.chunk_tokens = opt_.chunk_tokens;
    f.suffix_tokens = facts_.suffix_tokens;
    json doc = chrome_trace(f, run);
    std::string file = "restore_trace_" + policy + ".json";
    std::filesystem::create_directories(opt_.out_dir);
    auto path = std::filesystem::path(opt_.out_dir) / file;
    std::ofstream out(path);
    out << doc.dump() << "\n";
    if (!out) throw error(errc::io_failure, "cannot write " + path.string());
    records_.add_trace({{"file", file},
                        {"model", opt_.preset},
                        {"policy", policy},
                        {"tier", t.name},
                        {"context_tokens", ctx},
                        {"batch", run.reports.size()},
                        {"chunk_tokens", opt_.chunk_tokens}});
  }
  bench_options opt_;
  model::config cfg_;
  std::vector<std::string> policies_;
  std::vector<tier_config> tiers_;
  run_facts facts_;
  bench_records records_{facts_};
  std::unique_ptr<app::node_cluster> cluster_;  // the remote tier's node, for remote:N
  bool remote_tier_ = false;
  double remote_gbps_ = 0, link_raw_gbps_ = 0;
  std::set<std::string> traced_;
  int trace_batch_ = 0;
  std::string disk_dir_;  // the current runtime's chunk files
  int runtimes_ = 0;
  progress progress_;
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
  cmd->add_option("--preset", opt->preset,
                  "Model preset with random weights (tiny-test, smollm2-135m, llama-3-8b, ...)")
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
  cmd->add_option("--max-compute-cells", opt->max_compute_cells,
                  "Compute cells in flight on the GPU (0: the runtime's default; compute_only grants half)")
      ->capture_default_str();
  cmd->add_option("--compute-group-tokens", opt->compute_group_tokens,
                  "Tokens of adjacent chunks one compute grant spans, run as one forward (0: the runtime's default, "
                  "2048 on CUDA)")
      ->check(CLI::Range(0, 1 << 20))
      ->capture_default_str();
  cmd->add_option("--rate-pool-ms", opt->rate_pool_ms,
                  "Milliseconds of link time over which the cost model pools a tier's load samples of one size "
                  "(0: each alone; negative: the runtime's default, 8)")
      ->capture_default_str();
  cmd->add_option("--admission-window-ms", opt->admission_window_ms,
                  "Milliseconds a registration into an idle scheduler holds the links, so that a batch submitted "
                  "together is planned together (0: none; negative: the runtime's default, 0)")
      ->check(CLI::Range(-1.0, 1000.0))
      ->capture_default_str();
  cmd->add_option(
         "--tiers", opt->tiers,
         "Where the cached prefix lies: host (pinned pool), disk (O_DIRECT), N (the disk paced to N "
         "Gbit/s), mixed or mixed:N (a host pool for half of each point's prompts in front of the disk, "
         "paced to N Gbit/s: part of each batch restores from host, part from disk), remote:N (a kvflow node in a "
         "network namespace of its own behind a veth pair shaped to N Gbit/s by tc; root and ip/tc needed)")
      ->delimiter(',')
      ->capture_default_str();
  cmd->add_option("--policies", opt->policies,
                  "Policies to compare (compute_only and load_only run first, oracle last)")
      ->delimiter(',')
      ->capture_default_str();
  cmd->add_option("--batch", opt->batches, "Batch sizes; a batch > 1 submits that many distinct prompts at once")
      ->delimiter(',')
      ->capture_default_str();
  cmd->add_option("--batch-tiers", opt->batch_tiers,
                  "Tiers that run batches > 1 and the Poisson stream (default: every tier)")
      ->delimiter(',');
  cmd->add_option("--repeats", opt->repeats,
                  "Runs per policy and batch (batch 1 reports the median); a stream runs once")
      ->capture_default_str();
  cmd->add_option("--batch-repeats", opt->batch_repeats, "Runs per policy of a batch > 1 (0: --repeats)")
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
                  "prefill_reference.py's JSON (files, comma-separated): adds transformers_s to every record and "
                  "vs_transformers (compute_only "
                  "batch-1 TTFT over transformers prefill of the same model and length)")
      ->delimiter(',');
  cmd->add_flag("--no-digest", opt->no_digest,
                "Check first tokens only, not KV digests (a digest copies and hashes the whole prompt's KV: seconds "
                "per large restore)");
  cmd->add_flag("--append", opt->append, "Keep the records, traces and notes of --out's restore.json and add to them");
  cmd->add_option("--stages", opt->stages,
                  "Layer-pipeline stages: the model's layers split evenly over N stage actors, each with its own "
                  "engine and tier links (on one GPU: device 0 for all); records report the hand-off cost per chunk")
      ->check(CLI::Range(0, 1024))
      ->capture_default_str();
  cmd->add_option("--stage-link", opt->stage_link,
                  "Hand-off between stages: host or nccl (default: nccl on CUDA, host on CPU)")
      ->check(CLI::IsMember({"host", "nccl"}));
  cmd->add_option("--stage-nodes", opt->stage_nodes,
                  "Where each of the --stages runs, comma-separated: local, or host:port of a `kvflow node "
                  "--stage-layers` serving that stage's layers of the same model (e.g. local,10.0.0.2:4300)")
      ->delimiter(',');
  cmd->add_option("--ucx-lanes", opt->ucx_lanes, "remote:N: UCX workers (threads, TCP connections) at each end")
      ->check(CLI::Range(1, 64))
      ->capture_default_str();
  cmd->add_option("--link-mtu", opt->link_mtu,
                  "remote:N: MTU of the veth pair (0: the kernel's 1500; 9000: jumbo frames, fewer header bytes "
                  "in the shaped rate)")
      ->check(CLI::Range(0, 65535));
  cmd->add_option("--load-queue-chunks", opt->load_queue_chunks,
                  "Loads the policies keep in flight per link, in chunks' bytes (runtime_options::load_queue_chunks)")
      ->check(CLI::Range(1, 64))
      ->capture_default_str();
  cmd->add_option("--wire-compression", opt->wire_compression,
                  "remote:N: the node's --wire-compression (auto, on, off): KV sent losslessly compressed")
      ->check(CLI::IsMember({"auto", "on", "off"}))
      ->capture_default_str();
  cmd->add_option("--out", opt->out_dir, "Folder for restore.json, restore.md and trace files");
  cmd->add_option("--disk-root", opt->disk_root, "Folder for the disk tier's chunk files (default: the temp folder)");
  cmd->add_option("--paced-root", opt->paced_root,
                  "Folder for paced tiers' chunk files (default: --disk-root); e.g. /dev/shm, so that a pace above "
                  "the local disk's rate holds");
  cmd->add_option("--device-name", opt->device_name, "Name of the machine or GPU, prefixed to the records' device");
  return [opt] { return bench(*opt).run(); };
}

}  // namespace kvflow::app
