#include "kernels/model/blend.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>

#include "kernels/cpu/rope_delta.hpp"
#include "kernels/model/engine_memory.hpp"
#include "messages/error.hpp"

namespace kvflow::model {
namespace {

void require_host_f32(const engine& e, const char* what) {
  if (e.kv_type() != dtype::f32)
    throw error(errc::unsupported, std::string(what) + ": selective recompute runs on the CPU backend (f32 blocks)");
}

}  // namespace

int recomputed_share(double ratio, int count) {
  return std::clamp(static_cast<int>(std::lround(ratio * count)), 0, count);
}

const char* to_string(token_selection s) { return s == token_selection::epic ? "epic" : "cacheblend"; }

token_selection parse_selection(const std::string& name) {
  if (name == "cacheblend") return token_selection::cacheblend;
  if (name == "epic") return token_selection::epic;
  throw error(errc::invalid_argument, "token selection '" + name + "' (use cacheblend or epic)");
}

void check_segments(const std::vector<prompt_segment>& segments, int prompt_tokens) {
  int at = 0;
  for (std::size_t i = 0; i < segments.size(); ++i) {
    const auto& s = segments[i];
    if (s.begin != at || s.count <= 0)
      throw error(errc::invalid_argument, "prompt segment " + std::to_string(i) + " covers [" +
                                              std::to_string(s.begin) + ", " + std::to_string(s.begin + s.count) +
                                              ") but the previous one ends at " + std::to_string(at));
    at += s.count;
  }
  if (at != prompt_tokens)
    throw error(errc::invalid_argument,
                "prompt segments cover " + std::to_string(at) + " of " + std::to_string(prompt_tokens) + " tokens");
}

std::vector<std::int32_t> sink_prefix(const std::vector<std::int32_t>& prompt,
                                      const std::vector<prompt_segment>& segments) {
  if (prompt.empty() || segments.empty() || segments.front().document) return {};
  return {prompt.front()};
}

void document_kv(engine& e, const std::vector<std::int32_t>& tokens, kv_block out,
                 const std::vector<std::int32_t>& sink) {
  const int n = static_cast<int>(tokens.size());
  if (n == 0 || out.shape.tokens != n)
    throw error(errc::invalid_argument, "document_kv: a block of " + std::to_string(out.shape.tokens) +
                                            " tokens for a document of " + std::to_string(n));
  // With a sink prefix the prefix and the document run as one block and
  // only the document's rows are kept (positions [p, p + n): place_document's
  // stored_at).
  const int p = static_cast<int>(sink.size());
  if (p > 0) require_host_f32(e, "document_kv with a sink prefix");
  std::vector<std::int32_t> all(sink);
  all.insert(all.end(), tokens.begin(), tokens.end());
  const kv_shape ws = kv_shape_of(e.cfg(), p + n, out.shape.type);
  std::vector<float> whole(p > 0 ? ws.bytes() / sizeof(float) : 0);
  engine_memory hidden(e, static_cast<std::size_t>(p + n) * e.cfg().hidden * sizeof(float));
  chunk_job job;
  job.tokens = all.data();
  job.count = p + n;
  job.layer_end = e.cfg().layers;
  job.out = p > 0 ? kv_block{whole.data(), ws} : out;
  job.hidden = {hidden.as<float>(), p + n};
  e.run(job);
  e.synchronize();
  if (p == 0) return;
  const kv_shape& os = out.shape;
  auto* dst = static_cast<float*>(out.data);
  const std::size_t row = sizeof(float) * static_cast<std::size_t>(n) * os.head_dim;
  for (int l = 0; l < os.layers; ++l)
    for (int kv = 0; kv < 2; ++kv)
      for (int h = 0; h < os.kv_heads; ++h)
        std::memcpy(dst + os.offset(l, kv, h, 0, 0), whole.data() + ws.offset(l, kv, h, p, 0), row);
}

void document_kv_at(engine& e, const std::vector<std::int32_t>& tokens, int at, kv_block out) {
  const int n = static_cast<int>(tokens.size());
  if (n == 0 || out.shape.tokens != n || at < 0)
    throw error(errc::invalid_argument, "document_kv_at: a block of " + std::to_string(out.shape.tokens) +
                                            " tokens for a document of " + std::to_string(n) + " at " +
                                            std::to_string(at));
  engine_memory hidden(e, static_cast<std::size_t>(n) * e.cfg().hidden * sizeof(float));
  std::vector<std::int32_t> rows(static_cast<std::size_t>(n));
  std::iota(rows.begin(), rows.end(), 0);
  selected_job job;
  job.tokens = tokens.data();
  job.positions = rows.data();
  job.count = n;
  job.layer_end = e.cfg().layers;
  job.kv = out;
  job.hidden = {hidden.as<float>(), n};
  job.rope_offset = at;
  e.run_selected(job);
  e.synchronize();
}

void place_document(const kv_block& document, int at, kv_block prompt, const std::vector<float>& inv_freq,
                    int stored_at) {
  const kv_shape& d = document.shape;
  const kv_shape& p = prompt.shape;
  if (d.type != dtype::f32 || p.type != dtype::f32 || d.layers != p.layers || d.kv_heads != p.kv_heads ||
      d.head_dim != p.head_dim || at < 0 || at + d.tokens > p.tokens)
    throw error(errc::invalid_argument, "place_document: a document of " + std::to_string(d.tokens) + " tokens at " +
                                            std::to_string(at) + " of a prompt block of " + std::to_string(p.tokens) +
                                            " (f32 blocks of one model)");
  const auto* src = static_cast<const float*>(document.data);
  auto* dst = static_cast<float*>(prompt.data);
  const std::size_t row = sizeof(float) * static_cast<std::size_t>(d.tokens) * d.head_dim;
  for (int l = 0; l < d.layers; ++l)
    for (int kv = 0; kv < 2; ++kv)
      for (int h = 0; h < d.kv_heads; ++h)
        std::memcpy(dst + p.offset(l, kv, h, at, 0), src + d.offset(l, kv, h, 0, 0), row);
  cpu::rope_delta_block(prompt.data, p, at, d.tokens, at - stored_at, inv_freq.data());
}

std::vector<std::int32_t> select_leading(const std::vector<prompt_segment>& segments, double ratio) {
  std::vector<std::int32_t> out;
  for (const auto& s : segments) {
    if (!s.document) continue;
    const int k = recomputed_share(ratio, s.count);
    for (int i = 0; i < k; ++i) out.push_back(s.begin + i);
  }
  return out;
}

std::vector<std::int32_t> select_deviating(const std::vector<prompt_segment>& segments,
                                           const std::vector<float>& deviation, double ratio) {
  std::vector<std::int32_t> candidates;
  for (const auto& s : segments)
    if (s.document)
      for (int i = 0; i < s.count; ++i) candidates.push_back(s.begin + i);
  const int k = recomputed_share(ratio, static_cast<int>(candidates.size()));
  for (auto p : candidates)
    if (static_cast<std::size_t>(p) >= deviation.size())
      throw error(errc::invalid_argument, "select_deviating: no deviation for position " + std::to_string(p));
  std::stable_sort(candidates.begin(), candidates.end(),
                   [&](std::int32_t a, std::int32_t b) { return deviation[a] > deviation[b]; });
  candidates.resize(static_cast<std::size_t>(k));
  std::sort(candidates.begin(), candidates.end());
  return candidates;
}

namespace {

// Adds each marked position's squared change of K and V in one layer (`now`
// against `cached`, both that layer's [2][kv_heads][tokens][head_dim]) to
// deviation[position].
void add_deviation(const kv_shape& s, const float* now, const float* cached, const std::vector<char>& marked,
                   std::vector<float>& deviation) {
  for (int kvi = 0; kvi < 2; ++kvi)
    for (int h = 0; h < s.kv_heads; ++h)
      for (int t = 0; t < s.tokens; ++t) {
        if (!marked[t]) continue;
        const std::size_t o = s.offset(0, kvi, h, t, 0);
        float sum = 0;
        for (int d = 0; d < s.head_dim; ++d) {
          const float diff = now[o + d] - cached[o + d];
          sum += diff * diff;
        }
        deviation[t] += sum;
      }
}

}  // namespace

blend_result blend_prefill(engine& e, const std::vector<std::int32_t>& prompt,
                           const std::vector<prompt_segment>& segments, kv_block kv, const blend_options& opts) {
  require_host_f32(e, "blend_prefill");
  const config& c = e.cfg();
  const int n = static_cast<int>(prompt.size());
  check_segments(segments, n);
  if (kv.shape.tokens != n || !kv.data)
    throw error(errc::invalid_argument, "blend_prefill: a KV block of " + std::to_string(kv.shape.tokens) +
                                            " tokens for a prompt of " + std::to_string(n));
  if (!(opts.ratio >= 0 && opts.ratio <= 1))
    throw error(errc::invalid_argument, "blend_prefill: ratio " + std::to_string(opts.ratio) + " outside [0, 1]");
  const int check = opts.selection == token_selection::cacheblend ? std::clamp(opts.check_layers, 0, c.layers) : 0;
  const std::size_t hidden_row = static_cast<std::size_t>(c.hidden);

  blend_result r;
  std::vector<char> is_document(static_cast<std::size_t>(n), 0);
  for (const auto& s : segments)
    if (s.document) {
      std::fill(is_document.begin() + s.begin, is_document.begin() + s.begin + s.count, 1);
      r.document_tokens += s.count;
    }

  // Check layers: every token, every row of the block recomputed. The last
  // check layer's cached K and V are kept to measure how far each document
  // token moved once it could attend across documents.
  engine_memory all_hidden(e, static_cast<std::size_t>(n) * hidden_row * sizeof(float));
  std::vector<float> deviation(static_cast<std::size_t>(n), 0.0f);
  if (check > 0) {
    const kv_shape& s = kv.shape;
    const float* base = static_cast<const float*>(kv.data);
    const std::size_t layer_elems = s.layer_elems();
    std::vector<float> cached(base + s.offset(check - 1, 0, 0, 0, 0),
                              base + s.offset(check - 1, 0, 0, 0, 0) + layer_elems);
    std::vector<std::int32_t> every(static_cast<std::size_t>(n));
    std::iota(every.begin(), every.end(), 0);
    selected_job job;
    job.tokens = prompt.data();
    job.positions = every.data();
    job.count = n;
    job.layer_end = check;
    job.kv = kv;
    job.hidden = {all_hidden.as<float>(), n};
    e.run_selected(job);
    add_deviation(s, base + s.offset(check - 1, 0, 0, 0, 0), cached.data(), is_document, deviation);
  }

  const int refine = check > 0 ? std::clamp(opts.refine_layers, 0, c.layers - check) : 0;
  if (refine > 0 && opts.ratio < 1) {
    // The wide set (plus every token without cached KV, whose rows the wide
    // set attends to) runs layers [check, check + refine); the deviation in
    // the last of them ranks the wide set.
    const int last = check + refine - 1;
    const kv_shape& s = kv.shape;
    const float* base = static_cast<const float*>(kv.data);
    const std::vector<float> cached(base + s.offset(last, 0, 0, 0, 0),
                                    base + s.offset(last, 0, 0, 0, 0) + s.layer_elems());
    std::vector<std::int32_t> wide =
        select_deviating(segments, deviation, std::min(1.0, opts.ratio * std::max(1.0, opts.refine_factor)));
    std::vector<char> in_wide(static_cast<std::size_t>(n), 0);
    for (auto p : wide) in_wide[p] = 1;
    for (int t = 0; t < n; ++t)
      if (!is_document[t] || t == n - 1) wide.push_back(t);
    std::sort(wide.begin(), wide.end());
    wide.erase(std::unique(wide.begin(), wide.end()), wide.end());
    const int w = static_cast<int>(wide.size());
    engine_memory wide_rows(e, static_cast<std::size_t>(w) * hidden_row * sizeof(float));
    std::vector<std::int32_t> wide_tokens(static_cast<std::size_t>(w));
    for (int i = 0; i < w; ++i) {
      wide_tokens[i] = prompt[wide[i]];
      std::memcpy(wide_rows.as<float>() + i * hidden_row, all_hidden.as<float>() + wide[i] * hidden_row,
                  hidden_row * sizeof(float));
    }
    selected_job job;
    job.tokens = wide_tokens.data();
    job.positions = wide.data();
    job.count = w;
    job.layer_begin = check;
    job.layer_end = check + refine;
    job.kv = kv;
    job.hidden = {wide_rows.as<float>(), w};
    e.run_selected(job);
    std::fill(deviation.begin(), deviation.end(), -1.0f);  // outside the wide set: never chosen
    for (int t = 0; t < n; ++t)
      if (in_wide[t]) deviation[t] = 0;
    add_deviation(s, base + s.offset(last, 0, 0, 0, 0), cached.data(), in_wide, deviation);
  }
  const bool tapered = opts.selection == token_selection::cacheblend && opts.taper > 0 && refine == 0 && check > 0 &&
                       check < c.layers && opts.ratio > 0 && opts.ratio < 1;
  // With taper, layer l recomputes share(l) of the document tokens; the
  // shares fall linearly and average `ratio` over [check, layers).
  auto share = [&](int l) {
    const int span = c.layers - 1 - check;
    const double x = span > 0 ? static_cast<double>(l - check) / span : 0.5;
    return std::clamp(opts.ratio * (1 + std::min(1.0, opts.taper) * (1 - 2 * x)), 0.0, 1.0);
  };
  std::vector<std::int32_t> chosen = opts.selection == token_selection::cacheblend
                                         ? select_deviating(segments, deviation, tapered ? share(check) : opts.ratio)
                                         : select_leading(segments, opts.ratio);
  r.selected_document_tokens = static_cast<int>(chosen.size());
  // Tokens outside documents have no cached KV; the last one's hidden state
  // gives the next token, so it is computed even inside a document.
  for (int t = 0; t < n; ++t)
    if (!is_document[t] || t == n - 1) chosen.push_back(t);
  std::sort(chosen.begin(), chosen.end());
  chosen.erase(std::unique(chosen.begin(), chosen.end()), chosen.end());
  r.recomputed = chosen;

  const int m = static_cast<int>(chosen.size());
  engine_memory rows(e, static_cast<std::size_t>(m) * hidden_row * sizeof(float));
  std::vector<std::int32_t> tokens(static_cast<std::size_t>(m));
  for (int i = 0; i < m; ++i) {
    tokens[i] = prompt[chosen[i]];
    if (check > 0)
      std::memcpy(rows.as<float>() + i * hidden_row, all_hidden.as<float>() + chosen[i] * hidden_row,
                  hidden_row * sizeof(float));
  }
  r.recomputed_row_layers = static_cast<double>(m) * (c.layers - check);
  if (check < c.layers && !tapered) {
    selected_job job;
    job.tokens = tokens.data();
    job.positions = chosen.data();
    job.count = m;
    job.layer_begin = check;
    job.layer_end = c.layers;
    job.kv = kv;
    job.hidden = {rows.as<float>(), m};
    e.run_selected(job);
  }
  int rows_left = m;
  if (tapered) {
    // CacheBlend's gradual filtering: one layer at a time; after layer l the
    // document rows keep the share(l + 1) of the document tokens whose K/V
    // moved most in layer l (a subset of this layer's: a row's hidden state
    // exists only while it is computed in every layer below).
    const kv_shape& s = kv.shape;
    const float* base = static_cast<const float*>(kv.data);
    std::vector<std::int32_t> pos = chosen;
    std::vector<char> marked(static_cast<std::size_t>(n), 0);
    r.recomputed_row_layers = 0;
    for (int l = check; l < c.layers; ++l) {
      const int w = static_cast<int>(pos.size());
      std::vector<float> cached;
      if (l + 1 < c.layers)
        cached.assign(base + s.offset(l, 0, 0, 0, 0), base + s.offset(l, 0, 0, 0, 0) + s.layer_elems());
      selected_job job;
      job.positions = pos.data();
      job.count = w;
      job.layer_begin = l;
      job.layer_end = l + 1;
      job.kv = kv;
      job.hidden = {rows.as<float>(), w};
      e.run_selected(job);
      r.recomputed_row_layers += w;
      if (l + 1 == c.layers) break;
      std::fill(marked.begin(), marked.end(), 0);
      std::vector<float> dev(static_cast<std::size_t>(n), -1.0f);  // not a candidate: never kept
      for (auto p : pos)
        if (is_document[p] && p != n - 1) marked[p] = 1, dev[p] = 0;
      add_deviation(s, base + s.offset(l, 0, 0, 0, 0), cached.data(), marked, dev);
      std::vector<std::int32_t> keep = select_deviating(segments, dev, share(l + 1));
      std::vector<char> kept(static_cast<std::size_t>(n), 0);
      for (auto p : keep)
        if (marked[p]) kept[p] = 1;
      // Compact the rows in place (ascending positions stay ascending).
      int out = 0;
      for (int i = 0; i < w; ++i) {
        const auto p = pos[i];
        if (is_document[p] && p != n - 1 && !kept[p]) continue;
        if (out != i)
          std::memcpy(rows.as<float>() + out * hidden_row, rows.as<float>() + i * hidden_row,
                      hidden_row * sizeof(float));
        pos[out++] = p;
      }
      pos.resize(static_cast<std::size_t>(out));
    }
    rows_left = static_cast<int>(pos.size());
  }
  const float* last = check < c.layers ? rows.as<float>() + (rows_left - 1) * hidden_row
                                       : all_hidden.as<float>() + (n - 1) * hidden_row;
  r.last_hidden.assign(last, last + hidden_row);
  return r;
}

}  // namespace kvflow::model
