// `kvflow demo`: the main job on the embedded default. A multi-turn
// conversation over a long document runs twice, cold (empty cache) and warm
// (its chunks in the tiers), and prints TTFT per turn for every policy.

#include <unistd.h>
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <iostream>

#include "actors/runtime.hpp"
#include "apps/commands.hpp"
#include "messages/error.hpp"
#include "policies/policy.hpp"

namespace kvflow::app {
namespace {

// Every policy but the oracle (it reads the costs measured by earlier runs).
std::vector<std::string> policies_but_oracle() {
  auto names = policies::policy_names();
  names.erase(std::remove(names.begin(), names.end(), policies::to_string(policies::policy_kind::oracle)), names.end());
  return names;
}

struct demo_options {
  demo_options() { rt.chunk_tokens = 128; }
  runtime_options rt;
  std::vector<std::string> policies = policies_but_oracle();
  int document_repeats = 6;
  std::uint32_t reply_tokens = 24;
};

// A long shared context, as a RAG document or an agent's tool output would be.
std::string document(int repeats) {
  static const char* paragraph =
      "The lighthouse keeper's log, entry for the third week of November: the wind turned north-east on Monday and "
      "the swell rose to four metres by evening. Two fishing boats sheltered in the harbour overnight. The lamp's "
      "second burner was cleaned and its wick replaced; oil stock is now eleven barrels. On Wednesday the supply "
      "ship brought flour, coffee, candles, a new barometer and letters from the mainland. The old barometer read "
      "three millibars low and was sent back for repair. Thursday was calm and clear, and the keeper repainted the "
      "railings of the gallery in white. On Friday a seal rested on the landing stage for most of the afternoon. ";
  std::string text;
  for (int i = 0; i < repeats; ++i) text += paragraph;
  return text;
}

// One line per turn; `same` says whether the restored request's first
// token equals the full recompute's (the invariant every policy keeps).
void print_row(const char* run, int turn, const restore_report& r, const restore_report& base) {
  std::string reply = r.text.substr(0, 44);
  for (auto& ch : reply)
    if (ch == '\n') ch = ' ';
  std::printf("%-5s %4d %7u %6u/%-6u %-14s %9.1f %7.2fx %8u %7u %5s  %s\n", run, turn, r.prompt_tokens, r.cached_chunks,
              r.chunks, r.policy.c_str(), r.ttft_s * 1e3, base.ttft_s / r.ttft_s, r.cells_computed, r.cells_loaded,
              r.tokens == base.tokens ? "yes" : "NO", reply.c_str());
}

int run_demo(demo_options opt) {
  // Only a folder the demo made is removed at the end: a folder the user
  // names is their cache, and its chunks serve the next run.
  bool own_dir = opt.rt.disk_dir.empty();
  if (own_dir)
    opt.rt.disk_dir = (std::filesystem::temp_directory_path() / ("kvflow-demo-" + std::to_string(::getpid()))).string();
  runtime rt(opt.rt);
  std::cout << "kvflow demo: a conversation over a shared document, run cold (empty cache) and warm, per policy\n";
  std::cout << rt.describe() << "\n";
  std::vector<std::string> questions = {
      "How high did the swell rise on Monday?",
      "What did the supply ship bring?",
      "What happened on Friday?",
  };
  std::printf("%-5s %4s %7s %13s %-14s %9s %8s %8s %7s %5s  %s\n", "run", "turn", "tokens", "cached/chunks", "policy",
              "ttft_ms", "vs_comp", "computed", "loaded", "same", "reply");
  int mismatches = 0;
  // compute_only of each turn's whole prompt: the baseline every row is
  // compared with. It does not depend on the cache, so it runs once per turn.
  std::vector<restore_report> baseline;
  for (auto& policy : opt.policies) {
    rt.clear_cache();
    for (const char* run : {"cold", "warm"}) {
      std::vector<chat_turn> history = {{"system", "Answer from this log.\n" + document(opt.document_repeats)}};
      for (std::size_t t = 0; t < questions.size(); ++t) {
        history.push_back({"user", questions[t]});
        submit_options so;
        so.max_new_tokens = opt.reply_tokens;
        if (baseline.size() <= t) {
          so.policy = policies::to_string(policies::policy_kind::compute_only);
          so.store = false;
          baseline.push_back(rt.submit_chat(history, so).get());
        }
        so.policy = policy;
        so.store = true;
        auto r = rt.submit_chat(history, so).get();
        print_row(run, static_cast<int>(t + 1), r, baseline[t]);
        if (r.tokens != baseline[t].tokens) mismatches++;
        history.push_back({"assistant", r.text});
      }
    }
  }
  if (own_dir) {
    std::error_code ec;
    std::filesystem::remove_all(opt.rt.disk_dir, ec);
  }
  std::printf(
      "ttft_ms: submit to first token; vs_comp: TTFT of a full recompute (compute_only) of the same prompt "
      "over this row's; same: generated tokens equal the full recompute's\n");
  if (mismatches) std::printf("%d turns differ from the full recompute\n", mismatches);
  return mismatches ? 1 : 0;
}

}  // namespace

command_runner add_demo_command(CLI::App& app) {
  auto opt = std::make_shared<demo_options>();
  auto* cmd = app.add_subcommand(
      "demo",
      "Run a multi-turn conversation cold and warm; print TTFT per turn for each policy (default: CPU, SmolLM2)");
  cmd->add_option("--model", opt->rt.model_path, "GGUF or safetensors model (default: $KVFLOW_MODEL or models/)");
  cmd->add_option("--preset", opt->rt.preset, "Use random weights of a preset instead of a model file");
  cmd->add_option("--backend", opt->rt.backend, "cpu, cuda or auto")->capture_default_str();
  cmd->add_option("--chunk-tokens", opt->rt.chunk_tokens, "Tokens per chunk")->capture_default_str();
  cmd->add_option("--threads", opt->rt.threads, "CPU threads (0: all cores)")->capture_default_str();
  cmd->add_option("--disk-dir", opt->rt.disk_dir,
                  "Chunk file folder, created if missing and kept afterwards (default: a temporary one, removed)");
  cmd->add_option("--disk-gbps", opt->rt.disk_gbps, "Pace the disk tier to this many Gbit/s (0: unpaced)")
      ->capture_default_str();
  cmd->add_option("--host-gb", opt->rt.host_tier_gb, "Host tier capacity in GB (0: no host tier)")
      ->capture_default_str();
  cmd->add_option("--policies", opt->policies, "Policies to compare")->capture_default_str();
  cmd->add_option("--cluster", opt->rt.cluster_file, "Cluster file of kvflow nodes whose tiers serve as a remote tier");
  cmd->add_option("--document-repeats", opt->document_repeats, "Length of the shared document (paragraphs)")
      ->capture_default_str();
  cmd->add_option("--reply-tokens", opt->reply_tokens, "Tokens per reply")->capture_default_str();
  return [opt] { return run_demo(*opt); };
}

}  // namespace kvflow::app
