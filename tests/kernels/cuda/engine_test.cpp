// cuda_engine: chunked prefill (any chunk size, layer splits, decode) gives
// the KV and hidden states of one-shot prefill bitwise; the GPU engine agrees
// with the CPU engine (KV, logits, 32 greedy tokens) on the SmolLM2-135M
// shape with random weights (rounded to bf16 for both).
#define BOOST_TEST_MODULE engine_cuda
#define BOOST_TEST_NO_MAIN
#include <cuda_bf16.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "kernels/cuda/cuda_engine.hpp"
#include "kernels/model/chat_template.hpp"
#include "kernels/model/cpu_engine.hpp"
#include "kernels/model/model_file.hpp"
#include "messages/error.hpp"
#include "tests/kernels/cuda/engine_helpers.hpp"
#include "tests/kernels/cuda/gpu_main.hpp"

namespace {

using namespace kvflow;
using namespace kvflow::model;

// Runs tokens [pos0, pos0 + count) as one job over `past`.
void run_chunk(engine& e, const std::vector<std::int32_t>& toks, int pos0, int count, const std::vector<kv_block>& past,
               chunk_mem& m, int layer_begin = 0, int layer_end = -1) {
  chunk_job job;
  job.tokens = toks.data() + pos0;
  job.count = count;
  job.pos0 = pos0;
  job.layer_begin = layer_begin;
  job.layer_end = layer_end < 0 ? e.cfg().layers : layer_end;
  job.past = {past.data(), static_cast<int>(past.size())};
  job.out = m.block;
  job.hidden = m.hidden;
  e.run(job);
}

// Bytes of tokens [t0, t0 + n) of a one-shot block, in a block's layout.
std::vector<unsigned char> slice(const std::vector<unsigned char>& full, const kv_shape& s, int t0, int n) {
  const std::size_t es = dtype_size(s.type);
  kv_shape part = s;
  part.tokens = n;
  std::vector<unsigned char> out(part.bytes());
  for (int l = 0; l < s.layers; ++l)
    for (int kv = 0; kv < 2; ++kv)
      for (int h = 0; h < s.kv_heads; ++h)
        std::memcpy(out.data() + part.offset(l, kv, h, 0, 0) * es, full.data() + s.offset(l, kv, h, t0, 0) * es,
                    static_cast<std::size_t>(n) * s.head_dim * es);
  return out;
}

void check_chunking(engine& e, int total) {
  const auto toks = prompt(total, e.cfg().vocab_size);
  const int hidden = e.cfg().hidden;
  chunk_mem one(e, total);
  run_chunk(e, toks, 0, total, {}, one);
  const auto one_kv = one.kv_bytes();
  const auto one_h = one.hidden_rows();

  for (int chunk : {37, 64, 100, 256}) {
    std::vector<std::unique_ptr<chunk_mem>> mems;
    std::vector<kv_block> past;
    bool kv_same = true, hidden_same = true;
    for (int p = 0; p < total; p += chunk) {
      const int n = std::min(chunk, total - p);
      mems.push_back(std::make_unique<chunk_mem>(e, n));
      run_chunk(e, toks, p, n, past, *mems.back());
      past.push_back(mems.back()->block);
      kv_same = kv_same && mems.back()->kv_bytes() == slice(one_kv, one.block.shape, p, n);
      const auto h = mems.back()->hidden_rows();
      hidden_same = hidden_same && std::memcmp(h.data(), one_h.data() + static_cast<std::size_t>(p) * hidden,
                                               h.size() * sizeof(float)) == 0;
    }
    BOOST_TEST_INFO(e.cfg().name << " chunk " << chunk);
    BOOST_TEST(kv_same);
    BOOST_TEST_INFO(e.cfg().name << " chunk " << chunk);
    BOOST_TEST(hidden_same);
  }

  // A layer split and then decode-style one-token chunks at the end.
  const int head = total - 3;
  chunk_mem first(e, head);
  const int mid = e.cfg().layers / 3;
  run_chunk(e, toks, 0, head, {}, first, 0, mid);
  run_chunk(e, toks, 0, head, {}, first, mid, e.cfg().layers);
  BOOST_TEST(first.kv_bytes() == slice(one_kv, one.block.shape, 0, head));
  std::vector<kv_block> past{first.block};
  std::vector<std::unique_ptr<chunk_mem>> steps;
  for (int p = head; p < total; ++p) {
    steps.push_back(std::make_unique<chunk_mem>(e, 1));
    run_chunk(e, toks, p, 1, past, *steps.back());
    past.push_back(steps.back()->block);
    BOOST_TEST_INFO(e.cfg().name << " decode position " << p);
    BOOST_TEST(steps.back()->kv_bytes() == slice(one_kv, one.block.shape, p, 1));
    const auto h = steps.back()->hidden_rows();
    BOOST_TEST(std::memcmp(h.data(), one_h.data() + static_cast<std::size_t>(p) * hidden, h.size() * 4) == 0);
  }
}

std::int32_t argmax(const std::vector<float>& v) {
  return static_cast<std::int32_t>(std::max_element(v.begin(), v.end()) - v.begin());
}

// Greedy generation: prefill the prompt, then one-token chunks.
std::vector<std::int32_t> greedy(engine& e, std::vector<std::int32_t> toks, int steps, std::vector<float>* first_logits,
                                 std::vector<float>* margins) {
  std::vector<std::unique_ptr<chunk_mem>> mems;
  std::vector<kv_block> past;
  std::vector<std::int32_t> out;
  int pos = 0;
  int n = static_cast<int>(toks.size());
  std::vector<float> lg;
  for (int s = 0; s < steps; ++s) {
    mems.push_back(std::make_unique<chunk_mem>(e, n));
    run_chunk(e, toks, pos, n, past, *mems.back());
    past.push_back(mems.back()->block);
    e.logits(mems.back()->hidden, lg);
    if (s == 0 && first_logits) *first_logits = lg;
    const auto best = argmax(lg);
    if (margins) {
      std::vector<float> sorted = lg;
      std::partial_sort(sorted.begin(), sorted.begin() + 2, sorted.end(), std::greater<float>());
      margins->push_back(sorted[0] - sorted[1]);
    }
    out.push_back(best);
    pos += n;
    n = 1;
    toks.push_back(best);
  }
  return out;
}

// random_weights(cfg, seed) with the matrices rounded to bf16 (norms stay
// fp32, as on the GPU): what both engines run when they are compared.
weights bf16_random_weights(const config& cfg, std::uint64_t seed) {
  weights w = random_weights(cfg, seed);
  auto round = [](std::vector<float>& v) {
    for (auto& x : v) x = __bfloat162float(__float2bfloat16(x));
  };
  round(w.embedding);
  round(w.output);
  for (auto& l : w.layers)
    for (auto* v : {&l.wq, &l.wk, &l.wv, &l.wo, &l.w_gate, &l.w_up, &l.w_down}) round(*v);
  return w;
}

}  // namespace

