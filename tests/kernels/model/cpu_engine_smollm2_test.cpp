// The CPU engine on the real SmolLM2-135M-Instruct GGUF against llama.cpp
// (fixtures/smollm2_reference.json, made by fixtures/make_reference.py):
// greedy chat tokens and teacher-forced top-1 over a 512-token text.
#define BOOST_TEST_MODULE kernels.model.cpu_engine_smollm2
#include <boost/test/unit_test.hpp>

#include <sys/stat.h>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>

#include "kernels/cpu/matmul.hpp"
#include "kernels/cpu/rmsnorm.hpp"
#include "kernels/model/chat_template.hpp"
#include "kernels/model/cpu_engine.hpp"
#include "kernels/model/model_file.hpp"
#include "kernels/model/tokenizer.hpp"

using namespace kvflow::model;

namespace {

bool exists(const std::string& p) {
  struct stat st {};
  return ::stat(p.c_str(), &st) == 0;
}

std::string model_path() {
  auto p = default_model_path();
  if (!exists(p)) p = std::string(KVFLOW_SOURCE_DIR) + "/models/SmolLM2-135M-Instruct.Q4_1.gguf";
  return p;
}

const nlohmann::json& reference() {
  static const nlohmann::json j = [] {
    std::ifstream in(std::string(KVFLOW_SOURCE_DIR) + "/tests/kernels/model/fixtures/smollm2_reference.json");
    BOOST_REQUIRE_MESSAGE(in, "fixtures/smollm2_reference.json is missing");
    return nlohmann::json::parse(in);
  }();
  return j;
}

// One load and one engine for all cases.
struct model_under_test {
  std::shared_ptr<const tokenizer> tok;
  std::string chat_template;
  // For the logits of every row at once (the engine gives the last row's).
  kvflow::cpu::packed_matrix lm_head;
  std::vector<float> final_norm;
  std::unique_ptr<engine> e;
};

model_under_test& smol() {
  static model_under_test m = [] {
    auto t0 = std::chrono::steady_clock::now();
    loaded_model lm = load_model_file(model_path());
    auto t1 = std::chrono::steady_clock::now();
    model_under_test r;
    r.tok = lm.tok;
    r.chat_template = lm.chat_template;
    const config& c = lm.w.cfg;
    r.lm_head = kvflow::cpu::pack_matrix(lm.w.lm_head().data(), c.vocab_size, c.hidden);
    r.final_norm = lm.w.final_norm;
    r.e = make_cpu_engine(std::move(lm.w));
    BOOST_TEST_MESSAGE("load " << std::chrono::duration<double>(t1 - t0).count() << " s, engine "
                               << std::chrono::duration<double>(std::chrono::steady_clock::now() - t1).count() << " s");
    return r;
  }();
  return m;
}

#define REQUIRE_MODEL()                                                                  \
  if (!exists(model_path())) {                                                           \
    BOOST_WARN_MESSAGE(false, "skipped: " + model_path() + " not found (KVFLOW_MODEL)"); \
    return;                                                                              \
  }

// A prompt's KV and hidden state, built chunk by chunk.
struct sequence {
  engine& e;
  std::vector<std::vector<float>> blocks;
  std::vector<kv_block> views;
  std::vector<float> hidden;  // of the last chunk
  int length = 0;

  explicit sequence(engine& en) : e(en) {}
  void run(const std::int32_t* tokens, int n) {
    const config& c = e.cfg();
    kv_shape shape = kv_shape_of(c, n, dtype::f32);
    blocks.emplace_back(shape.bytes() / sizeof(float));
    hidden.assign(static_cast<std::size_t>(n) * c.hidden, 0.0f);
    chunk_job job;
    job.tokens = tokens;
    job.count = n;
    job.pos0 = length;
    job.layer_end = c.layers;
    job.past = {views.data(), static_cast<int>(views.size())};
    job.out = {blocks.back().data(), shape};
    job.hidden = {hidden.data(), n};
    e.run(job);
    views.push_back(job.out);
    length += n;
  }
  std::vector<float> logits_of_row(int row) {
    std::vector<float> out;
    e.logits({hidden.data() + static_cast<std::size_t>(row) * e.cfg().hidden, 1}, out);
    return out;
  }
};

}  // namespace

