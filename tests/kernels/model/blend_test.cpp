// Non-prefix reuse on the tiny random model: selective recompute of every
// token is the full prefill bitwise, placed documents match the full prefill
// where KV is context-free (layer 0), a rotated document equals the document
// computed alone at its place, and the selections pick what they say.
#define BOOST_TEST_MODULE kernels.model.blend
#include <boost/test/unit_test.hpp>

#include <cmath>
#include <cstring>
#include <numeric>
#include <random>
#include <vector>

#include "kernels/cpu/rope.hpp"
#include "kernels/model/blend.hpp"
#include "kernels/model/cpu_engine.hpp"
#include "messages/error.hpp"

using namespace kvflow::model;

namespace {

struct host_block {
  std::vector<float> data;
  kv_block view;
  host_block(const config& c, int tokens) : data(kv_shape_of(c, tokens, dtype::f32).bytes() / 4, 0.0f) {
    view.data = data.data();
    view.shape = kv_shape_of(c, tokens, dtype::f32);
  }
};

engine& tiny() {
  static std::unique_ptr<engine> e = make_cpu_engine(random_weights(preset("tiny-test"), 5), 2);
  return *e;
}

std::vector<std::int32_t> random_tokens(int n, unsigned seed) {
  std::mt19937 gen(seed);
  std::uniform_int_distribution<int> d(0, tiny().cfg().vocab_size - 1);
  std::vector<std::int32_t> t(static_cast<std::size_t>(n));
  for (auto& x : t) x = d(gen);
  return t;
}

// A prompt: 5 tokens of system text, documents of 9, 14 and 11 tokens, 6 of question.
struct stitched {
  std::vector<std::int32_t> prompt;
  std::vector<prompt_segment> segments;
  std::vector<std::vector<std::int32_t>> documents;
};

stitched make_prompt() {
  stitched s;
  auto add = [&](std::vector<std::int32_t> t, bool doc) {
    s.segments.push_back({static_cast<int>(s.prompt.size()), static_cast<int>(t.size()), doc});
    s.prompt.insert(s.prompt.end(), t.begin(), t.end());
    if (doc) s.documents.push_back(std::move(t));
  };
  add(random_tokens(5, 1), false);
  add(random_tokens(9, 2), true);
  add(random_tokens(14, 3), true);
  add(random_tokens(11, 4), true);
  add(random_tokens(6, 5), false);
  return s;
}

// The full prefill in one chunk: KV and the last hidden state.
std::vector<float> full_prefill(const std::vector<std::int32_t>& prompt, host_block& kv) {
  engine& e = tiny();
  const int n = static_cast<int>(prompt.size());
  std::vector<float> hidden(static_cast<std::size_t>(n) * e.cfg().hidden);
  chunk_job job;
  job.tokens = prompt.data();
  job.count = n;
  job.layer_end = e.cfg().layers;
  job.out = kv.view;
  job.hidden = {hidden.data(), n};
  e.run(job);
  return {hidden.end() - e.cfg().hidden, hidden.end()};
}

// The prompt's block with every document placed (other rows zero).
host_block placed(const stitched& s) {
  engine& e = tiny();
  host_block kv(e.cfg(), static_cast<int>(s.prompt.size()));
  const auto inv = kvflow::cpu::rope_inv_freq(e.cfg().head_dim, e.cfg().rope_theta, e.cfg().scaling);
  std::size_t d = 0;
  for (const auto& seg : s.segments) {
    if (!seg.document) continue;
    host_block doc(e.cfg(), seg.count);
    document_kv(e, s.documents[d++], doc.view);
    place_document(doc.view, seg.begin, kv.view, inv);
  }
  return kv;
}

float max_diff(const float* a, const float* b, std::size_t n) {
  float m = 0;
  for (std::size_t i = 0; i < n; ++i) m = std::max(m, std::abs(a[i] - b[i]));
  return m;
}

}  // namespace

BOOST_AUTO_TEST_CASE(recomputing_every_token_is_the_full_prefill_bitwise) {
  const auto s = make_prompt();
  host_block full(tiny().cfg(), static_cast<int>(s.prompt.size()));
  const auto last = full_prefill(s.prompt, full);
  for (auto sel : {token_selection::cacheblend, token_selection::epic}) {
    auto kv = placed(s);
    blend_options o;
    o.selection = sel;
    o.ratio = 1.0;
    auto r = blend_prefill(tiny(), s.prompt, s.segments, kv.view, o);
    BOOST_TEST(r.selected_document_tokens == 34);
    BOOST_TEST(r.recomputed.size() == s.prompt.size());
    BOOST_TEST(std::memcmp(kv.data.data(), full.data.data(), kv.data.size() * 4) == 0, to_string(sel));
    BOOST_TEST(std::memcmp(r.last_hidden.data(), last.data(), last.size() * 4) == 0, to_string(sel));
  }
}

