#include "kernels/model/blend_quality.hpp"

#include <algorithm>
#include <cmath>
#include <nlohmann/json.hpp>
#include <random>

#include "kernels/cpu/rope.hpp"
#include "messages/error.hpp"

namespace kvflow::model {
namespace {

struct host_kv {
  std::vector<float> data;
  kv_block view;
  host_kv(const config& c, int tokens) : data(kv_shape_of(c, tokens, dtype::f32).bytes() / sizeof(float), 0.0f) {
    view.data = data.data();
    view.shape = kv_shape_of(c, tokens, dtype::f32);
  }
};

std::vector<double> log_softmax(const std::vector<float>& logits) {
  const float top = *std::max_element(logits.begin(), logits.end());
  double sum = 0;
  for (float x : logits) sum += std::exp(static_cast<double>(x - top));
  const double log_sum = std::log(sum) + top;
  std::vector<double> out(logits.size());
  for (std::size_t i = 0; i < logits.size(); ++i) out[i] = logits[i] - log_sum;
  return out;
}

}  // namespace

// Teacher-forced in one chunk.
std::vector<std::vector<double>> answer_distributions(engine& e, const kv_block& prompt_kv,
                                                      const std::vector<float>& last_hidden,
                                                      const std::vector<std::int32_t>& answer) {
  const config& c = e.cfg();
  std::vector<std::vector<double>> out;
  std::vector<float> logits;
  std::vector<float> last = last_hidden;
  e.logits({last.data(), 1}, logits);
  out.push_back(log_softmax(logits));
  const int n = static_cast<int>(answer.size()) - 1;
  if (n <= 0) return out;
  host_kv tail(c, n);
  std::vector<float> hidden(static_cast<std::size_t>(n) * c.hidden);
  chunk_job job;
  job.tokens = answer.data();
  job.count = n;
  job.pos0 = prompt_kv.shape.tokens;
  job.layer_end = c.layers;
  job.past = {&prompt_kv, 1};
  job.out = tail.view;
  job.hidden = {hidden.data(), n};
  e.run(job);
  for (int i = 0; i < n; ++i) {
    e.logits({hidden.data() + static_cast<std::size_t>(i) * c.hidden, 1}, logits);
    out.push_back(log_softmax(logits));
  }
  return out;
}

namespace {

std::size_t argmax(const std::vector<double>& v) {
  return static_cast<std::size_t>(std::max_element(v.begin(), v.end()) - v.begin());
}

// Probability of the most likely token minus the second's (log-probabilities in).
double top2_margin(const std::vector<double>& logp) {
  double a = -INFINITY, b = -INFINITY;
  for (double x : logp)
    if (x > a) {
      b = a;
      a = x;
    } else if (x > b) {
      b = x;
    }
  return std::exp(a) - std::exp(b);
}

// Greedy answer of the full recompute, decoded one token at a time.
std::vector<std::int32_t> greedy_answer(engine& e, const kv_block& prompt_kv, const std::vector<float>& last_hidden,
                                        int tokens) {
  const config& c = e.cfg();
  std::vector<float> logits, hidden(last_hidden);
  e.logits({hidden.data(), 1}, logits);
  std::vector<std::int32_t> answer{static_cast<std::int32_t>(argmax(log_softmax(logits)))};
  std::vector<host_kv> steps;
  steps.reserve(static_cast<std::size_t>(tokens));
  std::vector<kv_block> past{prompt_kv};
  while (static_cast<int>(answer.size()) < tokens) {
    steps.emplace_back(c, 1);
    chunk_job job;
    job.tokens = &answer.back();
    job.count = 1;
    job.pos0 = prompt_kv.shape.tokens + static_cast<int>(answer.size()) - 1;
    job.layer_end = c.layers;
    job.past = {past.data(), static_cast<int>(past.size())};
    job.out = steps.back().view;
    job.hidden = {hidden.data(), 1};
    e.run(job);
    past.push_back(steps.back().view);
    e.logits({hidden.data(), 1}, logits);
    answer.push_back(static_cast<std::int32_t>(argmax(log_softmax(logits))));
  }
  return answer;
}

}  // namespace

agreement compare_distributions(const std::vector<std::vector<double>>& reference,
                                const std::vector<std::vector<double>>& got) {
  if (got.size() > reference.size())
    throw error(errc::invalid_argument, "compare_distributions: " + std::to_string(got.size()) +
                                            " distributions against " + std::to_string(reference.size()));
  agreement a;
  for (std::size_t i = 0; i < got.size(); ++i) {
    ++a.samples;
    const bool same = argmax(got[i]) == argmax(reference[i]);
    if (same) ++a.agreements;
    if (!same && top2_margin(reference[i]) < kNearTie) ++a.near_tie_misses;
    double kl = 0;
    for (std::size_t v = 0; v < got[i].size(); ++v) kl += std::exp(reference[i][v]) * (reference[i][v] - got[i][v]);
    a.kl_sum += std::max(0.0, kl);
  }
  return a;
}

full_reference full_recompute(engine& e, const quality_case& qc, int answer_tokens) {
  if (answer_tokens < 1) throw error(errc::invalid_argument, "full_recompute: answer_tokens < 1");
  const config& c = e.cfg();
  const int n = static_cast<int>(qc.prompt.size());
  host_kv full(c, n);
  std::vector<float> hidden(static_cast<std::size_t>(n) * c.hidden);
  chunk_job job;
  job.tokens = qc.prompt.data();
  job.count = n;
  job.layer_end = c.layers;
  job.out = full.view;
  job.hidden = {hidden.data(), n};
  e.run(job);
  const std::vector<float> last(hidden.end() - c.hidden, hidden.end());
  full_reference r;
  r.answer = greedy_answer(e, full.view, last, answer_tokens);
  r.logp = answer_distributions(e, full.view, last, r.answer);
  r.kv = std::move(full.data);
  return r;
}

rag_corpus parse_rag_corpus(const std::string& json_text) {
  rag_corpus c;
  try {
    auto j = nlohmann::json::parse(json_text);
    c.system = j.at("system").get<std::string>();
    c.question_prefix = j.at("question_prefix").get<std::string>();
    c.question_suffix = j.at("question_suffix").get<std::string>();
    for (const auto& d : j.at("documents")) {
      c.documents.push_back(d.at("text").get<std::string>());
      c.questions.push_back(d.at("question").get<std::string>());
    }
  } catch (const nlohmann::json::exception& e) {
    throw error(errc::invalid_argument, std::string("rag corpus: ") + e.what());
  }
  if (c.documents.empty()) throw error(errc::invalid_argument, "rag corpus: no documents");
  return c;
}

std::vector<quality_case> make_rag_cases(const tokenizer& tok, const rag_corpus& corpus, int count, int min_docs,
                                         int max_docs, std::uint64_t seed) {
  const int available = static_cast<int>(corpus.documents.size());
  if (min_docs < 1 || min_docs > max_docs || max_docs > available)
    throw error(errc::invalid_argument, "rag cases of " + std::to_string(min_docs) + " to " + std::to_string(max_docs) +
                                            " documents from a corpus of " + std::to_string(available));
  std::vector<std::vector<std::int32_t>> docs;
  for (const auto& d : corpus.documents) docs.push_back(tok.encode(d));
  std::mt19937_64 gen(seed);
  std::vector<quality_case> cases;
  for (int i = 0; i < count; ++i) {
    std::vector<int> order(static_cast<std::size_t>(available));
    for (int d = 0; d < available; ++d) order[d] = d;
    std::shuffle(order.begin(), order.end(), gen);
    const int k = min_docs + static_cast<int>(gen() % static_cast<std::uint64_t>(max_docs - min_docs + 1));
    order.resize(static_cast<std::size_t>(k));
    const int asked = order[gen() % static_cast<std::uint64_t>(k)];
    quality_case qc;
    auto add = [&](const std::vector<std::int32_t>& t, bool doc) {
      qc.segments.push_back({static_cast<int>(qc.prompt.size()), static_cast<int>(t.size()), doc});
      qc.prompt.insert(qc.prompt.end(), t.begin(), t.end());
    };
    auto head = tok.encode(corpus.system);
    if (tok.add_bos()) head.insert(head.begin(), tok.bos());
    add(head, false);
    for (int d : order) add(docs[d], true);
    add(tok.encode(corpus.question_prefix + corpus.questions[asked] + corpus.question_suffix), false);
    cases.push_back(std::move(qc));
  }
  return cases;
}

std::vector<quality_point> evaluate_blend_quality(engine& e, const std::vector<quality_case>& cases,
                                                  const std::vector<quality_config>& configs, int answer_tokens,
                                                  int check_layers, int refine_layers, double refine_factor,
                                                  const std::vector<std::int32_t>& sink) {
  if (answer_tokens < 1) throw error(errc::invalid_argument, "evaluate_blend_quality: answer_tokens < 1");
  const config& c = e.cfg();
  const auto inv = cpu::rope_inv_freq(c.head_dim, c.rope_theta, c.scaling);
  std::vector<quality_point> points;
  for (const auto& q : configs) points.push_back({q});
  for (const auto& qc : cases) {
    const int n = static_cast<int>(qc.prompt.size());
    check_segments(qc.segments, n);
    const auto ref = full_recompute(e, qc, answer_tokens);
    const auto& answer = ref.answer;
    const auto& reference = ref.logp;

    // Every document computed alone (without and with the sink prefix, as the
    // configurations ask), placed once; each configuration starts from a copy.
    auto place_all = [&](const std::vector<std::int32_t>& prefix) {
      host_kv placed(c, n);
      for (const auto& s : qc.segments) {
        if (!s.document) continue;
        host_kv doc(c, s.count);
        document_kv(e, std::vector<std::int32_t>(qc.prompt.begin() + s.begin, qc.prompt.begin() + s.begin + s.count),
                    doc.view, prefix);
        place_document(doc.view, s.begin, placed.view, inv, static_cast<int>(prefix.size()));
      }
      return placed.data;
    };
    bool want[2] = {false, false};
    for (const auto& p : points) want[p.config.sink ? 1 : 0] = true;
    std::vector<float> placed[2];
    if (want[0]) placed[0] = place_all({});
    if (want[1]) placed[1] = place_all(sink);
    for (auto& p : points) {
      host_kv kv(c, n);
      kv.data = placed[p.config.sink ? 1 : 0];
      kv.view.data = kv.data.data();
      blend_options o;
      o.selection = p.config.selection;
      o.ratio = p.config.ratio;
      o.check_layers = check_layers;
      o.refine_layers = refine_layers;
      o.refine_factor = refine_factor;
      o.taper = p.config.taper;
      const auto r = blend_prefill(e, qc.prompt, qc.segments, kv.view, o);
      const auto got = answer_distributions(e, kv.view, r.last_hidden, answer);
      const auto a = compare_distributions(reference, got);
      p.samples += a.samples;
      p.agreements += a.agreements;
      p.near_tie_misses += a.near_tie_misses;
      p.kl_sum += a.kl_sum;
      ++p.prompts;
      if (!got.empty() && argmax(got[0]) == argmax(reference[0])) ++p.first_agreements;
      // Document rows per layer above the check layers (with taper the
      // layers differ; the other rows are computed in every layer).
      const int above = c.layers - (o.selection == token_selection::cacheblend ? std::min(check_layers, c.layers) : 0);
      const double other_rows = static_cast<double>(r.recomputed.size() - r.selected_document_tokens);
      if (r.document_tokens > 0 && above > 0)
        p.recomputed_share += (r.recomputed_row_layers / above - other_rows) / r.document_tokens / cases.size();
    }
  }
  return points;
}

}  // namespace kvflow::model
