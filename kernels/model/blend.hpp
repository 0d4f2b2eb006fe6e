#pragma once
// Non-prefix KV reuse (CacheTune, CacheBlend, EPIC): a prompt stitches
// documents whose KV was computed on its own (positions from 0) in a new
// order after new text. Each document's K is rotated to its new position
// (kernels/cpu/rope_delta.hpp); a chosen share of its tokens is recomputed
// so that they attend across documents, the rest is reused as loaded.
//
// Token selection:
//  - cacheblend (the default): layers [0, check_layers) are recomputed for
//    every token; the document tokens whose K and V in the last of them
//    deviate most from the cached values are recomputed in every later
//    layer. Layer 0's KV depends only on the token and its position, so it
//    never deviates: layer 1 is the first that shows cross-document
//    attention, hence check_layers = 2. It is the default because it asks
//    the prompt which tokens lost most by being cached alone: at 15% it
//    matched or beat EPIC on every measured set (SmolLM2-135M-Instruct,
//    apps/bench/results/nonprefix_quality.json: top-1 0.867 against 0.859,
//    KL 0.220 against 0.226), for two full layers of extra compute.
//  - epic: the first tokens of each document (EPIC's attention sinks), no
//    check layers: cheaper, blind to where the cross-document mixing is.
// Tokens outside documents (system prompt, question) are always computed.

#include <cstdint>
#include <string>
#include <vector>

#include "kernels/model/engine.hpp"

namespace kvflow::model {

/// Tokens [begin, begin + count) of a prompt; `document` spans have cached KV.
struct prompt_segment {
  int begin = 0;
  int count = 0;
  bool document = false;
};

enum class token_selection { cacheblend, epic };

const char* to_string(token_selection s);
/// "cacheblend" or "epic"; throws kvflow::error(invalid_argument) otherwise.
token_selection parse_selection(const std::string& name);

struct blend_options {
  token_selection selection = token_selection::cacheblend;
  /// Share of the documents' tokens recomputed in every layer (0..1).
  double ratio = 0.15;
  /// cacheblend: layers recomputed for every token; the deviation is read in the last.
  int check_layers = 2;
  /// cacheblend: after the check layers, refine_factor x ratio of the document
  /// tokens (the largest deviations) run `refine_layers` more layers, and the
  /// final `ratio` is chosen among them by their deviation in the last of
  /// those (CacheBlend's layer-wise narrowing: deeper layers show better
  /// which tokens lost most). 0: select at the check layers alone.
  int refine_layers = 0;
  double refine_factor = 2;
  /// cacheblend: CacheBlend's gradual filtering at the same compute. 0: the
  /// same `ratio` of document tokens in every layer above the check layers.
  /// t in (0, 1]: layer l recomputes r_l = ratio * (1 + t * (1 - 2x)) of
  /// them (x = 0 at the first layer above the check layers, 1 at the last;
  /// the mean over those layers is `ratio`), each layer's set the
  /// largest-deviating part of the previous one by its K/V deviation in that
  /// layer (more tokens where the cross-document mixing starts, fewer where
  /// it has been settled).
  double taper = 0;
};

/// What blend_prefill did.
struct blend_result {
  std::vector<std::int32_t>
      recomputed;  ///< positions recomputed above the check layers, ascending (with taper: in the first of them)
  int document_tokens = 0;
  int selected_document_tokens = 0;  ///< document tokens among `recomputed`
  double recomputed_row_layers = 0;  ///< rows x layers run above the check layers (the compute spent)
  std::vector<float> last_hidden;    ///< [hidden] of the prompt's last position (host, f32)
};

/// Checks that `segments` tile [0, prompt_tokens) in order; throws
/// kvflow::error(invalid_argument) with the first gap or overlap.
void check_segments(const std::vector<prompt_segment>& segments, int prompt_tokens);

/// The sink prefix a prompt's document entries can be computed after: the
/// prompt's first token when it lies outside every document (the BOS or chat
/// start token every prompt of a model begins with, whose KV the prompt holds
/// at position 0 anyway), else none. A document computed from position 0 on
/// its own makes its first token an attention sink with abnormal K and V;
/// stitched mid-prompt, that token draws attention it would not get in a full
/// prefill. Computed after the sink prefix, the first token is an ordinary
/// one. Measured on SmolLM2-135M-Instruct (24 prompts of 4-8 documents,
/// apps/bench/results/nonprefix_quality.json): reuse with no recompute rises
/// from top-1 0.753 / KL 0.568 to 0.839 / 0.370, and a blind selection
/// (cacheblend with one check layer, whose deviations are all zero) from
/// 0.784 / 0.464 to 0.846 / 0.278 at 15%. With a working selection it buys
/// nothing: cacheblend and EPIC recompute the abnormal first tokens anyway
/// (cacheblend at 15%: 0.867 / 0.220 alone, 0.859 / 0.229 after the sink;
/// at 30% KL 0.158 against 0.184). The runtime recomputes at least 15%, so
/// its entries stay computed alone; a path that reuses with no recompute
/// should store entries after the sink (and key them by it).
std::vector<std::int32_t> sink_prefix(const std::vector<std::int32_t>& prompt,
                                      const std::vector<prompt_segment>& segments);

/// The KV of `tokens` on their own, into `out` (out.shape.tokens == n): what
/// a document entry stores. Without `sink`, at positions [0, n). With a sink
/// prefix (sink_prefix()), computed after it at positions [p, p + n) of
/// [sink, tokens] and only the document's rows kept: the document's first
/// token is then no attention sink of its own (see sink_prefix()). A sink
/// needs f32 host blocks (the CPU backend).
void document_kv(engine& e, const std::vector<std::int32_t>& tokens, kv_block out,
                 const std::vector<std::int32_t>& sink = {});

/// The KV of `tokens` on their own as if they stood at positions
/// [at, at + n) (selected_job::rope_offset): what document_kv's block
/// rotated by `at` must equal. The independent check of a placement; CPU
/// backend.
void document_kv_at(engine& e, const std::vector<std::int32_t>& tokens, int at, kv_block out);

/// Copies a document's block (computed at positions from `stored_at`: the
/// sink prefix's length) into rows [at, at + n) of a prompt's block and
/// rotates its K by at - stored_at. CPU backend (f32 host blocks).
void place_document(const kv_block& document, int at, kv_block prompt, const std::vector<float>& inv_freq,
                    int stored_at = 0);

/// The tokens of `count` that `ratio` recomputes: round(ratio * count),
/// clamped to [0, count].
int recomputed_share(double ratio, int count);

/// EPIC: the first round(ratio * count) tokens of each document.
std::vector<std::int32_t> select_leading(const std::vector<prompt_segment>& segments, double ratio);

/// CacheBlend: the round(ratio * document tokens) document positions of
/// largest `deviation` (indexed by position), ascending; ties go to the
/// earlier position.
std::vector<std::int32_t> select_deviating(const std::vector<prompt_segment>& segments,
                                           const std::vector<float>& deviation, double ratio);

/// Restores a prompt's KV in `kv` (shape.tokens == prompt size) whose
/// document rows already hold placed documents (place_document); the other
/// rows are computed. Returns the last position's hidden state. Needs an
/// engine with run_selected and f32 host blocks (the CPU backend).
blend_result blend_prefill(engine& e, const std::vector<std::int32_t>& prompt,
                           const std::vector<prompt_segment>& segments, kv_block kv, const blend_options& opts);

}  // namespace kvflow::model
