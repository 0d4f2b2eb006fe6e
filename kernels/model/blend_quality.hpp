#pragma once
// Quality of non-prefix reuse against a full recompute (the acceptance of
// issue 20): RAG prompts of cached documents in new orders plus a question;
// per selection and ratio, top-1 agreement of the next token and the KL
// divergence of the next-token distribution over the first tokens of the
// full recompute's greedy answer, teacher-forced.

#include <cstdint>
#include <string>
#include <vector>

#include "kernels/model/blend.hpp"
#include "kernels/model/tokenizer.hpp"

namespace kvflow::model {

/// A prompt whose document segments have cached KV.
struct quality_case {
  std::vector<std::int32_t> prompt;
  std::vector<prompt_segment> segments;
};

/// Documents with one question each, and the text around them
/// (apps/bench/nonprefix_documents.json).
struct rag_corpus {
  std::string system, question_prefix, question_suffix;
  std::vector<std::string> documents, questions;
};

/// Parses the corpus JSON; throws kvflow::error(invalid_argument) with the
/// missing field.
rag_corpus parse_rag_corpus(const std::string& json_text);

/// `count` prompts: system text, min_docs..max_docs distinct documents in a
/// random order, and the question of one of them. Deterministic in `seed`.
std::vector<quality_case> make_rag_cases(const tokenizer& tok, const rag_corpus& corpus, int count, int min_docs,
                                         int max_docs, std::uint64_t seed);

struct quality_config {
  token_selection selection = token_selection::cacheblend;
  double ratio = 0.15;
  /// Documents computed after evaluate_blend_quality's sink prefix (true) or
  /// from position 0 on their own (false).
  bool sink = false;
  /// blend_options::taper (cacheblend): gradual filtering at the same compute.
  double taper = 0;
};

/// A disagreement where the full recompute itself hesitates: its two most
/// likely tokens' probabilities differ by less than this.
inline constexpr double kNearTie = 0.05;

/// One configuration's scores over every case.
struct quality_point {
  quality_config config;
  int samples = 0;              ///< next-token distributions compared
  int agreements = 0;           ///< same argmax as the full recompute
  int prompts = 0;              ///< prompts compared (their first answer position)
  int first_agreements = 0;     ///< prompts whose first answer token is the full recompute's
  int near_tie_misses = 0;      ///< disagreements where the full recompute's top two differ by < kNearTie
  double kl_sum = 0;            ///< sum of KL(full || reuse) in nats
  double recomputed_share = 0;  ///< mean share of document tokens recomputed per layer above the check layers
  double top1_agreement() const { return samples ? static_cast<double>(agreements) / samples : 0; }
  double kl() const { return samples ? kl_sum / samples : 0; }
  double first_token_agreement() const { return prompts ? static_cast<double>(first_agreements) / prompts : 0; }
};

/// A case computed in full: its KV, the greedy answer of `answer_tokens`
/// and the next-token log-distributions along it (teacher-forced).
struct full_reference {
  std::vector<float> kv;  ///< f32 block of the prompt, kv_shape_of(cfg, prompt tokens)
  std::vector<std::int32_t> answer;
  std::vector<std::vector<double>> logp;
};
full_reference full_recompute(engine& e, const quality_case& qc, int answer_tokens);

/// The next-token log-distributions after a prompt restored in `prompt_kv`
/// (last position's hidden state `last_hidden`) and after each of the first
/// answer.size() - 1 answer tokens, teacher-forced.
std::vector<std::vector<double>> answer_distributions(engine& e, const kv_block& prompt_kv,
                                                      const std::vector<float>& last_hidden,
                                                      const std::vector<std::int32_t>& answer);

/// Top-1 agreements and summed KL(reference || got) of two such lists.
struct agreement {
  int samples = 0, agreements = 0, near_tie_misses = 0;
  double kl_sum = 0;
};
agreement compare_distributions(const std::vector<std::vector<double>>& reference,
                                const std::vector<std::vector<double>>& got);

/// Runs every case in full (greedy answer of `answer_tokens`), then per
/// configuration restores it from its documents (each computed alone and
/// placed) and compares the `answer_tokens` next-token distributions.
/// check_layers, refine_layers, refine_factor: blend_options' (cacheblend).
/// `sink`: the prefix documents are computed after in configurations with
/// quality_config::sink (document_kv).
std::vector<quality_point> evaluate_blend_quality(engine& e, const std::vector<quality_case>& cases,
                                                  const std::vector<quality_config>& configs, int answer_tokens,
                                                  int check_layers = 2, int refine_layers = 0, double refine_factor = 2,
                                                  const std::vector<std::int32_t>& sink = {});

}  // namespace kvflow::model
