// The document path on the CUDA backend (actors/document_cuda.hpp), on the
// smollm2-135m shape with random weights:
//  - the device work itself: documents no tier holds are computed alone and
//    come back to be stored; stored, they load (host tier and disk) into the
//    same restore (within the rounding of differently cut forwards); recomputing every row matches a full prefill
//    within the bf16 tolerance of the engine suite (hidden state 1e-2,
//    logits 0.1 relative) with the same next token; at 15% (EPIC: the same
//    rows on both backends) it matches the CPU backend's document path on
//    the same weights within that tolerance; cacheblend at 15% selects its
//    share and runs;
//  - the runtime on CUDA: documents stored then reused in a new order; at
//    100% the first token of a full recompute; a prefix hit still restores
//    bit-exactly.
#define BOOST_TEST_MODULE actors.document_gpu
#define BOOST_TEST_NO_MAIN
#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <cmath>
#include <functional>
#include <random>

#include "actors/document_cuda.hpp"
#include "actors/runtime.hpp"
#include "devices/document_store.hpp"
#include "devices/keys.hpp"
#include "kernels/cuda/cuda_engine.hpp"
#include "kernels/model/cpu_engine.hpp"
#include "kernels/model/weights.hpp"
#include "tests/actors/document_prompt.hpp"
#include "tests/devices/test_util.hpp"
#include "tests/kernels/cuda/engine_helpers.hpp"
#include "tests/kernels/cuda/gpu_main.hpp"

using namespace kvflow;
using namespace kvflow::devices::test;

namespace {

using model::rel_err;
using test::random_tokens;

std::int32_t argmax(const std::vector<float>& v) {
  return static_cast<std::int32_t>(std::max_element(v.begin(), v.end()) - v.begin());
}

// System text, four documents of 48 tokens, a question: 224 tokens.
struct stitched {
  std::vector<std::int32_t> tokens;
  std::vector<model::prompt_segment> segments;
  stitched(int vocab) {
    auto add = [&](int n, bool doc, unsigned seed) {
      segments.push_back({static_cast<int>(tokens.size()), n, doc});
      auto t = random_tokens(n, seed, vocab);
      tokens.insert(tokens.end(), t.begin(), t.end());
    };
    add(16, false, 1);
    for (unsigned d = 0; d < 4; ++d) add(48, true, 10 + d);
    add(16, false, 2);
  }
  std::vector<std::int32_t> doc_tokens(const model::prompt_segment& s) const {
    return {tokens.begin() + s.begin, tokens.begin() + s.begin + s.count};
  }
};

constexpr int chunk = 64;

struct outcome {
  std::vector<float> logits, last_hidden;
  document_work work;
};

// One document restore on `e`: `store` and keys for the device path, or
// (CPU) the entries given in `entries` as loaded.
outcome restore(model::engine& e, const stitched& p, double ratio, model::token_selection sel,
                std::shared_ptr<devices::chunk_store> store, const std::vector<std::vector<msg::chunk_key>>& keys,
                const std::vector<std::vector<std::uint8_t>>* entries = nullptr) {
  outcome o;
  auto ws = std::make_shared<workspace>(1, p.tokens, chunk, e);
  o.work.ws = ws;
  o.work.segments = p.segments;
  o.work.blend.selection = sel;
  o.work.blend.ratio = ratio;
  o.work.store = store;
  o.work.keys = keys;
  if (entries) {
    o.work.documents = *entries;
    o.work.loaded.assign(entries->size(), true);
  }
  run_document_work(e, o.work);
  e.logits(ws->hidden(ws->num_chunks() - 1), o.logits);
  o.last_hidden = o.work.result.last_hidden;
  o.work.ws.reset();
  return o;
}

// The full prefill of the prompt: last row's hidden state and logits.
std::pair<std::vector<float>, std::vector<float>> full_prefill(model::engine& e, const stitched& p) {
  const auto& c = e.cfg();
  const int n = static_cast<int>(p.tokens.size());
  const auto shape = model::kv_shape_of(c, n, e.kv_type());
  void* kv = e.allocate(shape.bytes());
  void* h = e.allocate(static_cast<std::size_t>(n) * c.hidden * sizeof(float));
  model::chunk_job job;
  job.tokens = p.tokens.data();
  job.count = n;
  job.layer_end = c.layers;
  job.out = {kv, shape};
  job.hidden = {h, n};
  e.run(job);
  std::vector<float> logits, last(static_cast<std::size_t>(c.hidden));
  e.logits({h, n}, logits);
  e.to_host(last.data(), static_cast<float*>(h) + static_cast<std::size_t>(n - 1) * c.hidden, sizeof(float) * c.hidden);
  e.release(kv);
  e.release(h);
  return {last, logits};
}

}  // namespace

