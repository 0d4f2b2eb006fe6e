// kvflow_nonprefix_runtime_bench: TTFT of a prompt of stitched cached
// documents through the RUNTIME's document path (submit_options::documents;
// on CUDA actors/document_cuda.hpp) against a full recompute through the
// same runtime, per tier. Per tier: a runtime of its own (host: the
// documents in the pinned host tier; disk: a host tier of one chunk, so
// that they are read from the disk tier, optionally paced); the full
// recompute (no documents marked, nothing stored), then a request that
// computes every document alone and stores it, then fixed ratios and the
// cost model's plan (recompute_ratio < 0: policies/recompute_ratio with
// split_front, from the rates the earlier requests measured). Random
// weights: the first token is compared with the full recompute's, not a
// quality measure (apps/bench/nonprefix_quality.cpp is that). Writes JSON
// records (model, context_tokens, tier, ratio, ttft_s, full_recompute_s,
// speedup, device, path "runtime", ...).

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>

#include <unistd.h>

#include "actors/runtime.hpp"
#include "kernels/model/config.hpp"
#include "messages/error.hpp"

namespace {

using namespace kvflow;

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

struct point {
  std::string selection;
  double ratio;  // < 0: the plan
};

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"TTFT of stitched cached documents through the runtime's document path"};
  std::string preset = "llama-3-8b", backend = "cuda", device_name = "unknown", out_path, disk_dir;
  int docs = 32, doc_tokens = 512, system_tokens = 64, question_tokens = 64, repeats = 3, chunk = 256;
  std::vector<std::string> tiers{"host", "disk", "10"};
  std::vector<double> ratios{0.15};
  std::vector<std::string> selections{"epic"};
  double host_gb = 4;
  bool adaptive = true;
  app.add_option("--preset", preset, "model preset (random weights)");
  app.add_option("--backend", backend, "cuda or cpu");
  app.add_option("--docs", docs, "documents in the prompt")->check(CLI::Range(1, 4096));
  app.add_option("--doc-tokens", doc_tokens, "tokens per document")->check(CLI::Range(8, 65536));
  app.add_option("--system-tokens", system_tokens, "system text before the documents")->check(CLI::Range(1, 65536));
  app.add_option("--question-tokens", question_tokens, "question after them")->check(CLI::Range(1, 65536));
  app.add_option("--tiers", tiers, "host, disk, or a number: the disk paced to that many Gbit/s")->delimiter(',');
  app.add_option("--ratios", ratios, "fixed recompute ratios")->delimiter(',')->check(CLI::Range(0.0, 1.0));
  app.add_option("--selections", selections, "token selections of the fixed ratios (first: the plan's)")
      ->delimiter(',');
  app.add_flag("!--no-adaptive", adaptive, "skip the cost model's plan");
  app.add_option("--repeats", repeats, "runs per point (median kept), after one warm-up")->check(CLI::Range(1, 50));
  app.add_option("--chunk-tokens", chunk, "runtime chunk (and document entry block) tokens");
  app.add_option("--host-gb", host_gb, "host tier of the host runs");
  app.add_option("--disk-dir", disk_dir, "folder of the disk tier (default: a temporary one)");
  app.add_option("--device-name", device_name, "device named in the records");
  app.add_option("--out", out_path, "JSON records");
  CLI11_PARSE(app, argc, argv);
  try {
    const model::config c = model::preset(preset);
    std::mt19937 gen(20);
    std::uniform_int_distribution<int> tok(0, std::min(c.vocab_size, 32000) - 1);
    std::vector<std::int32_t> prompt;
    std::vector<document_span> spans;
    auto add = [&](int n) {
      for (int i = 0; i < n; ++i) prompt.push_back(tok(gen));
    };
    add(system_tokens);
    for (int d = 0; d < docs; ++d) {
      spans.push_back({static_cast<std::uint32_t>(prompt.size()), static_cast<std::uint32_t>(doc_tokens)});
      add(doc_tokens);
    }
    add(question_tokens);
    const int n = static_cast<int>(prompt.size());
    const bool remove_dir = disk_dir.empty();
    if (remove_dir)
      disk_dir =
          (std::filesystem::temp_directory_path() / ("kvflow-nonprefix-rt-" + std::to_string(::getpid()))).string();
    nlohmann::json records = nlohmann::json::array();
    auto write = [&] {
      if (out_path.empty()) return;
      std::ofstream out(out_path);
      out << records.dump(2) << "\n";
      if (!out) throw error(errc::io_failure, "cannot write " + out_path);
    };
    for (const auto& tier : tiers) {
      const bool host = tier == "host";
      runtime_options o;
      o.preset = preset;
      o.backend = backend;
      o.chunk_tokens = chunk;
      // Disk runs: a host tier of one chunk (it stages the stores), so the
      // entries are read from the disk tier.
      o.host_tier_gb = host ? host_gb : 1e-9;
      o.disk_dir = disk_dir + "/" + (host ? "host" : "disk-" + tier);
      o.disk_gbps = host || tier == "disk" ? 0 : std::stod(tier);
      runtime rt(o);
      std::printf("%s; tier %s\n", rt.describe().c_str(), tier.c_str());
      auto submit = [&](bool documents, double ratio, const std::string& selection, bool store) {
        submit_options so;
        so.max_new_tokens = 1;
        so.store = store;
        if (documents) so.documents = spans;
        so.document_selection = selection;
        so.recompute_ratio = ratio;
        return rt.submit(prompt, so).get();
      };
      // The full recompute: nothing marked, nothing stored, nothing held.
      const auto warm = submit(false, -1, "epic", false);
      std::vector<double> fulls;
      for (int r = 0; r < repeats; ++r) fulls.push_back(submit(false, -1, "epic", false).ttft_s);
      const double full_s = median(fulls);
      // Every document computed alone and stored (pinned host or disk).
      const auto prime = submit(true, 0.15, "epic", true);
      rt.flush();
      std::printf("full recompute %.4f s; priming request (documents computed alone: %u) %.4f s\n", full_s,
                  prime.documents_computed, prime.ttft_s);
      std::vector<point> points;
      for (double r : ratios) points.push_back({selections.front(), r});
      if (adaptive) points.push_back({selections.front(), -1});
      for (std::size_t s = 1; s < selections.size(); ++s)
        for (double r : ratios) points.push_back({selections[s], r});
      for (const auto& pt : points) {
        submit(true, pt.ratio, pt.selection, false);  // warm-up (and, for the plan, one more rate sample)
        std::vector<double> ttfts;
        std::vector<std::string> policies;  // per run: documents/<selection> or the ordinary path's policy
        restore_report last;
        for (int r = 0; r < repeats; ++r) {
          last = submit(true, pt.ratio, pt.selection, false);
          ttfts.push_back(last.ttft_s);
          policies.push_back(last.policy);
        }
        const double doc_total = static_cast<double>(docs) * doc_tokens;
        // The plan may send the request down the ordinary path (reuse would
        // not pay): every token recomputed there.
        const bool ordinary = last.policy.rfind("documents", 0) != 0;
        // Share of the document tokens recomputed: the documents computed in
        // full (the plan's front) plus the selected tokens of the others.
        const double share =
            ordinary ? 1.0
                     : (static_cast<double>(last.documents_computed) * doc_tokens + last.document_tokens_recomputed) /
                           doc_total;
        const double t = median(ttfts);
        nlohmann::json rec{{"model", preset},
                           {"backend", backend},
                           {"device", device_name},
                           {"path", "runtime"},
                           {"context_tokens", n},
                           {"documents", docs},
                           {"doc_tokens", doc_tokens},
                           {"tier", tier},
                           {"selection", pt.selection},
                           {"ratio", share},
                           {"reused_ratio", last.recompute_ratio},
                           {"front_docs", last.documents_computed},
                           {"documents_reused", last.documents_reused},
                           {"ratio_source", pt.ratio < 0 ? "adaptive" : "fixed"},
                           {"restored_by", ordinary ? "ordinary path (full recompute)" : "document path"},
                           {"ttft_s", t},
                           {"ttft_runs_s", ttfts},
                           {"policy_runs", policies},
                           {"full_recompute_s", full_s},
                           {"full_recompute_runs_s", fulls},
                           {"speedup", full_s / t},
                           {"bytes_moved", last.bytes_from_host},
                           {"chunk_tokens", chunk},
                           {"first_token_equals_full", last.first_token == warm.first_token}};
        std::printf(
            "%-5s %-10s plan %s%s: share %.3f (reused at %.3f, %u in full, %u reused), ttft %.4f s, "
            "full %.4f s, %.2fx, %.2f GB moved\n",
            tier.c_str(), pt.selection.c_str(), pt.ratio < 0 ? "adaptive" : "fixed", ordinary ? " (ordinary path)" : "",
            share, last.recompute_ratio, last.documents_computed, last.documents_reused, t, full_s, full_s / t,
            last.bytes_from_host / 1e9);
        std::fflush(stdout);
        records.push_back(rec);
        write();
      }
    }
    if (remove_dir) std::filesystem::remove_all(disk_dir);
  } catch (const std::exception& ex) {
    std::fprintf(stderr, "kvflow_nonprefix_runtime_bench: %s\n", ex.what());
    return 1;
  }
  return 0;
}
