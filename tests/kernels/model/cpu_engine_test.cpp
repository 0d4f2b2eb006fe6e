#define BOOST_TEST_MODULE kernels.model.cpu_engine
#include <boost/test/unit_test.hpp>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "kernels/cpu/rope.hpp"
#include "kernels/model/cpu_engine.hpp"
#include "messages/error.hpp"

using namespace kvflow::model;

namespace {

// Host KV block owned by the test.
struct block {
  std::vector<float> data;
  kv_block view;
  block(const config& c, int tokens) : data(kv_shape_of(c, tokens, dtype::f32).bytes() / 4, NAN) {
    view.data = data.data();
    view.shape = kv_shape_of(c, tokens, dtype::f32);
  }
};

struct prefill_result {
  std::vector<block> blocks;
  std::vector<int> starts;
  std::vector<float> last_hidden;  // [hidden]
  std::vector<float> logits;
};

// Runs tokens through `e` in chunks of the given sizes, each chunk over all
// layers, or over the layers split at `split` (0: no split), the layers from
// `split` on (and the logits) on `upper` when given.
prefill_result prefill(engine& e, const std::vector<std::int32_t>& tokens, const std::vector<int>& sizes, int split = 0,
                       engine* upper = nullptr) {
  const config& c = e.cfg();
  prefill_result r;
  r.blocks.reserve(sizes.size());
  int pos0 = 0;
  std::vector<float> hidden;
  for (int n : sizes) {
    r.blocks.emplace_back(c, n);
    r.starts.push_back(pos0);
    std::vector<kv_block> past;
    for (std::size_t b = 0; b + 1 < r.blocks.size(); ++b) past.push_back(r.blocks[b].view);
    hidden.assign(static_cast<std::size_t>(n) * c.hidden, NAN);
    chunk_job job;
    job.tokens = tokens.data() + pos0;
    job.count = n;
    job.pos0 = pos0;
    job.past = {past.data(), static_cast<int>(past.size())};
    job.out = r.blocks.back().view;
    job.hidden = {hidden.data(), n};
    if (split > 0) {
      job.layer_begin = 0;
      job.layer_end = split;
      e.run(job);
      job.layer_begin = split;
      job.layer_end = c.layers;
      job.tokens = nullptr;  // not read past layer 0
      (upper ? *upper : e).run(job);
    } else {
      job.layer_begin = 0;
      job.layer_end = c.layers;
      e.run(job);
    }
    pos0 += n;
  }
  r.last_hidden.assign(hidden.end() - c.hidden, hidden.end());
  (upper ? *upper : e).logits({hidden.data(), sizes.back()}, r.logits);
  return r;
}

// Every token's K and V of `a` equal `b`'s, bitwise, for all layers.
bool same_kv(const config& c, const prefill_result& a, const prefill_result& b) {
  auto value = [&](const prefill_result& r, int layer, int kv, int head, int pos, const float*& p) {
    for (std::size_t i = 0; i < r.blocks.size(); ++i) {
      int n = r.blocks[i].view.shape.tokens;
      if (pos < r.starts[i] + n) {
        p = r.blocks[i].data.data() + r.blocks[i].view.shape.offset(layer, kv, head, pos - r.starts[i], 0);
        return;
      }
    }
    p = nullptr;
  };
  int total = 0;
  for (auto& bl : a.blocks) total += bl.view.shape.tokens;
  for (int l = 0; l < c.layers; ++l)
    for (int kv = 0; kv < 2; ++kv)
      for (int h = 0; h < c.kv_heads; ++h)
        for (int t = 0; t < total; ++t) {
          const float *pa, *pb;
          value(a, l, kv, h, t, pa);
          value(b, l, kv, h, t, pb);
          if (!pa || !pb || std::memcmp(pa, pb, sizeof(float) * c.head_dim) != 0) {
            BOOST_TEST_MESSAGE("KV differs at layer " << l << " kv " << kv << " head " << h << " pos " << t);
            return false;
          }
        }
  return true;
}

std::vector<std::int32_t> random_tokens(int n, int vocab, unsigned seed) {
  std::mt19937 g(seed);
  std::vector<std::int32_t> t(n);
  for (auto& x : t) x = static_cast<std::int32_t>(g() % vocab);
  return t;
}

// tiny-test with one kv head, llama-3 scaling that matters at these
// positions, and tied embeddings.
config scaled_tied() {
  config c = preset("tiny-test");
  c.name = "tiny-test-scaled";
  c.kv_heads = 1;
  c.tie_embeddings = true;
  c.scaling = {true, 8.0f, 1.0f, 4.0f, 64};
  return c;
}

// Head sizes of the real models (64: SmolLM2, 128: llama) on a small width.
config wide_heads(int head_dim, int heads, int kv_heads) {
  config c = preset("tiny-test");
  c.name = "tiny-test-hd" + std::to_string(head_dim);
  c.layers = 2;
  c.heads = heads;
  c.kv_heads = kv_heads;
  c.head_dim = head_dim;
  c.hidden = heads * head_dim;
  return c;
}

// HF's llama forward in double, straight from the weights: the logits of the
// last token.
std::vector<double> naive_forward(const weights& w, const std::vector<std::int32_t>& tokens) {
  const config& c = w.cfg;
  const int n = static_cast<int>(tokens.size()), hd = c.head_dim, qw = c.heads * hd, kw = c.kv_heads * hd;
  auto inv = kvflow::cpu::rope_inv_freq(hd, c.rope_theta, c.scaling);
  auto norm = [&](const std::vector<double>& x, const std::vector<float>& g) {
    double ss = 0;
    for (double v : x) ss += v * v;
    double s = 1.0 / std::sqrt(ss / x.size() + c.rms_eps);
    std::vector<double> o(x.size());
    for (std::size_t i = 0; i < x.size(); ++i) o[i] = x[i] * s * g[i];
    return o;
  };
  auto mat = [](const std::vector<float>& m, int rows, const std::vector<double>& x) {
    std::vector<double> o(rows);
    for (int r = 0; r < rows; ++r) {
      double a = 0;
      for (std::size_t i = 0; i < x.size(); ++i) a += double(m[r * x.size() + i]) * x[i];
      o[r] = a;
    }
    return o;
  };
  auto rope = [&](std::vector<double>& v, int heads, int pos) {
    for (int h = 0; h < heads; ++h)
      for (int i = 0; i < hd / 2; ++i) {
        double a = double(pos) * inv[i], x0 = v[h * hd + i], x1 = v[h * hd + i + hd / 2];
        v[h * hd + i] = x0 * std::cos(a) - x1 * std::sin(a);
        v[h * hd + i + hd / 2] = x1 * std::cos(a) + x0 * std::sin(a);
      }
  };
  std::vector<std::vector<double>> h(n, std::vector<double>(c.hidden));
  for (int t = 0; t < n; ++t)
    for (int i = 0; i < c.hidden; ++i) h[t][i] = w.embedding[static_cast<std::size_t>(tokens[t]) * c.hidden + i];
  for (const auto& l : w.layers) {
    std::vector<std::vector<double>> q(n), k(n), v(n);
    for (int t = 0; t < n; ++t) {
      auto x = norm(h[t], l.attn_norm);
      q[t] = mat(l.wq, qw, x);
      k[t] = mat(l.wk, kw, x);
      v[t] = mat(l.wv, kw, x);
      rope(q[t], c.heads, t);
      rope(k[t], c.kv_heads, t);
    }
    for (int t = 0; t < n; ++t) {
      std::vector<double> att(qw, 0.0);
      for (int hh = 0; hh < c.heads; ++hh) {
        int g = hh / (c.heads / c.kv_heads);
        std::vector<double> s(t + 1);
        double m = -1e300, sum = 0;
        for (int j = 0; j <= t; ++j) {
          double d = 0;
          for (int i = 0; i < hd; ++i) d += q[t][hh * hd + i] * k[j][g * hd + i];
          s[j] = d / std::sqrt(double(hd));
          m = std::max(m, s[j]);
        }
        for (auto& x : s) sum += (x = std::exp(x - m));
        for (int j = 0; j <= t; ++j)
          for (int i = 0; i < hd; ++i) att[hh * hd + i] += s[j] / sum * v[j][g * hd + i];
      }
      auto o = mat(l.wo, c.hidden, att);
      for (int i = 0; i < c.hidden; ++i) h[t][i] += o[i];
      auto x = norm(h[t], l.ffn_norm);
      auto gate = mat(l.w_gate, c.intermediate, x), up = mat(l.w_up, c.intermediate, x);
      for (int i = 0; i < c.intermediate; ++i) gate[i] = gate[i] / (1 + std::exp(-gate[i])) * up[i];
      auto d = mat(l.w_down, c.hidden, gate);
      for (int i = 0; i < c.hidden; ++i) h[t][i] += d[i];
    }
  }
  return mat(w.lm_head(), c.vocab_size, norm(h[n - 1], w.final_norm));
}

}  // namespace