BOOST_AUTO_TEST_CASE(chunked_prefill_is_bitwise_one_shot) {
  auto tiny = make_cuda_engine_random(preset("tiny-test"), 7);
  check_chunking(*tiny, 300);
  auto smol = make_cuda_engine_random(preset("smollm2-135m"), 7);
  check_chunking(*smol, 300);
}

// engine::run_fused: chunks of one request fused into one forward (groups
// of `groups` chunks in turn, and over a layer split), and chunks of two
// requests fused together, give each chunk the KV and hidden state of
// one-shot prefill bitwise, whatever rows they were batched with.
static void check_fused_jobs(engine& e, int total, int chunk, const std::vector<int>& groups = {1, 2, 3, 4, 5}) {
  const int L = e.cfg().layers, hidden = e.cfg().hidden;
  const auto toks_a = prompt(total, e.cfg().vocab_size);
  auto toks_b = toks_a;
  std::reverse(toks_b.begin(), toks_b.end());
  chunk_mem one_a(e, total), one_b(e, total);
  run_chunk(e, toks_a, 0, total, {}, one_a);
  run_chunk(e, toks_b, 0, total, {}, one_b);
  const auto kv_a = one_a.kv_bytes(), kv_b = one_b.kv_bytes();
  const auto h_a = one_a.hidden_rows(), h_b = one_b.hidden_rows();

  struct request {
    const std::vector<std::int32_t>* toks;
    std::vector<std::unique_ptr<chunk_mem>> mems;
    std::vector<kv_block> blocks;
    int next = 0;  // next chunk to run
  };
  request ra{&toks_a, {}, {}, 0}, rb{&toks_b, {}, {}, 0};
  for (auto* r : {&ra, &rb})
    for (int p = 0; p < total; p += chunk) {
      r->mems.push_back(std::make_unique<chunk_mem>(e, std::min(chunk, total - p)));
      r->blocks.push_back(r->mems.back()->block);
    }
  const int chunks = static_cast<int>(ra.mems.size());
  auto job_of = [&](request& r, int c, int lb, int le) {
    chunk_job j;
    j.tokens = r.toks->data() + c * chunk;
    j.count = r.mems[c]->block.shape.tokens;
    j.pos0 = c * chunk;
    j.layer_begin = lb;
    j.layer_end = le;
    j.past = {r.blocks.data(), c};
    j.out = r.mems[c]->block;
    j.hidden = r.mems[c]->hidden;
    return j;
  };
  // Groups of growing size; request a in one piece, request b split at a
  // layer (both halves fused), and the two requests' chunks interleaved.
  const int mid = L / 2;
  for (std::size_t turn = 0; ra.next < chunks || rb.next < chunks; ++turn) {
    const int group = groups[turn % groups.size()];
    std::vector<chunk_job> first, second;
    const int a_end = std::min(chunks, ra.next + group), b_end = std::min(chunks, rb.next + (group + 1) / 2);
    for (int c = ra.next; c < a_end; ++c) first.push_back(job_of(ra, c, 0, mid));
    for (int c = rb.next; c < b_end; ++c) first.push_back(job_of(rb, c, 0, mid));
    for (int c = ra.next; c < a_end; ++c) second.push_back(job_of(ra, c, mid, L));
    for (int c = rb.next; c < b_end; ++c) second.push_back(job_of(rb, c, mid, L));
    e.run_fused(first);
    e.run_fused(second);
    ra.next = a_end;
    rb.next = b_end;
  }
  for (auto* r : {&ra, &rb}) {
    const auto& kv = r == &ra ? kv_a : kv_b;
    const auto& h1 = r == &ra ? h_a : h_b;
    const auto& shape = r == &ra ? one_a.block.shape : one_b.block.shape;
    bool kv_same = true, hidden_same = true;
    for (int c = 0; c < chunks; ++c) {
      const int n = r->mems[c]->block.shape.tokens;
      kv_same = kv_same && r->mems[c]->kv_bytes() == slice(kv, shape, c * chunk, n);
      const auto h = r->mems[c]->hidden_rows();
      hidden_same = hidden_same && std::memcmp(h.data(), h1.data() + static_cast<std::size_t>(c) * chunk * hidden,
                                               h.size() * sizeof(float)) == 0;
    }
    BOOST_TEST_INFO(e.cfg().name << " chunk " << chunk << (r == &ra ? " request a" : " request b"));
    BOOST_TEST(kv_same);
    BOOST_TEST_INFO(e.cfg().name << " chunk " << chunk << (r == &ra ? " request a" : " request b"));
    BOOST_TEST(hidden_same);
  }
  // Mixed layer ranges are refused.
  std::vector<chunk_job> mixed{job_of(ra, 0, 0, mid), job_of(ra, 1, 0, L)};
  BOOST_CHECK_THROW(e.run_fused(mixed), kvflow::error);
}

