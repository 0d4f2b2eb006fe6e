#pragma once
// kvflow bench's records and reports: one JSON record per point and policy,
// restore.json and restore.md, the notes that explain them, the
// transformers reference (prefill_reference.py) and, with --append, the
// records of an earlier run.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "actors/runtime.hpp"
#include "policies/policy.hpp"
#include "policies/restore_bound.hpp"

namespace kvflow::app {

using prompt_list = std::vector<std::vector<std::int32_t>>;

using policies::policy_kind;

/// One value through printf's format `f`.
std::string fmt(double v, const char* f = "%.3f");
/// The name of a policy, as runtime_options and submit_options take it.
std::string name_of(policy_kind k);
/// Whether `name` names policy `k`.
bool is(const std::string& name, policy_kind k);

// The measurements of one (context, tier, batch or stream, policy) point.
struct point {
  int context = 0;
  std::string tier;
  int batch = 0;
  std::string policy;
  std::vector<double> per_repeat_mean;                              // mean TTFT of the batch, per repeat
  std::vector<double> all_ttft;                                     // every request of every repeat
  double computed = 0, loaded = 0, host_bytes = 0, disk_bytes = 0;  // sums over requests
  double handoffs = 0, handoff_s = 0;          // stage hand-offs (chunks) and their time, sums over requests
  double remote_bytes = 0, remote_busy_s = 0;  // KV bytes loaded over the link, and the time loads ran (traced)
  double wire_raw_bytes = 0, wire_bytes = 0;   // the remote tier's fetches: KV bytes and bytes on the wire
  /// Wire bytes per KV byte of the remote tier's fetches (1: uncompressed).
  double wire_per_raw() const { return wire_raw_bytes > 0 ? wire_bytes / wire_raw_bytes : 1.0; }
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
  // What the bound rests on, from traced spans: compute_only's seconds per
  // chunk (summed over its runs' requests; chunk_compute_n: how many
  // requests had each chunk), and load_only's cells moved and
  // the seconds from a run's first load's start to its last one's end, over
  // every request of the run (requests submitted together: their clocks
  // start within a millisecond), so a batch's point holds the link's rate
  // under that batch.
  std::vector<double> chunk_compute_s;
  std::vector<int> chunk_compute_n;
  int compute_runs = 0;
  double load_cells = 0, load_s = 0;
  std::uint32_t cached = 0, layers = 0;
  void add_costs(const restore_report& r) {
    if (r.spans.empty()) return;
    if (chunk_compute_s.size() < r.chunks) chunk_compute_s.resize(r.chunks, 0.0), chunk_compute_n.resize(r.chunks, 0);
    bool computed_any = false;
    for (const auto& s : r.spans) {
      const double n = double(s.chunk_end - s.chunk_begin) * (s.layer_end - s.layer_begin);
      layers = std::max(layers, s.layer_end);
      if (s.compute) {
        for (auto c = s.chunk_begin; c < s.chunk_end && c < r.chunks; ++c)
          chunk_compute_s[c] += (s.end_s - s.start_s) * (s.layer_end - s.layer_begin) / n;
        computed_any = true;
      }
    }
    cached = r.cached_chunks;
    if (computed_any) {
      ++compute_runs;
      for (std::uint32_t c = 0; c < r.chunks; ++c) ++chunk_compute_n[c];
    }
  }
  // Seconds to compute chunk c, all its layers: the mean over the requests
  // that had it.
  std::vector<double> mean_chunk_compute_s() const {
    std::vector<double> out;
    for (std::size_t c = 0; c < chunk_compute_s.size() && chunk_compute_n[c] > 0; ++c)
      out.push_back(chunk_compute_s[c] / chunk_compute_n[c]);
    return out;
  }
  void add_link(const std::vector<restore_report>& reports) {
    double first = 1e300, last = 0, cells = 0;
    for (const auto& r : reports)
      for (const auto& s : r.spans) {
        if (s.compute) continue;
        cells += double(s.chunk_end - s.chunk_begin) * (s.layer_end - s.layer_begin);
        first = std::min(first, s.start_s);
        last = std::max(last, s.end_s);
      }
    if (cells > 0 && last > first) load_cells += cells, load_s += last - first;
  }
  void add(const restore_report& r) {
    all_ttft.push_back(r.ttft_s);
    computed += r.cells_computed;
    loaded += r.cells_loaded;
    host_bytes += r.bytes_from_host;
    disk_bytes += r.bytes_from_disk;
    handoffs += r.stage_handoffs;
    handoff_s += r.handoff_s;
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

/// What every record of a run shares. The command fills in the first fields
/// once and keeps the others current while it runs.
struct run_facts {
  std::string preset;
  int chunk_tokens = 0;
  bool kv_digest_checked = true;
  std::vector<std::string> tiers;            ///< as given to --tiers
  std::vector<std::string> reference_files;  ///< --reference
  int suffix_tokens = 0;                     ///< the --suffix-tokens value being run
  std::string tier_root;                     ///< where the current tier's chunk files lie
  std::string device;                        ///< the runtime's engine, after --device-name
  int mismatches = 0;                        ///< restores that differ from compute_only's
  int stages = 1;                            ///< layer-pipeline stages (--stages)
  std::string stage_link;                    ///< --stage-link; empty: the runtime's default
  bool remote_tier = false;                  ///< the current tier is remote:N (a kvflow node behind a shaped link)
  double link_gbps = 0;                      ///< its shaped rate
  double link_raw_gbps = 0;                  ///< ucx_lanes TCP streams at once measured over it
  double link_raw_1stream_gbps = 0;          ///< one TCP stream measured over it
  int link_mtu = 0;                          ///< its MTU
  std::string wire_compression;              ///< the node's --wire-compression
  std::uint32_t load_queue_chunks = 2;       ///< --load-queue-chunks
  int compute_group_tokens = 0;              ///< --compute-group-tokens (0: the runtime's default)
  double rate_pool_ms = -1;                  ///< --rate-pool-ms (negative: the runtime's default)
  double admission_window_ms = -1;           ///< --admission-window-ms (negative: the runtime's default)
  std::size_t ucx_lanes = 0;                 ///< UCX workers at each end of it
};

/// The records of one run (and, with --append, an earlier one's). Not
/// thread-safe: the bench's thread owns it.
class bench_records {
 public:
  /// `facts` is read on every call, so it must outlive the records.
  explicit bench_records(const run_facts& facts) : facts_(facts) {}

  /// prefill_reference.py's records: a list of {model, context_tokens, impl,
  /// seconds, ...}; the transformers ones are the outside peer. Throws
  /// kvflow::error when `file` cannot be read or is not that JSON.
  void read_reference(const std::string& file);
  /// --append: keeps the records, traces and notes of out_dir/restore.json
  /// (none when it does not exist; throws kvflow::error when it is not one).
  void read_previous(const std::string& out_dir);

  /// One record per policy of `policies`, ratios within this point's run:
  /// TTFT over the baseline's (below 1: faster than the baseline). A point
  /// measured again (--append) replaces its earlier record in place.
  /// `warn` hears what looks wrong with a point.
  void add(std::map<std::string, point>& points, const std::vector<std::string>& policies, const prompt_list& prompts,
           const nlohmann::json& extra, const std::function<void(const std::string&)>& warn);
  /// Lists a trace file (an entry with at least "file"), replacing the entry
  /// of the same file.
  void add_trace(const nlohmann::json& entry);

  /// Notes of this run merged into the earlier ones.
  std::vector<std::string> notes() const;
  /// The records as a markdown table, then the notes and the traces.
  std::string markdown() const;
  /// Writes out_dir/restore.json and restore.md (`table`), each written aside
  /// and renamed; `say` prints where.
  void write(const std::string& out_dir, const std::string& table, bool say) const;

 private:
  const run_facts& facts_;
  std::vector<nlohmann::json> records_, traces_;
  std::vector<std::string> previous_notes_;
  std::map<std::pair<std::string, int>, double> reference_;  // (model, tokens) -> transformers prefill s
  // Batch 1's measured costs per (tier, context): the batches of the same
  // tier and context (prompts of up to that many tokens) take their bound from them.
  std::map<std::pair<std::string, int>, policies::bound_inputs> costs_;
  std::string reference_device_;
};

}  // namespace kvflow::app