BOOST_AUTO_TEST_CASE(device_document_work_matches_full_prefill_and_the_cpu_path) {
  const model::config c = model::preset("smollm2-135m");
  const model::weights w = model::random_weights(c, 5);
  auto gpu = model::make_cuda_engine(w);
  auto cpu = model::make_cpu_engine(w, 0);
  const stitched p(c.vocab_size);

  scratch_dir dir;
  auto o = store_options(dir.path, 2, model::kv_shape_of(c, chunk, model::dtype::bf16));
  o.disk.fingerprint = gpu->fingerprint();
  auto store = std::make_shared<devices::chunk_store>(o);
  std::vector<std::vector<msg::chunk_key>> keys;
  for (const auto& s : p.segments)
    if (s.document) keys.push_back(devices::document_block_keys(gpu->fingerprint(), "t", p.doc_tokens(s), chunk));

  // Nothing held: every document computed alone, to be stored.
  auto cold = restore(*gpu, p, 0.15, model::token_selection::epic, store, keys);
  BOOST_TEST(cold.work.load_bytes == 0.0);
  std::size_t d = 0;
  for (const auto& s : p.segments) {
    if (!s.document) continue;
    BOOST_TEST(!cold.work.loaded[d]);
    BOOST_REQUIRE(cold.work.documents[d].size() == model::kv_shape_of(c, s.count, model::dtype::bf16).bytes());
    devices::store_document(*store, keys[d], cold.work.documents[d].data(),
                            model::kv_shape_of(c, s.count, model::dtype::bf16));
    ++d;
  }
  store->flush();  // two in the host tier, two demoted to disk

  // Held: loaded (only the reused rows), the same restore bit for bit.
  auto warm = restore(*gpu, p, 0.15, model::token_selection::epic, store, keys);
  for (std::size_t i = 0; i < keys.size(); ++i) BOOST_TEST(warm.work.loaded[i]);
  for (const auto& x : warm.work.documents) BOOST_TEST(x.empty());
  const double row_bytes = 2.0 * c.layers * c.kv_heads * c.head_dim * 2;
  BOOST_TEST(warm.work.load_bytes == 4 * (48 - 7) * row_bytes);  // 15% of 48 is 7 leading rows recomputed
  BOOST_TEST(warm.work.result.selected_document_tokens == 4 * 7);
  // The same rows over the same entries; the forwards are cut differently
  // (the cold restore waits for no load), which moves only the rounding.
  BOOST_TEST(rel_err(warm.last_hidden, cold.last_hidden) < 1e-2);
  BOOST_TEST(warm.work.compute_s > 0.0);

  // (a) Every row recomputed: the full prefill within bf16 tolerance, same next token.
  const auto [full_hidden, full_logits] = full_prefill(*gpu, p);
  for (auto sel : {model::token_selection::epic, model::token_selection::cacheblend}) {
    auto all = restore(*gpu, p, 1.0, sel, store, keys);
    BOOST_TEST(all.work.load_bytes == 0.0);
    const double he = rel_err(all.last_hidden, full_hidden), le = rel_err(all.logits, full_logits);
    BOOST_TEST_MESSAGE(model::to_string(sel) << " 100%: hidden rel err " << he << ", logits rel err " << le);
    BOOST_TEST(he < 1e-2);
    BOOST_TEST(le < 0.1);
    BOOST_TEST(argmax(all.logits) == argmax(full_logits));
  }

  // (b) 15% EPIC against the CPU backend's document path on the same weights
  // (f32 entries computed alone there, the same rows recomputed).
  std::vector<std::vector<std::uint8_t>> entries;
  for (const auto& s : p.segments) {
    if (!s.document) continue;
    const auto ds = model::kv_shape_of(c, s.count, model::dtype::f32);
    entries.emplace_back(ds.bytes());
    model::document_kv(*cpu, p.doc_tokens(s), {entries.back().data(), ds});
  }
  auto on_cpu = restore(*cpu, p, 0.15, model::token_selection::epic, nullptr, keys, &entries);
  const double le = rel_err(warm.logits, on_cpu.logits);
  std::vector<float> sorted = on_cpu.logits;
  std::partial_sort(sorted.begin(), sorted.begin() + 2, sorted.end(), std::greater<float>());
  float worst = 0;
  for (std::size_t i = 0; i < sorted.size(); ++i) worst = std::max(worst, std::abs(warm.logits[i] - on_cpu.logits[i]));
  BOOST_TEST_MESSAGE("epic 15%: logits rel err against the CPU path "
                     << le << "; CPU top-2 margin " << sorted[0] - sorted[1] << ", largest difference " << worst);
  BOOST_TEST(le < 0.1);
  if (sorted[0] - sorted[1] > 2 * worst)
    BOOST_TEST(argmax(warm.logits) == argmax(on_cpu.logits));
  else
    BOOST_TEST_MESSAGE("CPU top-2 within the backends' difference: the first token may differ");

  // cacheblend at 15%: its share of the document tokens, chosen on the device.
  auto blend = restore(*gpu, p, 0.15, model::token_selection::cacheblend, store, keys);
  BOOST_TEST(blend.work.result.selected_document_tokens == 29);  // 15% of 192
  for (std::size_t i = 0; i < keys.size(); ++i) BOOST_TEST(blend.work.loaded[i]);
  BOOST_TEST(blend.work.load_bytes > 0.0);
  BOOST_TEST(std::all_of(blend.logits.begin(), blend.logits.end(), [](float x) { return std::isfinite(x); }));
  BOOST_TEST_MESSAGE("cacheblend 15%: logits rel err against the full prefill "
                     << rel_err(blend.logits, full_logits) << ", epic 15% " << rel_err(warm.logits, full_logits));
}