BOOST_AUTO_TEST_CASE(fused_jobs_are_bitwise_one_shot) {
  auto tiny = make_cuda_engine_random(preset("tiny-test"), 7);
  check_fused_jobs(*tiny, 300, 37);
  auto smol = make_cuda_engine_random(preset("smollm2-135m"), 7);
  check_fused_jobs(*smol, 700, 64);
  // The runtime's compute_only grants at 256-token chunks: 16 chunks (4096
  // rows) a forward, then 24 with the other request's 8.
  check_fused_jobs(*smol, 5000, 256, {16, 3});
}

BOOST_AUTO_TEST_CASE(device_random_weights_are_deterministic) {
  auto a = make_cuda_engine_random(preset("tiny-test"), 1);
  auto b = make_cuda_engine_random(preset("tiny-test"), 1);
  auto c = make_cuda_engine_random(preset("tiny-test"), 2);
  BOOST_TEST(a->fingerprint() == b->fingerprint());
  BOOST_TEST(a->fingerprint() != c->fingerprint());
  const auto toks = prompt(20, 512);
  chunk_mem ma(*a, 20), mb(*b, 20);
  run_chunk(*a, toks, 0, 20, {}, ma);
  run_chunk(*b, toks, 0, 20, {}, mb);
  BOOST_TEST(ma.kv_bytes() == mb.kv_bytes());
}