BOOST_AUTO_TEST_CASE(matches_a_naive_double_forward) {
  for (const config& c : {preset("tiny-test"), scaled_tied(), wide_heads(64, 3, 1), wide_heads(128, 2, 1)}) {
    weights w = random_weights(c, 42);
    auto tokens = random_tokens(90, c.vocab_size, 1);
    auto want = naive_forward(w, tokens);
    auto e = make_cpu_engine(std::move(w), 2);
    auto got = prefill(*e, tokens, {90});
    BOOST_REQUIRE_EQUAL(got.logits.size(), want.size());
    double worst = 0, scale = 0;
    for (std::size_t i = 0; i < want.size(); ++i) {
      worst = std::max(worst, std::abs(got.logits[i] - want[i]));
      scale = std::max(scale, std::abs(want[i]));
    }
    BOOST_TEST_MESSAGE(c.name << ": max logit error " << worst << " of max |logit| " << scale);
    BOOST_TEST(scale > 0.1);
    BOOST_TEST(worst < 1e-4 * (1 + scale), c.name << ": max logit error " << worst);
  }
}

BOOST_AUTO_TEST_CASE(chunked_prefill_is_bitwise_one_shot) {
  for (const config& c : {preset("tiny-test"), scaled_tied(), wide_heads(64, 3, 1), wide_heads(128, 2, 1)}) {
    auto e = make_cpu_engine(random_weights(c, 7), 2);
    const int n = 150;
    auto tokens = random_tokens(n, c.vocab_size, 2);
    auto whole = prefill(*e, tokens, {n});
    std::mt19937 g(3);
    std::vector<std::vector<int>> splits = {std::vector<int>(n, 1), {3, 3, 3, 141}, {7, 64, 64, 15}, {64, 64, 22}};
    for (int round = 0; round < 3; ++round) {  // random uneven splits
      std::vector<int> s;
      int left = n;
      const int choices[] = {1, 3, 7, 64, 2, 33};
      while (left > 0) {
        int k = std::min(left, choices[g() % 6]);
        s.push_back(k);
        left -= k;
      }
      splits.push_back(s);
    }
    for (const auto& s : splits) {
      auto chunked = prefill(*e, tokens, s);
      BOOST_TEST(same_kv(c, whole, chunked), c.name << ": KV of a split into " << s.size() << " chunks");
      BOOST_TEST(std::memcmp(whole.last_hidden.data(), chunked.last_hidden.data(), c.hidden * 4) == 0);
      BOOST_TEST(std::memcmp(whole.logits.data(), chunked.logits.data(), whole.logits.size() * 4) == 0);
    }
  }
}