BOOST_AUTO_TEST_CASE(greedy_chat_matches_llama_cpp) {
  REQUIRE_MODEL();
  auto& m = smol();
  const auto& chat = reference().at("chat");
  auto prompt = chat.at("prompt_ids").get<std::vector<std::int32_t>>();
  auto want = chat.at("greedy_ids").get<std::vector<std::int32_t>>();
  BOOST_REQUIRE_GE(want.size(), 48u);
  // Our template and tokenizer give llama.cpp's prompt.
  std::vector<chat_message> messages;
  for (const auto& msg : chat.at("messages")) messages.push_back({msg.at("role"), msg.at("content")});
  BOOST_TEST(m.tok->encode(apply_chat_template(m.chat_template, messages, true), true) == prompt);

  sequence s(*m.e);
  s.run(prompt.data(), static_cast<int>(prompt.size()));
  std::vector<std::int32_t> got;
  std::vector<float> logits = s.logits_of_row(static_cast<int>(prompt.size()) - 1);
  while (got.size() < want.size()) {
    std::int32_t t = sample(logits, sampling{}, got.size());
    got.push_back(t);
    s.run(&got.back(), 1);  // decode: a chunk of one
    logits = s.logits_of_row(0);
  }
  std::size_t same = 0;
  while (same < want.size() && got[same] == want[same]) ++same;
  std::vector<std::int32_t> answer;
  for (auto t : got) {
    if (m.tok->is_end_of_turn(t)) break;
    answer.push_back(t);
  }
  std::string text = m.tok->decode(answer);
  BOOST_TEST_MESSAGE("greedy answer: " << text);
  BOOST_TEST_MESSAGE("greedy tokens equal to llama.cpp's: " << same << " of " << want.size());
  BOOST_TEST(same >= 32u, "only the first " << same << " greedy tokens match llama.cpp");
  BOOST_TEST(text.find("Paris") != std::string::npos, "answer: " << text);
}

BOOST_AUTO_TEST_CASE(teacher_forced_top1_agrees_with_llama_cpp) {
  REQUIRE_MODEL();
  auto& m = smol();
  const auto& tf = reference().at("teacher_forced");
  auto ids = tf.at("ids").get<std::vector<std::int32_t>>();
  auto top1 = tf.at("top1").get<std::vector<std::int32_t>>();
  BOOST_REQUIRE_EQUAL(ids.size(), 512u);
  BOOST_REQUIRE_EQUAL(top1.size(), 511u);
  sequence s(*m.e);
  int agree = 0, next = 0, row = 0;
  double prefill_s = 0;
  for (int chunk : {200, 256, 56}) {  // chunked prefill, 512 tokens
    auto t0 = std::chrono::steady_clock::now();
    s.run(ids.data() + s.length, chunk);
    prefill_s += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    // Logits of every row: the engine's final norm and lm_head, batched.
    const config& c = m.e->cfg();
    std::vector<float> normed(s.hidden.size()), logits(static_cast<std::size_t>(chunk) * c.vocab_size);
    kvflow::cpu::rmsnorm(s.hidden.data(), m.final_norm.data(), chunk, c.hidden, c.rms_eps, normed.data());
    kvflow::cpu::matmul(nullptr, normed.data(), chunk, c.hidden, m.lm_head, logits.data(), c.vocab_size);
    BOOST_TEST(std::equal(logits.end() - c.vocab_size, logits.end(), s.logits_of_row(chunk - 1).begin(),
                          [](float a, float b) { return std::abs(a - b) <= 1e-4f * (1 + std::abs(b)); }));
    for (int r = 0; r < chunk; ++r, ++row) {
      if (row >= 511) break;
      auto first = logits.begin() + static_cast<std::ptrdiff_t>(r) * c.vocab_size;
      auto t = static_cast<std::int32_t>(std::max_element(first, first + c.vocab_size) - first);
      agree += t == top1[row];
      next += t == ids[row + 1];
    }
  }
  BOOST_TEST_MESSAGE("teacher-forced top-1 equal to llama.cpp's: " << agree << " / 511 (" << 100.0 * agree / 511
                                                                   << "%); equal to the next token: " << next);
  BOOST_TEST_MESSAGE("prefill of 512 tokens: " << prefill_s << " s, " << 512 / prefill_s << " tokens/s");
  BOOST_TEST(agree >= 0.97 * 511, "top-1 agreement " << agree << " / 511");
}

BOOST_AUTO_TEST_CASE(chunked_prefill_and_decode_are_bitwise_one_shot) {
  REQUIRE_MODEL();
  auto& m = smol();
  const config& c = m.e->cfg();
  auto ids = reference().at("teacher_forced").at("ids").get<std::vector<std::int32_t>>();
  const int n = 300;
  sequence whole(*m.e);
  whole.run(ids.data(), n);
  sequence parts(*m.e);
  for (int size : {1, 7, 64, 3, 100, 124, 1}) parts.run(ids.data() + parts.length, size);
  BOOST_REQUIRE_EQUAL(parts.length, n);
  // Compare every position's K and V, all layers.
  int pos = 0;
  bool same = true;
  for (const auto& b : parts.views) {
    for (int l = 0; l < c.layers; ++l)
      for (int kv = 0; kv < 2; ++kv)
        for (int h = 0; h < c.kv_heads; ++h)
          for (int t = 0; t < b.shape.tokens; ++t) {
            const float* a = static_cast<const float*>(b.data) + b.shape.offset(l, kv, h, t, 0);
            const kv_shape& ws = whole.views[0].shape;
            const float* w = static_cast<const float*>(whole.views[0].data) + ws.offset(l, kv, h, pos + t, 0);
            same = same && std::memcmp(a, w, sizeof(float) * c.head_dim) == 0;
          }
    pos += b.shape.tokens;
  }
  BOOST_TEST(same, "KV of the chunked prefill differs from one-shot");
  auto a = whole.logits_of_row(n - 1), b = parts.logits_of_row(0);
  BOOST_TEST(std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0);
}
