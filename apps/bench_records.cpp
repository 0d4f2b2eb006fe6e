#include "apps/bench_records.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>

#include "messages/error.hpp"
#include "policies/restore_bound.hpp"

namespace kvflow::app {

using json = nlohmann::json;

std::string fmt(double v, const char* f) {
  char buf[32];
  std::snprintf(buf, sizeof buf, f, v);
  return buf;
}

std::string name_of(policy_kind k) { return policies::to_string(k); }

bool is(const std::string& name, policy_kind k) { return policies::policy_from_name(name) == k; }

void bench_records::add(std::map<std::string, point>& points, const std::vector<std::string>& policies,
                        const prompt_list& prompts, const json& extra,
                        const std::function<void(const std::string&)>& warn) {
  auto ttft_of = [&](policy_kind k) { return points.count(name_of(k)) ? points[name_of(k)].mean() : 0.0; };
  double comp = ttft_of(policy_kind::compute_only), load = ttft_of(policy_kind::load_only);
  double orac = ttft_of(policy_kind::oracle), bidi = ttft_of(policy_kind::bidirectional);
  double best = comp > 0 && load > 0 ? std::min(comp, load) : std::max(comp, load);
  const auto bidi_name = name_of(policy_kind::bidirectional);
  double bidi_p99 = points.count(bidi_name) ? points[bidi_name].p99() : 0.0;
  // Per-request Cake at its best: the better mean of its two orders (round
  // robin, first come first served), and that one's p99.
  double cake = 0, cake_p99 = 0;
  for (auto k : {policy_kind::bidirectional, policy_kind::bidirectional_fcfs})
    if (double v = ttft_of(k); v > 0 && (cake == 0 || v < cake)) cake = v, cake_p99 = points[name_of(k)].p99();
  // Batch 1: the lowest TTFT the point allows (policies/restore_bound.hpp)
  // from compute_only's measured per-chunk costs and load_only's link time per cell.
  double bound = 0, bound_cell_load_s = 0;  // and the link's seconds per cell it assumed
  double bound_batch1 = 0;                  // a batch's bound on batch 1's compute costs
  const auto comp_name = name_of(policy_kind::compute_only), load_name = name_of(policy_kind::load_only);
  if (points.count(comp_name) && points.count(load_name) && points[comp_name].compute_runs > 0 &&
      points[comp_name].batch == 1 && points[load_name].load_cells > 0 && extra["arrival"] == "together") {
    auto& pc = points[comp_name];
    auto& pl = points[load_name];
    policies::bound_inputs in;
    in.chunk_compute_s = pc.mean_chunk_compute_s();
    in.cached = std::min<std::uint32_t>(pl.cached, static_cast<std::uint32_t>(in.chunk_compute_s.size()));
    in.layers = std::max(pc.layers, pl.layers);
    in.cell_load_s = pl.load_s / pl.load_cells;
    bound = policies::lowest_ttft(in).ttft_s;
    bound_cell_load_s = in.cell_load_s;
    if (orac > 0 && orac < 0.99 * bound)
      warn("warning: oracle " + fmt(orac) + " s beats the bound " + fmt(bound) + " s");
    if (pc.batch == 1) costs_[{pc.tier, pc.context}] = in;
  }
  // Batches arriving together: the lowest mean TTFT their prompts allow
  // (policies::lowest_batch_ttft), each prompt's chunks costing what the
  // same positions cost in the batch's own compute_only run where that ran
  // (a batch keeps the GPU busy for seconds: on the H200 every policy's
  // cells cost 6-8% more at batch 8 than at batch 1), and the link at the
  // rate the batch's own load_only got from it (a disk's rate moves with
  // its access pattern and from run to run: a batch of 8 got 1.53 GB/s in
  // one call where batch 1 got 2.1, and batch 1's rate in another); what
  // did not run there comes from batch 1 of this tier and context.
  // bound_batch1_s: the same on batch 1's compute costs.
  auto batch_costs = costs_.end();
  if (!points.empty() && points.begin()->second.batch > 1 && extra["arrival"] == "together")
    batch_costs = costs_.find({points.begin()->second.tier, points.begin()->second.context});
  if (batch_costs != costs_.end() && facts_.chunk_tokens > 0) {
    const auto& one = batch_costs->second;
    double cell_load_s = one.cell_load_s;
    if (points.count(load_name) && points[load_name].load_cells > 0)
      cell_load_s = points[load_name].load_s / points[load_name].load_cells;
    auto bound_on = [&](const std::vector<double>& chunk_costs) {
      std::vector<policies::bound_inputs> batch;
      for (auto& p : prompts) {
        const auto n = static_cast<int>(p.size());
        const auto chunks = static_cast<std::size_t>((n + facts_.chunk_tokens - 1) / facts_.chunk_tokens);
        const auto cached = static_cast<std::uint32_t>(std::max(0, n - facts_.suffix_tokens) / facts_.chunk_tokens);
        if (chunks > chunk_costs.size() || cached >= chunks) return 0.0;
        batch.push_back(
            {std::vector<double>(chunk_costs.begin(), chunk_costs.begin() + chunks), cached, one.layers, cell_load_s});
      }
      return batch.empty() ? 0.0 : policies::lowest_batch_ttft(batch).mean_ttft_s;
    };
    bound_batch1 = bound_on(one.chunk_compute_s);
    bound = bound_batch1;
    if (points.count(comp_name) && points[comp_name].compute_runs > 0)
      if (double own = bound_on(points[comp_name].mean_chunk_compute_s()); own > 0) bound = own;
    if (bound > 0) {
      bound_cell_load_s = cell_load_s;
      if (orac > 0 && orac < 0.99 * bound)
        warn("warning: oracle's mean " + fmt(orac) + " s beats the batch bound " + fmt(bound) + " s");
    }
  }
  for (auto& policy : policies) {
    auto& pt = points[policy];
    double n = static_cast<double>(pt.all_ttft.size());
    double m = pt.mean();
    auto ratio = [&](double base) { return base > 0 ? json(m / base) : json(nullptr); };
    auto ref = reference_.find({facts_.preset, pt.context});
    json transformers = ref == reference_.end() ? json(nullptr) : json(ref->second);
    bool same_shape = is(policy, policy_kind::compute_only) && pt.batch == 1 && extra["arrival"] == "together";
    double loaded_bytes = pt.host_bytes + pt.disk_bytes;
    // Remote-link fields: null without a remote tier. Link use counts the
    // bytes that crossed the link (KV bytes times the fetches' wire/KV
    // ratio) over the time loads ran: how well the link is used,
    // compressed or not.
    auto remote = [&](json v) { return facts_.remote_tier ? std::move(v) : json(nullptr); };
    auto link_use = [&](double gbps) {
      return facts_.remote_tier && pt.remote_busy_s > 0 && gbps > 0
                 ? json(pt.remote_bytes * pt.wire_per_raw() * 8 / pt.remote_busy_s / (gbps * 1e9))
                 : json(nullptr);
    };
    json rec = {{"model", facts_.preset},
                {"context_tokens", pt.context},
                {"suffix_tokens", facts_.suffix_tokens},
                {"chunk_tokens", facts_.chunk_tokens},
                {"tier", pt.tier},
                {"tier_dir", facts_.tier_root},
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
                {"ttft_vs_cake", ratio(cake)},
                {"p99_vs_cake", cake_p99 > 0 ? json(pt.p99() / cake_p99) : json(nullptr)},
                {"bound_s", bound > 0 ? json(bound) : json(nullptr)},
                {"vs_bound", ratio(bound)},
                {"bound_cell_load_s", bound > 0 ? json(bound_cell_load_s) : json(nullptr)},
                {"bound_batch1_s", bound_batch1 > 0 ? json(bound_batch1) : json(nullptr)},
                {"p99_vs_bidirectional", bidi_p99 > 0 ? json(pt.p99() / bidi_p99) : json(nullptr)},
                {"transformers_s", transformers},
                {"vs_transformers", same_shape && !transformers.is_null() ? json(m / ref->second) : json(nullptr)},
                {"cells_computed", std::lround(pt.computed / n)},
                {"cells_loaded", std::lround(pt.loaded / n)},
                {"gb_from_host", pt.host_bytes / n / 1e9},
                {"gb_from_disk", pt.disk_bytes / n / 1e9},
                {"host_share", loaded_bytes > 0 ? json(pt.host_bytes / loaded_bytes) : json(nullptr)},
                {"kv_digest_checked", facts_.kv_digest_checked},
                {"prompt_tokens", json::array()},
                {"device", facts_.device},
                {"link_gbps", remote(facts_.link_gbps)},
                {"link_raw_gbps", remote(facts_.link_raw_gbps)},
                {"link_raw_streams", remote(facts_.ucx_lanes)},
                {"link_raw_1stream_gbps", remote(facts_.link_raw_1stream_gbps)},
                {"link_mtu", remote(facts_.link_mtu)},
                {"ucx_lanes", remote(facts_.ucx_lanes)},
                {"gb_from_remote", pt.remote_bytes / n / 1e9},
                {"link_utilization", link_use(facts_.link_gbps)},
                {"link_utilization_raw", link_use(facts_.link_raw_gbps)}};
    if (facts_.remote_tier) {
      // Written only for remote tiers, so that --append matches earlier records.
      rec["wire_compression"] = facts_.wire_compression;
      rec["load_queue_chunks"] = facts_.load_queue_chunks;
      rec["wire_compression_ratio"] = pt.wire_bytes > 0 ? json(pt.wire_raw_bytes / pt.wire_bytes) : json(nullptr);
      rec["gb_wire_from_remote"] = pt.remote_bytes * pt.wire_per_raw() / n / 1e9;
      // KV bytes restored per second of load time: what the scheduler learns.
      rec["effective_gbps"] = pt.remote_busy_s > 0 ? json(pt.remote_bytes * 8 / pt.remote_busy_s / 1e9) : json(nullptr);
    }
    // Written only when set, so that --append matches earlier records.
    if (facts_.compute_group_tokens > 0) rec["compute_group_tokens"] = facts_.compute_group_tokens;
    if (facts_.rate_pool_ms >= 0) rec["rate_pool_ms"] = facts_.rate_pool_ms;
    if (facts_.admission_window_ms >= 0) rec["admission_window_ms"] = facts_.admission_window_ms;
    if (facts_.stages > 1) {
      // Written only with stages, so that --append matches earlier records.
      rec["stages"] = facts_.stages;
      rec["handoffs"] = std::lround(pt.handoffs / n);
      rec["handoff_ms_per_chunk"] = pt.handoffs > 0 ? json(pt.handoff_s / pt.handoffs * 1e3) : json(nullptr);
    }
    rec.update(extra);
    for (auto& p : prompts) rec["prompt_tokens"].push_back(p.size());
    if (pt.tier.rfind("mixed", 0) == 0 && is(policy, policy_kind::load_only) &&
        (pt.host_bytes == 0 || pt.disk_bytes == 0))
      warn("warning: tier " + pt.tier + ": load_only read " + fmt(pt.host_bytes / 1e9) + " GB from host and " +
           fmt(pt.disk_bytes / 1e9) + " GB from disk: not a mixed restore");
    // --append: a point measured again replaces the earlier record, in
    // place (fields compared with the defaults the table shows).
    auto same_point = [&](const json& o) {
      static const char* keys[] = {"model", "context_tokens", "suffix_tokens", "chunk_tokens", "tier",
                                   "batch", "policy",         "poisson_load",  "device",       "stages"};
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
}

void bench_records::add_trace(const json& entry) {
  traces_.erase(
      std::remove_if(traces_.begin(), traces_.end(), [&](const json& j) { return j["file"] == entry["file"]; }),
      traces_.end());
  traces_.push_back(entry);
}

// prefill_reference.py's records: a list of {model, context_tokens, impl,
// seconds, ...}; the transformers ones are the outside peer.
void bench_records::read_reference(const std::string& file) {
  std::ifstream in(file);
  if (!in) throw error(errc::not_found, "--reference: cannot read " + file);
  json j;
  try {
    in >> j;
    for (auto& r : j)
      if (r.value("impl", "") == "transformers")
        reference_[{r.at("model").get<std::string>(), r.at("context_tokens").get<int>()}] =
            r.at("seconds").get<double>();
  } catch (const json::exception& e) {
    throw error(errc::invalid_argument, "--reference " + file + ": not prefill_reference.py's JSON (" + e.what() + ")");
  }
  for (auto& r : j)
    if (r.value("impl", "") == "transformers") reference_device_ = r.value("device", "");
}

void bench_records::read_previous(const std::string& out_dir) {
  auto path = std::filesystem::path(out_dir) / "restore.json";
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

// A note replaces an earlier one with the same text before its first colon.
std::vector<std::string> bench_records::notes() const {
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
      "best single: the better of compute_only and load_only. Cake: per-request Cake at its best, the better mean "
      "of bidirectional (requests take turns) and bidirectional_fcfs (first come, first served).");
  if (facts_.stages > 1) {
    std::string per_policy;
    for (auto& j : records_)
      if (j.value("stages", 0) == facts_.stages && !j.value("handoff_ms_per_chunk", json()).is_null())
        per_policy += " " + j["policy"].get<std::string>() + " " +
                      fmt(j["handoff_ms_per_chunk"].get<double>(), "%.3f") + " ms (" +
                      std::to_string(j["handoffs"].get<long>()) + " chunks, " + j["tier"].get<std::string>() + ");";
    add("Stages (" + std::to_string(facts_.stages) + ", layers split evenly, " +
        (facts_.stage_link.empty() ? std::string("default") : facts_.stage_link) +
        " hand-off): hand-off time per chunk of hidden state, per record:" + per_policy);
  }
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
  for (auto& t : facts_.tiers) tiers += (tiers.empty() ? "" : ",") + t;
  if (!reference_.empty()) {
    std::string s = facts_.preset +
                    " vs transformers: compute_only's batch-1 TTFT (the whole prompt recomputed in "
                    "chunks through the runtime) over PyTorch/transformers prefill of the same model and length "
                    "(prefill_reference.py" +
                    (reference_device_.empty() ? "" : ", " + reference_device_) + "):";
    bool any = false;
    for (auto& j : records_)
      if (j["model"] == facts_.preset && !j.value("vs_transformers", json()).is_null()) {
        s += " " + std::to_string(j["context_tokens"].get<int>()) + " tok " + j["tier"].get<std::string>() + " " +
             fmt(j["vs_transformers"].get<double>(), "%.2fx") + ";";
        any = true;
      }
    if (any) add(s);
  }
  add(facts_.preset + " on " + tiers + ": " +
      (facts_.mismatches ? std::to_string(facts_.mismatches) + " restores DIFFER from compute_only."
                         : std::string("every restore's ") + (facts_.kv_digest_checked ? "KV digest and " : "") +
                               "first token equal compute_only's" +
                               (facts_.kv_digest_checked ? "." : " (KV digests not checked: --no-digest).")));
  add("Device (" + facts_.preset + "): " + facts_.device);
  return n;
}

std::string bench_records::markdown() const {
  std::ostringstream md;
  md << "| model | context | suffix | chunk | tier | batch | arrival | policy | TTFT s | p99 s | vs compute_only | "
        "vs load_only | vs best single | vs oracle | vs bidirectional | vs Cake | vs transformers | computed | "
        "loaded | host GB | disk GB |\n";
  md << "|---|---:|---:|---:|---|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n";
  auto r = [](const json& v) { return v.is_null() ? std::string("-") : fmt(v.get<double>(), "%.2fx"); };
  for (auto& j : records_)
    md << "| " << j["model"].get<std::string>() << " | " << j["context_tokens"] << " | " << j["suffix_tokens"] << " | "
       << j.value("chunk_tokens", 0) << " | " << j["tier"].get<std::string>() << " | " << j["batch"] << " | "
       << j.value("arrival", "together") << " | " << j["policy"].get<std::string>() << " | " << fmt(j["ttft_s"])
       << " | " << fmt(j["ttft_p99_s"]) << " | " << r(j["ttft_vs_compute_only"]) << " | "
       << r(j.value("ttft_vs_load_only", json())) << " | " << r(j["ttft_vs_best_single"]) << " | "
       << r(j["ttft_vs_oracle"]) << " | " << r(j["ttft_vs_bidirectional"]) << " | "
       << r(j.value("ttft_vs_cake", json())) << " | " << r(j.value("vs_transformers", json())) << " | "
       << j["cells_computed"] << " | " << j["cells_loaded"] << " | " << fmt(j.value("gb_from_host", 0.0), "%.2f")
       << " | " << fmt(j.value("gb_from_disk", 0.0), "%.2f") << " |\n";
  md << "\n";
  for (auto& n : notes()) md << n << "\n\n";
  if (!traces_.empty()) {
    md << "Timelines (Chrome trace format; open in https://ui.perfetto.dev):";
    for (auto& t : traces_)
      md << " " << t["file"].get<std::string>() << " (" << t["model"].get<std::string>() << " " << t["context_tokens"]
         << " tok, tier " << t["tier"].get<std::string>() << ", batch " << t["batch"] << ");";
    md << "\n";
  }
  return md.str();
}

void bench_records::write(const std::string& out_dir, const std::string& table, bool say) const {
  std::filesystem::create_directories(out_dir);
  auto json_path = std::filesystem::path(out_dir) / "restore.json";
  auto md_path = std::filesystem::path(out_dir) / "restore.md";
  // "traces": the file names (plot_restore.py reads every key with "trace"
  // in it as names); "timelines": what each shows.
  json names = json::array();
  for (auto& t : traces_) names.push_back(t["file"]);
  json doc = {
      {"records", records_}, {"traces", names}, {"timelines", traces_}, {"notes", notes()}, {"device", facts_.device}};
  if (!facts_.reference_files.empty()) doc["reference"] = facts_.reference_files;
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

}  // namespace kvflow::app
