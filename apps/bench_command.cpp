// `kvflow bench`: restoration measured through the runtime. For every tier
// configuration, context length and batch size it primes the cache with the
// prompts' prefixes, then restores the full prompts under every policy
// (store=false, so every policy sees the same cache) and records TTFT. Each
// restore's KV digest and first token are checked against compute_only's.

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <future>
#include <iostream>
#include <map>
#include <random>
#include <sstream>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include "actors/runtime.hpp"
#include "apps/commands.hpp"
#include "kernels/model/config.hpp"
#include "kernels/model/kv_layout.hpp"
#include "messages/error.hpp"

namespace kvflow::app {
namespace {

struct bench_options {
  std::string preset = "llama-3-8b";
  std::string backend = "auto";
  int threads = 0;
  std::uint64_t seed = 1;
  std::vector<int> contexts{16384};
  int suffix_tokens = 256;
  int chunk_tokens = 256;
  std::vector<std::string> tiers{"disk", "25", "10"};
  std::vector<std::string> policies{"compute_only", "load_only", "bidirectional", "two_pointer", "oracle"};
  std::vector<int> batches{1};
  std::vector<std::string> batch_tiers;  // tiers that run batches > 1; empty: all
  int repeats = 3;
  std::string out_dir;
  std::string device_name;  // e.g. the GPU's name, for the records
  std::string disk_root;    // folder of the disk tier's chunk files; empty: the temp folder
  std::string paced_root;   // same for paced tiers; empty: disk_root
};

// One tier configuration: "host" (pinned host pool), "disk" (unpaced,
// O_DIRECT) or a number (the disk paced to that many Gbit/s).
struct tier_config {
  std::string name;
  bool host = false;
  double gbps = 0;
};

tier_config parse_tier(const std::string& s) {
  if (s == "host" || s == "disk") return {s, s == "host", 0};
  try {
    std::size_t used = 0;
    double g = std::stod(s, &used);
    if (used == s.size() && g > 0) return {s, false, g};
  } catch (const std::exception&) {
  }
  throw error(errc::invalid_argument, "--tiers: '" + s + "' is not host, disk or a positive Gbit/s rate");
}

// The measurements of one (context, tier, batch, policy) point.
struct point {
  int context = 0;
  std::string tier;
  int batch = 0;
  std::string policy;
  std::vector<double> per_repeat_mean;  // mean TTFT of the batch, per repeat
  std::vector<double> all_ttft;         // every request of every repeat
  double computed = 0, loaded = 0, host_bytes = 0, disk_bytes = 0;  // sums over requests
  double mean() const {  // batch 1: median of repeats; batches: mean of all requests
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

class bench {
 public:
  explicit bench(bench_options o) : opt_(std::move(o)), cfg_(model::preset(opt_.preset)) {
    if (opt_.chunk_tokens <= 0 || opt_.suffix_tokens <= 0 || opt_.repeats <= 0)
      throw error(errc::invalid_argument, "--chunk-tokens, --suffix-tokens and --repeats must be positive");
    for (int c : opt_.contexts)
      if (c <= opt_.suffix_tokens + opt_.chunk_tokens)
        throw error(errc::invalid_argument, "--contexts: " + std::to_string(c) +
                                                " leaves no cached chunk after a suffix of " +
                                                std::to_string(opt_.suffix_tokens) + " tokens");
    for (int b : opt_.batches)
      if (b <= 0) throw error(errc::invalid_argument, "--batch: " + std::to_string(b) + " is not positive");
    policies_ = run_order(opt_.policies);
    for (auto& t : opt_.tiers) tiers_.push_back(parse_tier(t));
    for (auto& t : tiers_)
      for (int b : opt_.batches)
        if (batch_runs_on(b, t.name)) total_ += opt_.contexts.size() * policies_.size() * opt_.repeats;
  }

  int run() {
    for (auto& t : tiers_) run_tier(t);
    auto table = markdown();
    std::cout << table;
    if (!opt_.out_dir.empty()) write_out(table, true);
    if (mismatches_) std::cerr << "kvflow bench: " << mismatches_ << " restores differ from compute_only\n";
    return mismatches_ ? 1 : 0;
  }

 private:
  bool batch_runs_on(int b, const std::string& tier) const {
    return b == 1 || opt_.batch_tiers.empty() ||
           std::find(opt_.batch_tiers.begin(), opt_.batch_tiers.end(), tier) != opt_.batch_tiers.end();
  }

  // Every prompt of every batch at once, in the worst case (f32 KV).
  double tier_bytes_needed() const {
    int max_ctx = *std::max_element(opt_.contexts.begin(), opt_.contexts.end());
    int max_batch = *std::max_element(opt_.batches.begin(), opt_.batches.end());
    return static_cast<double>(model::kv_shape::of(cfg_, max_ctx, model::dtype::f32).bytes()) * max_batch;
  }

  void run_tier(const tier_config& t) {
    runtime_options ro;
    ro.preset = opt_.preset;
    ro.seed = opt_.seed;
    ro.backend = opt_.backend;
    ro.threads = opt_.threads;
    ro.chunk_tokens = opt_.chunk_tokens;
    ro.policy = "two_pointer";
    // host: the pool holds every prompt, so loads never reach the disk;
    // otherwise no host tier, and every load reads the (paced) disk.
    ro.host_tier_gb = t.host ? tier_bytes_needed() * 1.25 / 1e9 + 0.5 : 0;
    ro.disk_gbps = t.gbps;
    ro.disk_tier_gb = std::max(32.0, tier_bytes_needed() * 1.25 / 1e9);
    // A paced tier stands for remote storage: its files may lie on a faster
    // medium (tmpfs) than the pace, so that the pace is the bottleneck.
    std::string root = t.gbps > 0 && !opt_.paced_root.empty() ? opt_.paced_root : opt_.disk_root;
    if (root.empty()) root = std::filesystem::temp_directory_path().string();
    tier_root_ = root;
    ro.disk_dir = (std::filesystem::path(root) / ("kvflow-bench-" + std::to_string(::getpid()) + "-" + t.name)).string();
    std::filesystem::remove_all(ro.disk_dir);
    {
      runtime rt(ro);
      if (device_.empty()) {
        // "kvflow: <model> (...) on <backend>", without the tier details.
        auto d = rt.describe();
        device_ = d.substr(0, d.find(", chunks of"));
        if (!opt_.device_name.empty()) device_ = opt_.device_name + ", " + device_;
      }
      for (int ctx : opt_.contexts)
        for (int b : opt_.batches)
          if (batch_runs_on(b, t.name)) run_point(rt, ctx, t.name, b);
    }
    std::error_code ec;
    std::filesystem::remove_all(ro.disk_dir, ec);
  }

  void run_point(runtime& rt, int ctx, const std::string& tier, int batch) {
    // Distinct random prompts (no shared prefix); a batch mixes lengths from
    // 4k (a quarter of short contexts) to the context, in whole chunks.
    std::mt19937_64 rng(opt_.seed * 1000003 + ctx * 31 + batch);
    int low = std::min(4096, ctx / 4);
    std::uniform_int_distribution<int> len(low / opt_.chunk_tokens, ctx / opt_.chunk_tokens);
    std::vector<std::vector<std::int32_t>> prompts;
    for (int i = 0; i < batch; ++i) {
      int n = batch == 1 ? ctx : std::max(len(rng) * opt_.chunk_tokens, opt_.suffix_tokens + opt_.chunk_tokens + 1);
      prompts.push_back(random_tokens(rng, n, cfg_.vocab_size));
    }
    // Prime: store every prompt's prefix, and wait until it is in the tiers.
    submit_options prime;
    prime.policy = "compute_only";
    prime.max_new_tokens = 1;
    prime.store = true;
    std::vector<std::future<restore_report>> primed;
    for (auto& p : prompts)
      primed.push_back(rt.submit(std::vector<std::int32_t>(p.begin(), p.end() - opt_.suffix_tokens), prime));
    for (auto& f : primed) f.get();
    rt.flush();

    std::vector<restore_report> reference(batch);  // compute_only's, per prompt
    std::map<std::string, point> points;
    for (int rep = 0; rep < opt_.repeats; ++rep) {
      for (auto& policy : policies_) {
        submit_options so;
        so.policy = policy;
        so.max_new_tokens = 1;
        so.store = false;
        so.digest_kv = true;
        std::vector<std::future<restore_report>> futs;
        for (auto& p : prompts) futs.push_back(rt.submit(p, so));
        auto& pt = points[policy];
        pt.context = ctx;
        pt.tier = tier;
        pt.batch = batch;
        pt.policy = policy;
        double sum = 0;
        for (int i = 0; i < batch; ++i) {
          auto r = futs[i].get();
          if (reference[i].kv_sha256.empty()) reference[i] = r;
          if (r.kv_sha256 != reference[i].kv_sha256 || r.first_token != reference[i].first_token) {
            mismatches_++;
            std::cerr << "MISMATCH: " << policy << " prompt " << i << " (" << r.prompt_tokens << " tokens): kv "
                      << r.kv_sha256.substr(0, 12) << " first token " << r.first_token << ", "
                      << reference[i].policy << " has kv " << reference[i].kv_sha256.substr(0, 12) << " first token "
                      << reference[i].first_token << "\n";
          }
          if (policy == "load_only" && tier == "host" && r.bytes_from_disk > 0)
            std::cerr << "warning: host tier: load_only read " << r.bytes_from_disk << " bytes from disk\n";
          sum += r.ttft_s;
          pt.all_ttft.push_back(r.ttft_s);
          pt.computed += r.cells_computed;
          pt.loaded += r.cells_loaded;
          pt.host_bytes += r.bytes_from_host;
          pt.disk_bytes += r.bytes_from_disk;
        }
        pt.per_repeat_mean.push_back(sum / batch);
        std::fprintf(stderr, "[%d/%zu] %s %d %s batch %d %s: %.3f s\n", ++done_, total_, opt_.preset.c_str(), ctx,
                     tier.c_str(), batch, policy.c_str(), sum / batch);
      }
    }
    // Ratios within this point's run: TTFT over the baseline's (below 1:
    // faster than the baseline).
    auto ttft_of = [&](const char* p) { return points.count(p) ? points[p].mean() : 0.0; };
    double comp = ttft_of("compute_only"), load = ttft_of("load_only"), orac = ttft_of("oracle");
    double bidi = ttft_of("bidirectional");
    double best = comp > 0 && load > 0 ? std::min(comp, load) : std::max(comp, load);
    double bidi_p99 = points.count("bidirectional") ? points["bidirectional"].p99() : 0.0;
    for (auto& policy : policies_) {
      auto& pt = points[policy];
      double n = static_cast<double>(pt.all_ttft.size());
      double m = pt.mean();
      auto ratio = [&](double base) { return base > 0 ? nlohmann::json(m / base) : nlohmann::json(nullptr); };
      nlohmann::json rec = {{"model", opt_.preset},
                            {"context_tokens", ctx},
                            {"suffix_tokens", opt_.suffix_tokens},
                            {"chunk_tokens", opt_.chunk_tokens},
                            {"tier", tier},
                            {"tier_dir", tier_root_},
                            {"batch", batch},
                            {"policy", policy},
                            {"repeats", opt_.repeats},
                            {"ttft_s", m},
                            {"ttft_p99_s", pt.p99()},
                            {"ttft_vs_compute_only", ratio(comp)},
                            {"ttft_vs_best_single", ratio(best)},
                            {"ttft_vs_oracle", ratio(orac)},
                            {"ttft_vs_bidirectional", ratio(bidi)},
                            {"p99_vs_bidirectional", bidi_p99 > 0 ? nlohmann::json(pt.p99() / bidi_p99) : nullptr},
                            {"cells_computed", std::lround(pt.computed / n)},
                            {"cells_loaded", std::lround(pt.loaded / n)},
                            {"gb_from_host", pt.host_bytes / n / 1e9},
                            {"gb_from_disk", pt.disk_bytes / n / 1e9},
                            {"prompt_tokens", nlohmann::json::array()},
                            {"device", device_}};
      for (auto& p : prompts) rec["prompt_tokens"].push_back(p.size());
      records_.push_back(rec);
    }
    // Written after every point, so that a run cut short keeps what it measured.
    if (!opt_.out_dir.empty()) write_out(markdown(), false);
  }

  std::string markdown() const {
    std::ostringstream md;
    md << "| model | context | suffix | tier | batch | policy | TTFT s | p99 s | vs compute_only | vs best single | "
          "vs oracle | vs bidirectional | computed | loaded |\n";
    md << "|---|---:|---:|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|\n";
    auto r = [](const nlohmann::json& v) { return v.is_null() ? std::string("-") : fmt(v.get<double>(), "%.2fx"); };
    for (auto& j : records_)
      md << "| " << j["model"].get<std::string>() << " | " << j["context_tokens"] << " | " << j["suffix_tokens"]
         << " | " << j["tier"].get<std::string>() << " | " << j["batch"] << " | " << j["policy"].get<std::string>()
         << " | " << fmt(j["ttft_s"]) << " | " << fmt(j["ttft_p99_s"]) << " | " << r(j["ttft_vs_compute_only"])
         << " | " << r(j["ttft_vs_best_single"]) << " | " << r(j["ttft_vs_oracle"]) << " | "
         << r(j["ttft_vs_bidirectional"]) << " | " << j["cells_computed"] << " | " << j["cells_loaded"] << " |\n";
    md << "\nTTFT: batch 1, the median of " << opt_.repeats << " repeats; batches, the mean over every request of "
       << "every repeat. vs X: this TTFT over X's in the same run (below 1: faster). best single: the better of "
          "compute_only and load_only. Tiers: host (pinned host pool), disk (O_DIRECT, no host tier), N (the disk "
          "paced to N Gbit/s; its files under the record's tier_dir). "
       << (mismatches_ ? std::to_string(mismatches_) + " restores DIFFER from compute_only."
                       : "Every restore's KV digest and first token equal compute_only's.")
       << "\nDevice: " << device_ << "\n";
    return md.str();
  }

  void write_out(const std::string& table, bool say) const {
    std::filesystem::create_directories(opt_.out_dir);
    auto json_path = std::filesystem::path(opt_.out_dir) / "restore.json";
    auto md_path = std::filesystem::path(opt_.out_dir) / "restore.md";
    std::ofstream js(json_path), md(md_path);
    js << nlohmann::json(records_).dump(1) << "\n";
    md << table;
    if (!js || !md) throw error(errc::io_failure, "cannot write " + json_path.string() + " or " + md_path.string());
    if (say) std::cerr << "wrote " << json_path.string() << " and " << md_path.string() << "\n";
  }

  bench_options opt_;
  model::config cfg_;
  std::vector<std::string> policies_;
  std::vector<tier_config> tiers_;
  std::vector<nlohmann::json> records_;
  std::string device_;
  std::string tier_root_;  // where the current tier's chunk files lie
  std::size_t total_ = 0;
  int done_ = 0;
  int mismatches_ = 0;
};

}  // namespace

command_runner add_bench_command(CLI::App& app) {
  auto opt = std::make_shared<bench_options>();
  auto* cmd = app.add_subcommand(
      "bench",
      "Measure restore TTFT per policy through the runtime: per tier, context and batch, prime the cache with the "
      "prompts' prefixes, then restore the full prompts under every policy and compare (KV digests checked)");
  cmd->add_option("--preset", opt->preset, "Model preset with random weights (tiny-test, smollm2-135m, llama-3-8b, ...)")
      ->capture_default_str();
  cmd->add_option("--backend", opt->backend, "cpu, cuda or auto")->capture_default_str();
  cmd->add_option("--threads", opt->threads, "CPU backend threads (0: all cores)")->capture_default_str();
  cmd->add_option("--seed", opt->seed, "Seed of the weights and the prompts")->capture_default_str();
  cmd->add_option("--contexts", opt->contexts, "Prompt lengths in tokens (batches mix lengths up to these)")
      ->delimiter(',')
      ->capture_default_str();
  cmd->add_option("--suffix-tokens", opt->suffix_tokens, "Uncached tokens at the end of every prompt")
      ->capture_default_str();
  cmd->add_option("--chunk-tokens", opt->chunk_tokens, "Tokens per chunk")->capture_default_str();
  cmd->add_option("--tiers", opt->tiers,
                  "Where the cached prefix lies: host (pinned pool), disk (O_DIRECT), or N: the disk paced to N Gbit/s")
      ->delimiter(',')
      ->capture_default_str();
  cmd->add_option("--policies", opt->policies, "Policies to compare (compute_only and load_only run first, oracle last)")
      ->delimiter(',')
      ->capture_default_str();
  cmd->add_option("--batch", opt->batches, "Batch sizes; a batch > 1 submits that many distinct prompts at once")
      ->delimiter(',')
      ->capture_default_str();
  cmd->add_option("--batch-tiers", opt->batch_tiers, "Tiers that run batches > 1 (default: every tier)")
      ->delimiter(',');
  cmd->add_option("--repeats", opt->repeats, "Runs per policy (batch 1 reports the median)")->capture_default_str();
  cmd->add_option("--out", opt->out_dir, "Folder for restore.json and restore.md");
  cmd->add_option("--disk-root", opt->disk_root, "Folder for the disk tier's chunk files (default: the temp folder)");
  cmd->add_option("--paced-root", opt->paced_root,
                  "Folder for paced tiers' chunk files (default: --disk-root); e.g. /dev/shm, so that a pace above "
                  "the local disk's rate holds");
  cmd->add_option("--device-name", opt->device_name, "Name of the machine or GPU, prefixed to the records' device");
  return [opt] { return bench(*opt).run(); };
}

}  // namespace kvflow::app