// make_cuda_engine_random(c, seed) makes random_weights(c, seed) on the
// device: the same KV as uploading the host copy, bitwise.
BOOST_AUTO_TEST_CASE(device_random_weights_equal_host_random_weights) {
  for (const char* name : {"tiny-test", "smollm2-135m"}) {
    const auto c = preset(name);
    auto dev = make_cuda_engine_random(c, 5);
    auto host = make_cuda_engine(random_weights(c, 5));
    const auto toks = prompt(70, c.vocab_size);
    chunk_mem a(*dev, 70), b(*host, 70);
    run_chunk(*dev, toks, 0, 70, {}, a);
    run_chunk(*host, toks, 0, 70, {}, b);
    BOOST_TEST_INFO(name);
    BOOST_TEST((a.kv_bytes() == b.kv_bytes()));
    BOOST_TEST_INFO(name);
    BOOST_TEST((a.hidden_rows() == b.hidden_rows()));
  }
}

BOOST_AUTO_TEST_CASE(bad_jobs_throw) {
  auto e = make_cuda_engine_random(preset("tiny-test"), 3);
  const auto toks = prompt(8, 512);
  chunk_mem m(*e, 8);
  chunk_job job;
  job.tokens = toks.data();
  job.count = 8;
  job.layer_end = e->cfg().layers;
  job.out = m.block;
  job.hidden = m.hidden;
  job.pos0 = 4;  // no past blocks for it
  BOOST_CHECK_THROW(e->run(job), kvflow::error);
  job.pos0 = 0;
  job.out.shape.tokens = 9;
  BOOST_CHECK_THROW(e->run(job), kvflow::error);
  job.out.shape.tokens = 8;
  std::vector<std::int32_t> bad = toks;
  bad[3] = 512;
  job.tokens = bad.data();
  BOOST_CHECK_THROW(e->run(job), kvflow::error);
  job.tokens = toks.data();
  BOOST_CHECK_NO_THROW(e->run(job));
  e->synchronize();
}