BOOST_AUTO_TEST_CASE(placed_documents_match_the_full_prefill_in_layer_zero) {
  // Layer 0's K and V depend on the token and its position only: a document
  // computed alone and rotated to its place has them to float rounding.
  const auto s = make_prompt();
  host_block full(tiny().cfg(), static_cast<int>(s.prompt.size()));
  full_prefill(s.prompt, full);
  auto kv = placed(s);
  const kv_shape& sh = kv.view.shape;
  for (const auto& seg : s.segments) {
    if (!seg.document) continue;
    for (int k = 0; k < 2; ++k)
      for (int h = 0; h < sh.kv_heads; ++h) {
        const std::size_t o = sh.offset(0, k, h, seg.begin, 0);
        BOOST_TEST(max_diff(kv.data.data() + o, full.data.data() + o,
                            static_cast<std::size_t>(seg.count) * sh.head_dim) < 1e-4f);
      }
    // Upper layers differ: the document could not attend to what came before it.
    const std::size_t o = sh.offset(sh.layers - 1, 1, 0, seg.begin, 0);
    BOOST_TEST(max_diff(kv.data.data() + o, full.data.data() + o, static_cast<std::size_t>(seg.count) * sh.head_dim) >
               1e-3f);
  }
}

BOOST_AUTO_TEST_CASE(a_rotated_document_is_the_document_computed_alone_at_its_place) {
  // The independent check of reuse at 0%: a document computed alone from
  // position 0 and rotated by the delta has, in every layer, the K and V of
  // the same document computed alone at its new positions (RoPE makes
  // attention depend on relative positions only), to float rounding.
  engine& e = tiny();
  const config& c = e.cfg();
  const auto inv = kvflow::cpu::rope_inv_freq(c.head_dim, c.rope_theta, c.scaling);
  const auto doc = random_tokens(14, 3);
  const int n = static_cast<int>(doc.size());
  host_block alone(c, n);
  document_kv(e, doc, alone.view);
  for (int at : {5, 17, 4000}) {
    host_block moved(c, at + n);
    place_document(alone.view, at, moved.view, inv);
    host_block there(c, n);
    document_kv_at(e, doc, at, there.view);
    const kv_shape& ms = moved.view.shape;
    const kv_shape& ts = there.view.shape;
    float worst = 0, scale = 0;
    for (int l = 0; l < c.layers; ++l)
      for (int k = 0; k < 2; ++k)
        for (int h = 0; h < c.kv_heads; ++h) {
          const float* a = moved.data.data() + ms.offset(l, k, h, at, 0);
          const float* b = there.data.data() + ts.offset(l, k, h, 0, 0);
          const std::size_t count = static_cast<std::size_t>(n) * c.head_dim;
          worst = std::max(worst, max_diff(a, b, count));
          for (std::size_t i = 0; i < count; ++i) scale = std::max(scale, std::abs(b[i]));
        }
    BOOST_TEST_CONTEXT("document at " << at) {
      BOOST_TEST(scale > 0.1f);
      BOOST_TEST(worst < 1e-4f * scale);
    }
  }
}

BOOST_AUTO_TEST_CASE(check_layers_are_exact_and_ratio_zero_reuses_the_rest) {
  const auto s = make_prompt();
  host_block full(tiny().cfg(), static_cast<int>(s.prompt.size()));
  full_prefill(s.prompt, full);
  auto kv = placed(s);
  const auto before = kv.data;
  blend_options o;
  o.ratio = 0;
  auto r = blend_prefill(tiny(), s.prompt, s.segments, kv.view, o);
  BOOST_TEST(r.selected_document_tokens == 0);
  BOOST_TEST(r.recomputed.size() == 11u);  // system text and question
  const kv_shape& sh = kv.view.shape;
  const std::size_t two_layers = sh.offset(2, 0, 0, 0, 0);
  BOOST_TEST(std::memcmp(kv.data.data(), full.data.data(), two_layers * 4) == 0);
  // Above the check layers, document rows are the placed ones, untouched.
  for (const auto& seg : s.segments)
    if (seg.document) {
      const std::size_t o = sh.offset(3, 0, 1, seg.begin, 0);
      BOOST_TEST(std::memcmp(kv.data.data() + o, before.data() + o,
                             static_cast<std::size_t>(seg.count) * sh.head_dim * 4) == 0);
    }
}

BOOST_AUTO_TEST_CASE(selections_pick_what_they_say) {
  std::vector<prompt_segment> segs{{0, 4, false}, {4, 10, true}, {14, 20, true}, {34, 2, false}};
  auto lead = select_leading(segs, 0.2);
  BOOST_TEST((lead == std::vector<std::int32_t>{4, 5, 14, 15, 16, 17}));
  std::vector<float> dev(36, 0.0f);
  dev[2] = 100;  // not a document token: never picked
  dev[20] = 5;
  dev[7] = 4;
  dev[33] = 3;
  auto top = select_deviating(segs, dev, 0.1);  // 3 of 30
  BOOST_TEST((top == std::vector<std::int32_t>{7, 20, 33}));
  BOOST_TEST(select_deviating(segs, dev, 0).empty());
  BOOST_CHECK_THROW(check_segments({{0, 4, false}, {5, 3, true}}, 8), kvflow::error);
  BOOST_CHECK_THROW(check_segments({{0, 4, false}}, 8), kvflow::error);
  BOOST_CHECK_THROW(parse_selection("random"), kvflow::error);
  BOOST_TEST(std::string(to_string(parse_selection("epic"))) == "epic");
}