namespace {

test::prompt stitch(const std::vector<std::vector<std::int32_t>>& docs, const std::vector<int>& order,
                    unsigned question) {
  return test::stitch(docs, order, question, 49152);  // SmolLM2's vocabulary
}

runtime_options on_gpu(const std::string& dir) {
  runtime_options o;
  o.preset = "smollm2-135m";
  o.backend = "cuda";
  o.chunk_tokens = 16;
  o.host_tier_gb = 0.1;
  o.disk_dir = dir;
  return o;
}

using test::prompt;
using test::run;

}  // namespace

BOOST_AUTO_TEST_CASE(runtime_document_path_on_cuda) {
  scratch_dir dir;
  runtime rt(on_gpu(dir.path));
  const std::vector<std::vector<std::int32_t>> docs{random_tokens(21, 11, 49152), random_tokens(30, 12, 49152),
                                                    random_tokens(17, 13, 49152)};
  auto r = run(rt, stitch(docs, {0, 1, 2}, 50), true, 0.15);
  BOOST_TEST(r.documents_computed == 3u);
  BOOST_TEST(r.documents_reused == 0u);
  BOOST_TEST(r.tokens.size() == 4u);
  rt.flush();

  const auto again = stitch(docs, {2, 0, 1}, 51);
  auto reused = run(rt, again, true, 0.15, false);
  BOOST_TEST(reused.documents_reused == 3u);
  BOOST_TEST(reused.documents_computed == 0u);
  BOOST_TEST(reused.document_tokens_recomputed == 10u);  // 15% of 68
  BOOST_TEST(reused.bytes_from_host > 0u);
  BOOST_TEST(reused.tokens.size() == 4u);

  // (a) through the runtime: at 100% the full recompute's first token.
  auto all = run(rt, again, true, 1.0, false);
  auto full = run(rt, again, false, -1, false);
  BOOST_TEST(all.documents_reused == 3u);
  BOOST_TEST(all.bytes_from_host == 0u);  // nothing reused, nothing moves
  BOOST_TEST(all.first_token == full.first_token);

  // The plan from measured rates stays within [the quality floor, 1].
  auto adaptive = run(rt, again, true, -1, false);
  BOOST_TEST(adaptive.recompute_ratio >= 0.15);
  BOOST_TEST(adaptive.recompute_ratio <= 1.0);
  BOOST_TEST(adaptive.tokens.size() == 4u);
}

// (c) Documents inside a cached prefix restore through the prefix chain, bit-exactly.
BOOST_AUTO_TEST_CASE(a_prefix_hit_still_restores_bit_exactly_on_cuda) {
  scratch_dir dir;
  runtime rt(on_gpu(dir.path));
  const std::vector<std::vector<std::int32_t>> docs{random_tokens(32, 21, 49152), random_tokens(16, 22, 49152)};
  const auto p = stitch(docs, {0, 1}, 60);
  auto full = run(rt, p, false, -1, true);
  rt.flush();
  auto hit = run(rt, p, true, 0.15, false);
  BOOST_TEST(hit.cached_chunks > 0u);
  BOOST_TEST(hit.documents_reused == 0u);
  BOOST_TEST(hit.documents_computed == 0u);
  BOOST_TEST(hit.kv_sha256 == full.kv_sha256);
  BOOST_TEST(hit.tokens == full.tokens);
}