// The CPU engine runs on the same weights rounded to bf16 (norms stay fp32,
// as on the GPU), so what remains is the GPU's bf16 activations: the error
// of layer 0 stays at bf16 rounding, deeper layers drift a little further.
BOOST_AUTO_TEST_CASE(matches_cpu_engine_on_smollm2_shape) {
  const auto cfg = preset("smollm2-135m");
  const weights w = bf16_random_weights(cfg, 42);
  auto gpu = make_cuda_engine(w);
  auto cpu = make_cpu_engine(w, 0);
  BOOST_TEST(gpu->fingerprint() == cpu->fingerprint());

  // KV and hidden of a 64-token prompt, layer by layer.
  const int n = 64;
  const auto toks = prompt(n, cfg.vocab_size);
  chunk_mem g(*gpu, n), c(*cpu, n);
  run_chunk(*gpu, toks, 0, n, {}, g);
  run_chunk(*cpu, toks, 0, n, {}, c);
  const auto gkv = g.kv_bytes();
  const auto ckv = c.kv_bytes();
  // Each side must be deterministic before they are compared: the GPU run
  // again, the CPU engine again on one thread.
  {
    chunk_mem g2(*gpu, n);
    run_chunk(*gpu, toks, 0, n, {}, g2);
    BOOST_TEST((g2.kv_bytes() == gkv), "GPU prefill repeats bitwise");
    auto cpu1 = make_cpu_engine(w, 1);
    chunk_mem c1(*cpu1, n);
    run_chunk(*cpu1, toks, 0, n, {}, c1);
    BOOST_TEST((c1.kv_bytes() == ckv), "CPU prefill on 1 thread equals the default pool bitwise");
  }
  std::vector<float> gk(gkv.size() / 2), ck(ckv.size() / 4);
  for (std::size_t i = 0; i < gk.size(); ++i) {
    __nv_bfloat16 b;
    std::memcpy(&b, gkv.data() + 2 * i, 2);
    gk[i] = __bfloat162float(b);
  }
  std::memcpy(ck.data(), ckv.data(), ckv.size());
  const std::size_t per_layer = g.block.shape.layer_elems();
  double worst = 0;
  for (int l = 0; l < cfg.layers; ++l) {
    const std::vector<float> a(gk.begin() + l * per_layer, gk.begin() + (l + 1) * per_layer);
    const std::vector<float> b(ck.begin() + l * per_layer, ck.begin() + (l + 1) * per_layer);
    const double e = rel_err(a, b);
    worst = std::max(worst, e);
    BOOST_TEST_MESSAGE("smollm2 shape: layer " << l << " KV rel err " << e);
    if (e > 1e-2) {  // which tokens and heads drift
      const kv_shape& sh = g.block.shape;
      for (int kv = 0; kv < 2; ++kv)
        for (int hh = 0; hh < sh.kv_heads; ++hh)
          for (int t = 0; t < sh.tokens; ++t) {
            const std::size_t o = sh.offset(l, kv, hh, t, 0);
            const std::vector<float> ta(gk.begin() + o, gk.begin() + o + sh.head_dim);
            const std::vector<float> tb(ck.begin() + o, ck.begin() + o + sh.head_dim);
            const double te = rel_err(ta, tb);
            if (te > 5e-2)
              BOOST_TEST_MESSAGE("  layer " << l << (kv ? " V" : " K") << " head " << hh << " token " << t
                                            << " rel err " << te);
          }
    }
    if (l == 0) BOOST_TEST(e < 1e-2);
  }
  const double h_err = rel_err(g.hidden_rows(), c.hidden_rows());
  BOOST_TEST_MESSAGE("smollm2 shape: worst layer KV rel err " << worst << ", final hidden rel err " << h_err);
  BOOST_TEST(worst < 0.1);
  BOOST_TEST(h_err < 0.1);

  std::vector<float> gl, cl, margins;
  const auto short_prompt = prompt(16, cfg.vocab_size);
  const auto cpu_tokens = greedy(*cpu, short_prompt, 32, &cl, &margins);
  const auto gpu_tokens = greedy(*gpu, short_prompt, 32, &gl, nullptr);
  BOOST_TEST_MESSAGE("first logits rel err " << rel_err(gl, cl));
  BOOST_TEST(rel_err(gl, cl) < 0.1);
  std::size_t same = 0;
  while (same < cpu_tokens.size() && cpu_tokens[same] == gpu_tokens[same]) ++same;
  float min_margin = 1e30f;
  for (float m : margins) min_margin = std::min(min_margin, m);
  BOOST_TEST_MESSAGE("greedy: " << same << " of 32 tokens equal; smallest CPU top-2 margin " << min_margin);
  BOOST_TEST(cpu_tokens == gpu_tokens, boost::test_tools::per_element());
}