BOOST_AUTO_TEST_CASE(bad_jobs_are_refused_with_context) {
  engine& e = tiny();
  host_block kv(e.cfg(), 8);
  std::vector<float> hidden(2 * static_cast<std::size_t>(e.cfg().hidden));
  std::vector<std::int32_t> tokens{1, 2}, positions{3, 3};
  selected_job job;
  job.tokens = tokens.data();
  job.positions = positions.data();
  job.count = 2;
  job.layer_end = e.cfg().layers;
  job.kv = kv.view;
  job.hidden = {hidden.data(), 2};
  BOOST_CHECK_THROW(e.run_selected(job), kvflow::error);  // not ascending
  positions = {3, 8};
  BOOST_CHECK_THROW(e.run_selected(job), kvflow::error);  // outside the block
  positions = {3, 7};
  e.run_selected(job);
  blend_options o;
  o.ratio = 1.5;
  std::vector<std::int32_t> prompt(8, 1);
  BOOST_CHECK_THROW(blend_prefill(e, prompt, {{0, 8, true}}, kv.view, o), kvflow::error);
}

// Refining (cacheblend): a wide set of refine_factor x ratio runs more
// layers before the final choice. With a factor of 1 the wide set is the
// final set, so the restore equals the unrefined one bitwise; a wider set
// still recomputes `ratio` of the document tokens, and different ones.
BOOST_AUTO_TEST_CASE(refined_selection_keeps_the_budget) {
  const auto s = make_prompt();
  blend_options o;
  o.ratio = 0.3;
  auto kv0 = placed(s);
  const auto plain = blend_prefill(tiny(), s.prompt, s.segments, kv0.view, o);
  o.refine_layers = 1;
  o.refine_factor = 1;
  auto kv1 = placed(s);
  const auto same = blend_prefill(tiny(), s.prompt, s.segments, kv1.view, o);
  BOOST_TEST(same.recomputed == plain.recomputed, boost::test_tools::per_element());
  BOOST_TEST(std::memcmp(same.last_hidden.data(), plain.last_hidden.data(), plain.last_hidden.size() * 4) == 0);
  BOOST_TEST(std::memcmp(kv1.data.data(), kv0.data.data(), kv0.data.size() * 4) == 0);
  o.refine_factor = 3;
  auto kv3 = placed(s);
  const auto wide = blend_prefill(tiny(), s.prompt, s.segments, kv3.view, o);
  BOOST_TEST(wide.selected_document_tokens == plain.selected_document_tokens);
  BOOST_TEST(wide.recomputed.size() == plain.recomputed.size());
}

// Taper (cacheblend's gradual filtering): more document tokens in the first
// layer above the check layers, fewer in the last, the same compute on
// average; rows never selected keep their placed KV above the check layers.
BOOST_AUTO_TEST_CASE(tapered_selection_keeps_the_compute) {
  const auto s = make_prompt();
  const int layers = tiny().cfg().layers;
  blend_options o;
  o.ratio = 0.3;
  auto kv0 = placed(s);
  const auto plain = blend_prefill(tiny(), s.prompt, s.segments, kv0.view, o);
  BOOST_TEST(plain.recomputed_row_layers == static_cast<double>(plain.recomputed.size()) * (layers - 2));
  o.taper = 1;
  auto kv1 = placed(s);
  const auto before = kv1.data;
  const auto tapered = blend_prefill(tiny(), s.prompt, s.segments, kv1.view, o);
  BOOST_TEST(tapered.selected_document_tokens > plain.selected_document_tokens);
  const double other_rows = static_cast<double>(plain.recomputed.size() - plain.selected_document_tokens);
  const double document_rows_per_layer = tapered.recomputed_row_layers / (layers - 2) - other_rows;
  BOOST_TEST(std::abs(document_rows_per_layer - 0.3 * 34) <= 1.0);
  const kv_shape& sh = kv1.view.shape;
  std::vector<char> selected(s.prompt.size(), 0);
  for (auto p : tapered.recomputed) selected[p] = 1;
  for (int t = 0; t < sh.tokens; ++t)
    if (!selected[t])
      for (int l = 2; l < layers; ++l) {
        const std::size_t o = sh.offset(l, 1, 0, t, 0);
        BOOST_TEST(std::memcmp(kv1.data.data() + o, before.data() + o, sh.head_dim * 4) == 0);
      }
  // The last layer recomputes fewer document rows than the first above the check layers.
  int changed_last = 0;
  for (int t = 0; t < sh.tokens; ++t) {
    const std::size_t o = sh.offset(layers - 1, 1, 0, t, 0);
    changed_last += selected[t] && std::memcmp(kv1.data.data() + o, before.data() + o, sh.head_dim * 4) != 0;
  }
  BOOST_TEST(changed_last < static_cast<int>(tapered.recomputed.size()));
}