BOOST_AUTO_TEST_CASE(layer_split_is_bitwise_all_layers) {
  const config c = preset("tiny-test");
  auto e = make_cpu_engine(random_weights(c, 8), 2);
  auto tokens = random_tokens(40, c.vocab_size, 4);
  auto whole = prefill(*e, tokens, {25, 15});
  for (int split = 1; split < c.layers; ++split) {
    auto parts = prefill(*e, tokens, {25, 15}, split);
    BOOST_TEST(same_kv(c, whole, parts), "split at layer " << split);
    BOOST_TEST(std::memcmp(whole.logits.data(), parts.logits.data(), whole.logits.size() * 4) == 0);
  }
}

// Engines of layer ranges hold only their layers' weights (the embedding
// with layer 0, the final norm and output with the last layer): their
// weight bytes add up to the whole model's, and two of them split at any
// layer give the whole engine's KV and logits bitwise.
BOOST_AUTO_TEST_CASE(layer_range_engines_hold_only_their_layers) {
  const config c = preset("tiny-test");
  const auto w = random_weights(c, 8);
  auto whole = make_cpu_engine(w, 1);
  BOOST_TEST(whole->layers_held().begin == 0);
  BOOST_TEST(whole->layers_held().end == c.layers);
  const std::size_t f = sizeof(float);
  const std::size_t embedding = static_cast<std::size_t>(c.vocab_size) * c.hidden * f;
  const std::size_t head = c.hidden * f + static_cast<std::size_t>(c.vocab_size) * c.hidden * f;  // untied
  BOOST_REQUIRE(!c.tie_embeddings);
  const std::size_t per_layer = (whole->weight_bytes() - embedding - head) / static_cast<std::size_t>(c.layers);
  BOOST_TEST(per_layer > 0u);
  auto tokens = random_tokens(40, c.vocab_size, 4);
  auto ref = prefill(*whole, tokens, {25, 15});
  for (int split = 1; split < c.layers; ++split) {
    auto lower = make_cpu_engine(w, 1, {0, split});
    auto upper = make_cpu_engine(w, 1, {split, c.layers});
    BOOST_TEST_CONTEXT("split at layer " << split) {
      BOOST_TEST(lower->weight_bytes() == embedding + static_cast<std::size_t>(split) * per_layer);
      BOOST_TEST(upper->weight_bytes() == head + static_cast<std::size_t>(c.layers - split) * per_layer);
      BOOST_TEST(lower->weight_bytes() + upper->weight_bytes() == whole->weight_bytes());
      // Chunk keys do not depend on the split.
      BOOST_TEST((lower->fingerprint() == whole->fingerprint() && upper->fingerprint() == whole->fingerprint()));
      auto parts = prefill(*lower, tokens, {25, 15}, split, upper.get());
      BOOST_TEST(same_kv(c, ref, parts));
      BOOST_TEST(std::memcmp(ref.logits.data(), parts.logits.data(), ref.logits.size() * 4) == 0);
      // Layers it does not hold, and the logits without the last layer, are refused.
      BOOST_CHECK_THROW(prefill(*lower, tokens, {25, 15}), kvflow::error);
      std::vector<float> hidden(static_cast<std::size_t>(c.hidden), 0.0f), out;
      BOOST_CHECK_THROW(lower->logits({hidden.data(), 1}, out), kvflow::error);
    }
  }
  // A middle stage holds neither the embedding nor the output.
  auto middle = make_cpu_engine(w, 1, {1, 3});
  BOOST_TEST(middle->weight_bytes() == 2 * per_layer);
  for (auto bad : {layer_range{2, 2}, layer_range{-1, 2}, layer_range{0, c.layers + 1}, layer_range{3, 1}})
    BOOST_CHECK_THROW(make_cpu_engine(w, 1, bad), kvflow::error);
}