// The real SmolLM2-135M-Instruct (models/, or $KVFLOW_MODEL): 32 greedy
// tokens of a chat prompt on the GPU equal the CPU engine's on the same file.
// Where the model file is absent the case says so and checks nothing.
BOOST_AUTO_TEST_CASE(smollm2_real_weights_greedy_matches_cpu) {
  const std::string path = default_model_path();
  if (FILE* f = std::fopen(path.c_str(), "rb")) {
    std::fclose(f);
  } else {
    BOOST_TEST_MESSAGE("real SmolLM2: " << path << " not found: not checked");
    return;
  }
  const loaded_model m = load_model_file(path);
  BOOST_REQUIRE(m.tok);
  std::vector<chat_message> chat{{"user", "What is the capital of France? Answer in one sentence."}};
  const std::string text = apply_chat_template(m.chat_template, chat, true);
  std::vector<std::int32_t> ids = m.tok->encode(text);
  if (m.tok->add_bos()) ids.insert(ids.begin(), m.tok->bos());
  auto gpu = make_cuda_engine(m.w);
  auto cpu = make_cpu_engine(m.w, 0);
  std::vector<float> gl, cl, margins;
  const auto cpu_tokens = greedy(*cpu, ids, 32, &cl, &margins);
  const auto gpu_tokens = greedy(*gpu, ids, 32, &gl, nullptr);
  std::size_t same = 0;
  while (same < cpu_tokens.size() && cpu_tokens[same] == gpu_tokens[same]) ++same;
  float min_margin = 1e30f;
  for (float v : margins) min_margin = std::min(min_margin, v);
  BOOST_TEST_MESSAGE("real SmolLM2: prompt of " << ids.size() << " tokens; first logits rel err " << rel_err(gl, cl)
                                                << "; greedy " << same
                                                << " of 32 tokens equal; smallest CPU top-2 margin " << min_margin);
  BOOST_TEST_MESSAGE("real SmolLM2 CPU: " << m.tok->decode(cpu_tokens));
  BOOST_TEST_MESSAGE("real SmolLM2 GPU: " << m.tok->decode(gpu_tokens));
  BOOST_TEST(cpu_tokens == gpu_tokens, boost::test_tools::per_element());
}

// engine::run_selected on CUDA (selective recompute): rows at scattered
// positions of a prompt-long block, recomputed over the KV already there.
namespace {

// KV of a block as floats (bf16 on the GPU, f32 on the CPU).
std::vector<float> kv_floats(engine& e, const kv_block& b) {
  std::vector<unsigned char> raw(b.shape.bytes());
  e.to_host(raw.data(), b.data, raw.size());
  std::vector<float> out(b.shape.bytes() / (e.kv_type() == dtype::bf16 ? 2 : 4));
  if (e.kv_type() == dtype::f32) {
    std::memcpy(out.data(), raw.data(), raw.size());
    return out;
  }
  for (std::size_t i = 0; i < out.size(); ++i) {
    __nv_bfloat16 v;
    std::memcpy(&v, raw.data() + 2 * i, 2);
    out[i] = __bfloat162float(v);
  }
  return out;
}

// Prefills `toks` one-shot into `full`, copies its KV into `sel`'s block and
// recomputes `rows` there with run_selected; returns the rows' hidden states
// (the full prefill's rows go to `want`).
std::vector<float> select_after_prefill(engine& e, const std::vector<std::int32_t>& toks, chunk_mem& full,
                                        chunk_mem& sel, const std::vector<int>& rows, std::vector<float>* want) {
  const int n = static_cast<int>(toks.size()), hidden = e.cfg().hidden;
  run_chunk(e, toks, 0, n, {}, full);
  std::vector<unsigned char> kv = full.kv_bytes();
  e.to_backend(sel.block.data, kv.data(), kv.size());
  std::vector<std::int32_t> sel_toks;
  for (int p : rows) sel_toks.push_back(toks[p]);
  void* h = e.allocate(rows.size() * hidden * sizeof(float));
  selected_job job;
  job.tokens = sel_toks.data();
  job.positions = rows.data();
  job.count = static_cast<int>(rows.size());
  job.layer_end = e.cfg().layers;
  job.kv = sel.block;
  job.hidden = {h, job.count};
  e.run_selected(job);
  std::vector<float> got(rows.size() * hidden);
  e.to_host(got.data(), h, got.size() * sizeof(float));
  e.release(h);
  const std::vector<float> all = full.hidden_rows();
  want->clear();
  for (int p : rows) want->insert(want->end(), all.begin() + p * hidden, all.begin() + (p + 1) * hidden);
  return got;
}

}  // namespace

