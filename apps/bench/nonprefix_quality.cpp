// kvflow_nonprefix_quality: quality of non-prefix KV reuse on a real model
// against a full recompute. RAG prompts of cached documents in random orders
// plus a question (apps/bench/nonprefix_documents.json); for each selection
// (cacheblend, epic) and ratio, top-1 agreement of the next token and KL of
// the next-token distribution over the first tokens of the full recompute's
// greedy answer, teacher-forced. Writes JSON records (model, selection,
// ratio, top1_agreement, kl, samples, cases, recomputed_share, seconds).

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "kernels/model/blend_bound.hpp"
#include "kernels/model/blend_quality.hpp"
#include "kernels/model/cpu_engine.hpp"
#include "kernels/model/model_file.hpp"
#include "messages/error.hpp"

int main(int argc, char** argv) {
  using namespace kvflow::model;
  CLI::App app{"kvflow_nonprefix_quality: non-prefix KV reuse (CacheBlend, EPIC) against a full recompute"};
  std::string model_path, corpus_path = "apps/bench/nonprefix_documents.json", out_path;
  int cases = 12, min_docs = 4, max_docs = 8, answer_tokens = 16, check_layers = 2, threads = 0;
  int refine_layers = 0;
  double refine_factor = 2;
  std::uint64_t seed = 20;
  std::vector<double> ratios{0, 0.05, 0.15, 0.3};
  std::vector<std::string> selections{"cacheblend", "epic"};
  std::vector<std::string> sinks{"on"};
  std::vector<double> tapers{0};
  int sink_tokens = 1;
  app.add_option("--model", model_path, "GGUF or safetensors model (default: SmolLM2-135M-Instruct from models/)");
  app.add_option("--corpus", corpus_path, "documents and questions (JSON)")->check(CLI::ExistingFile);
  app.add_option("--out", out_path, "JSON file for the records (default: stdout only)");
  app.add_option("--cases", cases, "prompts")->check(CLI::Range(1, 1000));
  app.add_option("--min-docs", min_docs, "fewest documents per prompt")->check(CLI::Range(1, 64));
  app.add_option("--max-docs", max_docs, "most documents per prompt")->check(CLI::Range(1, 64));
  app.add_option("--answer-tokens", answer_tokens, "answer tokens compared")->check(CLI::Range(1, 256));
  app.add_option("--check-layers", check_layers, "cacheblend: layers recomputed for every token")
      ->check(CLI::Range(1, 8));
  app.add_option("--refine-layers", refine_layers,
                 "cacheblend: layers the refine-factor x ratio widest-deviating tokens run before the final choice")
      ->check(CLI::Range(0, 256));
  app.add_option("--refine-factor", refine_factor, "cacheblend: width of the refined set, in multiples of the ratio")
      ->check(CLI::Range(1.0, 100.0));
  app.add_option("--ratios", ratios, "shares of document tokens recomputed (0..1)")
      ->delimiter(',')
      ->check(CLI::Range(0.0, 1.0));
  app.add_option("--selections", selections, "cacheblend and/or epic")->delimiter(',');
  app.add_option("--sinks", sinks,
                 "document entries computed after the sink prefix (on: the prompts' first token) and/or alone (off)")
      ->delimiter(',')
      ->check(CLI::IsMember({"on", "off"}));
  app.add_option("--sink-tokens", sink_tokens,
                 "length of the sink prefix: the prompts' first tokens (1: the chat start token alone)")
      ->check(CLI::Range(1, 64));
  app.add_option("--tapers", tapers,
                 "cacheblend: gradual filtering, per-layer shares falling linearly from ratio x (1 + t) to "
                 "ratio x (1 - t) at the same compute (0: the same share in every layer)")
      ->delimiter(',')
      ->check(CLI::Range(0.0, 1.0));
  bool bounds = false, bound_tokens = false;
  int greedy_candidates = 32, greedy_steps = 6;
  std::vector<int> layer_cuts{2, 4, 8, 16, 24};
  app.add_flag("--bounds", bounds,
               "instead of the selections: oracles from the full recompute's own KV (kernels/model/blend_bound.hpp) "
               "at the first of --ratios, documents as the first of --sinks")
      ->group("Bounds");
  app.add_flag("--bound-tokens", bound_tokens, "with --bounds: the token oracles too (slow)")->group("Bounds");
  app.add_option("--layer-cuts", layer_cuts, "with --bounds: layer cuts")->delimiter(',')->group("Bounds");
  app.add_option("--greedy-candidates", greedy_candidates, "with --bound-tokens: candidates per greedy step")
      ->check(CLI::Range(1, 4096))
      ->group("Bounds");
  app.add_option("--greedy-steps", greedy_steps, "with --bound-tokens: greedy steps")
      ->check(CLI::Range(1, 4096))
      ->group("Bounds");
  app.add_option("--seed", seed, "prompt sampling seed");
  app.add_option("--threads", threads, "CPU threads (0: all cores)")->check(CLI::Range(0, 256));
  CLI11_PARSE(app, argc, argv);
  try {
    if (min_docs > max_docs) throw kvflow::error(kvflow::errc::invalid_argument, "--min-docs above --max-docs");
    std::ifstream in(corpus_path);
    if (!in) throw kvflow::error(kvflow::errc::not_found, "cannot read corpus " + corpus_path);
    std::stringstream text;
    text << in.rdbuf();
    const auto corpus = parse_rag_corpus(text.str());
    const auto path = model_path.empty() ? default_model_path() : model_path;
    auto lm = load_model_file(path);
    if (!lm.tok) throw kvflow::error(kvflow::errc::unsupported, "model " + path + " has no tokenizer");
    auto qcases = make_rag_cases(*lm.tok, corpus, cases, min_docs, max_docs, seed);
    const std::string model_name = lm.w.cfg.name;
    auto e = make_cpu_engine(std::move(lm.w), threads);
    if (bounds) {
      bound_options bo;
      bo.ratio = ratios.front();
      bo.layer_cuts = layer_cuts;
      bo.tokens = bound_tokens;
      bo.candidates = greedy_candidates;
      bo.steps = greedy_steps;
      bo.sink = sinks.front() == "on";
      const auto t0 = std::chrono::steady_clock::now();
      const auto points = evaluate_bounds(*e, qcases, answer_tokens, bo);
      const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      nlohmann::json records = nlohmann::json::array();
      for (const auto& p : points) {
        records.push_back({{"model", model_name},
                           {"backend", "cpu"},
                           {"bound", p.kind},
                           {"selection", p.selection.empty() ? p.kind : "oracle_" + p.selection},
                           {"layer_cut", p.layer},
                           {"ratio", p.ratio},
                           {"sink_prefix", bo.sink ? lm.tok->decode({qcases.front().prompt.front()}) : "none"},
                           {"top1_agreement", p.top1()},
                           {"kl", p.kl()},
                           {"near_tie_misses", p.score.near_tie_misses},
                           {"samples", p.score.samples},
                           {"cases", cases},
                           {"documents_per_prompt", std::to_string(min_docs) + "-" + std::to_string(max_docs)},
                           {"answer_tokens", answer_tokens},
                           {"greedy_candidates", greedy_candidates},
                           {"greedy_steps", greedy_steps},
                           {"seed", seed},
                           {"seconds_all_bounds", seconds}});
        std::printf("%-20s %-16s cut %2d ratio %.2f  top1 %.3f  kl %.4f  (%d samples, %d misses near a tie)\n",
                    p.kind.c_str(), p.selection.c_str(), p.layer, p.ratio, p.top1(), p.kl(), p.score.samples,
                    p.score.near_tie_misses);
      }
      if (!out_path.empty()) {
        std::ofstream out(out_path);
        out << records.dump(2) << "\n";
        if (!out) throw kvflow::error(kvflow::errc::io_failure, "cannot write " + out_path);
      }
      return 0;
    }
    std::vector<quality_config> configs;
    for (const auto& k : sinks)
      for (const auto& s : selections)
        for (double r : ratios)
          for (double t : tapers)
            if (t == 0 || s == "cacheblend") configs.push_back({parse_selection(s), r, k == "on", t});
    // The sink prefix: the token every prompt of this model starts with
    // (SmolLM2's chat start <|im_start|>, or BOS), whose KV the prompt holds
    // at position 0 anyway.
    if (sink_tokens > qcases.front().segments.front().count)
      throw kvflow::error(kvflow::errc::invalid_argument, "--sink-tokens longer than the prompts' system text");
    const std::vector<std::int32_t> sink(qcases.front().prompt.begin(), qcases.front().prompt.begin() + sink_tokens);
    const std::string lm_sink_text = lm.tok->decode(sink);
    const auto t0 = std::chrono::steady_clock::now();
    const auto points =
        evaluate_blend_quality(*e, qcases, configs, answer_tokens, check_layers, refine_layers, refine_factor, sink);
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    int prompt_tokens = 0;
    for (const auto& c : qcases) prompt_tokens += static_cast<int>(c.prompt.size());
    nlohmann::json records = nlohmann::json::array();
    for (const auto& p : points) {
      records.push_back({{"model", model_name},
                         {"backend", "cpu"},
                         {"selection", to_string(p.config.selection)},
                         {"ratio", p.config.ratio},
                         {"sink_prefix", p.config.sink ? lm_sink_text : std::string("none")},
                         {"check_layers", p.config.selection == token_selection::cacheblend ? check_layers : 0},
                         {"refine_layers", p.config.selection == token_selection::cacheblend ? refine_layers : 0},
                         {"refine_factor", refine_factor},
                         {"taper", p.config.taper},
                         {"top1_agreement", p.top1_agreement()},
                         {"kl", p.kl()},
                         {"first_token_agreement", p.first_token_agreement()},
                         {"near_tie_misses", p.near_tie_misses},
                         {"samples", p.samples},
                         {"cases", cases},
                         {"documents_per_prompt", std::to_string(min_docs) + "-" + std::to_string(max_docs)},
                         {"mean_prompt_tokens", static_cast<double>(prompt_tokens) / cases},
                         {"answer_tokens", answer_tokens},
                         {"recomputed_share", p.recomputed_share},
                         {"seed", seed},
                         {"seconds_all_configs", seconds}});
      std::printf(
          "%-10s sink %-3s taper %.2f ratio %.2f  top1 %.3f  kl %.4f  first token %.3f  (%d samples, %.3f of document "
          "tokens "
          "recomputed, %d misses near a tie)\n",
          to_string(p.config.selection), p.config.sink ? "on" : "off", p.config.taper, p.config.ratio,
          p.top1_agreement(), p.kl(), p.first_token_agreement(), p.samples, p.recomputed_share, p.near_tie_misses);
    }
    if (!out_path.empty()) {
      std::ofstream out(out_path);
      out << records.dump(2) << "\n";
      if (!out) throw kvflow::error(kvflow::errc::io_failure, "cannot write " + out_path);
    }
  } catch (const kvflow::error& e) {
    std::fprintf(stderr, "kvflow_nonprefix_quality: %s\n", e.what());
    return 1;
  }
  return 0;
}