// run_fused (the reference: one job after another) over chunks of one
// request, a layer range at a time: the KV of one-shot prefill; jobs of
// different layer ranges are refused.
BOOST_AUTO_TEST_CASE(fused_jobs_are_bitwise_one_shot) {
  const config c = preset("tiny-test");
  auto e = make_cpu_engine(random_weights(c, 8), 2);
  auto tokens = random_tokens(40, c.vocab_size, 4);
  auto whole = prefill(*e, tokens, {40});
  prefill_result fused;
  fused.blocks.reserve(4);
  std::vector<std::vector<float>> hidden(4, std::vector<float>(static_cast<std::size_t>(10) * c.hidden, NAN));
  std::vector<kv_block> views;
  for (int i = 0; i < 4; ++i) {
    fused.blocks.emplace_back(c, 10);
    fused.starts.push_back(10 * i);
    views.push_back(fused.blocks.back().view);
  }
  const int mid = c.layers / 2;
  for (auto range : {std::pair<int, int>{0, mid}, std::pair<int, int>{mid, c.layers}}) {
    std::vector<chunk_job> jobs;
    for (int i = 0; i < 4; ++i) {
      chunk_job j;
      j.tokens = tokens.data() + 10 * i;
      j.count = 10;
      j.pos0 = 10 * i;
      j.layer_begin = range.first;
      j.layer_end = range.second;
      j.past = {views.data(), i};
      j.out = views[i];
      j.hidden = {hidden[i].data(), 10};
      jobs.push_back(j);
    }
    e->run_fused(jobs);
  }
  BOOST_TEST(same_kv(c, whole, fused));
  std::vector<chunk_job> mixed(2);
  mixed[0].layer_end = 1;
  mixed[1].layer_end = 2;
  BOOST_CHECK_THROW(e->run_fused(mixed), kvflow::error);
}