// Recomputing every row equals the full prefill: bitwise where the rows fill
// the device without splitting the keys (300 tokens), within the merge's
// rounding where they are split (2048 tokens); scattered rows over a long
// context (split keys) equal the prefill's rows.
BOOST_AUTO_TEST_CASE(run_selected_equals_full_prefill) {
  auto e = make_cuda_engine_random(preset("smollm2-135m"), 7);
  const int vocab = e->cfg().vocab_size;
  // Rows `rows` of an n-token prompt: bitwise, or within 1e-2 relative error.
  auto check = [&](int n, const std::vector<int>& rows, const std::string& what, bool bitwise) {
    chunk_mem full(*e, n), sel(*e, n);
    std::vector<float> want;
    const auto got = select_after_prefill(*e, prompt(n, vocab), full, sel, rows, &want);
    if (bitwise) {
      BOOST_TEST((got == want), what << ": hidden states bitwise");
      BOOST_TEST((sel.kv_bytes() == full.kv_bytes()), what << ": KV bitwise");
      return;
    }
    const double he = rel_err(got, want), ke = rel_err(kv_floats(*e, sel.block), kv_floats(*e, full.block));
    BOOST_TEST_MESSAGE(what << ": hidden rel err " << he << ", KV rel err " << ke);
    BOOST_TEST(he < 1e-2, what);
    BOOST_TEST(ke < 1e-2, what);
  };
  auto every = [](int n) {
    std::vector<int> rows(n);
    for (int i = 0; i < n; ++i) rows[i] = i;
    return rows;
  };
  check(300, every(300), "every row of 300", true);
  check(2048, every(2048), "every row of 2048", false);
  check(2048, {0, 1, 2, 511, 512, 1000, 1500, 1501, 2040, 2047}, "10 scattered rows of 2048", false);
  std::vector<int> unordered{5, 3};
  chunk_mem m(*e, 8);
  selected_job bad;
  std::vector<std::int32_t> toks{1, 2};
  bad.tokens = toks.data();
  bad.positions = unordered.data();
  bad.count = 2;
  bad.layer_end = e->cfg().layers;
  bad.kv = m.block;
  bad.hidden = {m.hidden.data, 2};
  BOOST_CHECK_THROW(e->run_selected(bad), kvflow::error);  // not ascending
}

// Against the CPU engine's run_selected on the same (bf16-rounded) weights:
// scattered rows of several "documents" over a 512-token block whose other
// rows hold each engine's own prefill.
BOOST_AUTO_TEST_CASE(run_selected_matches_cpu_engine) {
  const auto cfg = preset("smollm2-135m");
  const weights w = bf16_random_weights(cfg, 42);
  auto gpu = make_cuda_engine(w);
  auto cpu = make_cpu_engine(w, 0);
  const int n = 512;
  const auto toks = prompt(n, cfg.vocab_size);
  const std::vector<int> rows{0, 1, 2, 3, 128, 129, 130, 256, 300, 301, 480, 511};
  chunk_mem gf(*gpu, n), gs(*gpu, n), cf(*cpu, n), cs(*cpu, n);
  std::vector<float> gwant, cwant;
  const auto g = select_after_prefill(*gpu, toks, gf, gs, rows, &gwant);
  const auto c = select_after_prefill(*cpu, toks, cf, cs, rows, &cwant);
  const double he = rel_err(g, c), ke = rel_err(kv_floats(*gpu, gs.block), kv_floats(*cpu, cs.block));
  BOOST_TEST_MESSAGE("run_selected GPU vs CPU: hidden rel err " << he << ", KV rel err " << ke);
  BOOST_TEST(he < 0.1);
  BOOST_TEST(ke < 0.1);
  BOOST_TEST(rel_err(c, cwant) < 1e-4);  // the CPU's own check: its rows equal its prefill's
}