BOOST_AUTO_TEST_CASE(decode_equals_last_row_of_prefill) {
  const config c = scaled_tied();
  auto e = make_cpu_engine(random_weights(c, 9), 1);
  auto tokens = random_tokens(70, c.vocab_size, 5);
  auto whole = prefill(*e, tokens, {70});
  // Prefill 66 then decode four tokens, one chunk of one each.
  auto stepped = prefill(*e, tokens, {66, 1, 1, 1, 1});
  BOOST_TEST(same_kv(c, whole, stepped));
  BOOST_TEST(std::memcmp(whole.logits.data(), stepped.logits.data(), whole.logits.size() * 4) == 0);
}

BOOST_AUTO_TEST_CASE(thread_count_does_not_change_bits) {
  const config c = preset("tiny-test");
  auto tokens = random_tokens(50, c.vocab_size, 6);
  auto one = make_cpu_engine(random_weights(c, 10), 1);
  auto three = make_cpu_engine(random_weights(c, 10), 3);
  auto a = prefill(*one, tokens, {50}), b = prefill(*three, tokens, {50});
  BOOST_TEST(same_kv(c, a, b));
  BOOST_TEST(one->fingerprint() == three->fingerprint());
}

BOOST_AUTO_TEST_CASE(engine_surface) {
  const config c = preset("tiny-test");
  weights w = random_weights(c, 11);
  auto fp = w.fingerprint;
  auto e = make_cpu_engine(std::move(w));
  BOOST_TEST(e->cfg().hidden == c.hidden);
  BOOST_TEST((e->kv_type() == dtype::f32));
  BOOST_TEST(e->fingerprint() == fp);
  void* p = e->allocate(1000);
  BOOST_REQUIRE(p);
  BOOST_TEST(reinterpret_cast<std::uintptr_t>(p) % 64 == 0);
  char src[1000], back[1000];
  for (int i = 0; i < 1000; ++i) src[i] = static_cast<char>(i);
  e->to_backend(p, src, 1000);
  e->to_host(back, p, 1000);
  BOOST_TEST(std::memcmp(src, back, 1000) == 0);
  e->synchronize();
  e->release(p);
}

BOOST_AUTO_TEST_CASE(bad_jobs_are_errors) {
  const config c = preset("tiny-test");
  auto e = make_cpu_engine(random_weights(c, 12), 1);
  std::vector<std::int32_t> tokens{1, 2, 3};
  block out(c, 3), other(c, 2);
  std::vector<float> hidden(3 * c.hidden);
  auto good = [&] {
    chunk_job j;
    j.tokens = tokens.data();
    j.count = 3;
    j.layer_end = c.layers;
    j.out = out.view;
    j.hidden = {hidden.data(), 3};
    return j;
  };
  e->run(good());
  auto expect_error = [&](chunk_job j, const char* what) {
    BOOST_CHECK_MESSAGE(
        [&] {
          try {
            e->run(j);
          } catch (const kvflow::error& err) {
            return err.code() == kvflow::errc::invalid_argument;
          }
          return false;
        }(),
        what);
  };
  auto j = good();
  j.count = 0;
  expect_error(j, "count 0");
  j = good();
  j.layer_end = c.layers + 1;
  expect_error(j, "layer_end past the model");
  j = good();
  j.layer_begin = 2;
  j.layer_end = 2;
  expect_error(j, "empty layer range");
  j = good();
  j.out = other.view;
  expect_error(j, "block of the wrong token count");
  j = good();
  j.out.shape.type = dtype::bf16;
  expect_error(j, "bf16 block");
  j = good();
  j.pos0 = 2;
  expect_error(j, "pos0 without past");
  j = good();
  kv_block past[1] = {other.view};
  j.past = {past, 1};
  expect_error(j, "past tokens != pos0");
  j = good();
  j.hidden.tokens = 2;
  expect_error(j, "hidden of the wrong size");
  j = good();
  tokens[1] = c.vocab_size;
  expect_error(j, "token outside the vocabulary");
  std::vector<float> logits;
  BOOST_CHECK_THROW(e->logits({nullptr, 0}, logits), kvflow::error);
}

BOOST_AUTO_TEST_CASE(rejects_weights_that_do_not_match_the_config) {
  weights w = random_weights(preset("tiny-test"), 1);
  w.layers[2].wk.pop_back();
  BOOST_CHECK_THROW(make_cpu_engine(std::move(w)), kvflow::error);
}
