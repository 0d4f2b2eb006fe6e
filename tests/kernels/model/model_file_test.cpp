// Model loading from GGUF (Q/K un-permutation, config from metadata) and
// from safetensors + config.json, on a tiny llama written by the test.
#define BOOST_TEST_MODULE kernels_model_model_file
#include <boost/test/unit_test.hpp>

#include <cstdio>
#include <cstdlib>
#include <random>

#include "kernels/model/gguf.hpp"
#include "kernels/model/model_file.hpp"
#include "messages/error.hpp"
#include "tests/kernels/model/fixtures/gguf_writer.hpp"
#include "tests/kernels/model/fixtures/safetensors_writer.hpp"

using namespace kvflow;
using namespace kvflow::model;

namespace {

// vocab 270 (the test tokenizer), hidden 8, 2 heads of 4, 1 kv head,
// intermediate 12, 2 layers.
config tiny() {
  config c;
  c.name = "tiny";
  c.vocab_size = 270;
  c.hidden = 8;
  c.intermediate = 12;
  c.layers = 2;
  c.heads = 2;
  c.kv_heads = 1;
  c.head_dim = 4;
  c.rms_eps = 1e-6f;
  c.rope_theta = 50000.0f;
  c.max_positions = 256;
  return c;
}

std::vector<float> rnd(std::size_t n, std::mt19937& rng) {
  std::uniform_real_distribution<float> d(-1, 1);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

weights hf_weights(const config& c, bool tied) {
  std::mt19937 rng(11);
  weights w;
  w.cfg = c;
  w.cfg.tie_embeddings = tied;
  auto H = static_cast<std::size_t>(c.hidden), I = static_cast<std::size_t>(c.intermediate),
       V = static_cast<std::size_t>(c.vocab_size), KV = static_cast<std::size_t>(c.kv_width());
  w.embedding = rnd(V * H, rng);
  w.final_norm = rnd(H, rng);
  if (!tied) w.output = rnd(V * H, rng);
  for (int l = 0; l < c.layers; ++l) {
    layer_weights L;
    L.attn_norm = rnd(H, rng);
    L.wq = rnd(H * H, rng);
    L.wk = rnd(KV * H, rng);
    L.wv = rnd(KV * H, rng);
    L.wo = rnd(H * H, rng);
    L.ffn_norm = rnd(H, rng);
    L.w_gate = rnd(I * H, rng);
    L.w_up = rnd(I * H, rng);
    L.w_down = rnd(H * I, rng);
    w.layers.push_back(L);
  }
  return w;
}

using u64 = std::uint64_t;

// Writes `w` as llama.cpp's converter would: Q and K rows permuted.
void write_gguf(const weights& w, const std::string& path, bool with_tokenizer, int ffn_claim = 0) {
  const config& c = w.cfg;
  kvflow::test::gguf_writer g;
  g.kv_str("general.architecture", "llama");
  g.kv_u32("llama.block_count", static_cast<std::uint32_t>(c.layers));
  g.kv_u32("llama.context_length", static_cast<std::uint32_t>(c.max_positions));
  g.kv_u32("llama.embedding_length", static_cast<std::uint32_t>(c.hidden));
  g.kv_u32("llama.feed_forward_length", static_cast<std::uint32_t>(ffn_claim ? ffn_claim : c.intermediate));
  g.kv_u32("llama.attention.head_count", static_cast<std::uint32_t>(c.heads));
  g.kv_u32("llama.attention.head_count_kv", static_cast<std::uint32_t>(c.kv_heads));
  g.kv_f32("llama.rope.freq_base", c.rope_theta);
  g.kv_f32("llama.attention.layer_norm_rms_epsilon", c.rms_eps);
  g.kv_u32("llama.rope.dimension_count", static_cast<std::uint32_t>(c.head_dim));
  if (with_tokenizer) {
    kvflow::test::add_test_tokenizer(g);
    g.kv_str("tokenizer.chat_template", "{{'<|im_start|>'}}");
  } else {
    g.kv_u32("llama.vocab_size", static_cast<std::uint32_t>(c.vocab_size));
  }
  u64 H = static_cast<u64>(c.hidden), I = static_cast<u64>(c.intermediate), V = static_cast<u64>(c.vocab_size),
      KV = static_cast<u64>(c.kv_width());
  g.tensor_f32("token_embd.weight", {H, V}, w.embedding);
  g.tensor_f32("output_norm.weight", {H}, w.final_norm);
  if (!c.tie_embeddings) g.tensor_f32("output.weight", {H, V}, w.output);
  for (int l = 0; l < c.layers; ++l) {
    const auto& L = w.layers[static_cast<std::size_t>(l)];
    std::string b = "blk." + std::to_string(l) + ".";
    g.tensor_f32(b + "attn_norm.weight", {H}, L.attn_norm);
    g.tensor_f32(b + "attn_q.weight", {H, H}, rope_permute_rows(L.wq, c.heads, c.hidden));
    g.tensor_f32(b + "attn_k.weight", {H, KV}, rope_permute_rows(L.wk, c.kv_heads, c.hidden));
    g.tensor_f32(b + "attn_v.weight", {H, KV}, L.wv);
    g.tensor_f32(b + "attn_output.weight", {H, H}, L.wo);
    g.tensor_f32(b + "ffn_norm.weight", {H}, L.ffn_norm);
    g.tensor_f32(b + "ffn_gate.weight", {H, I}, L.w_gate);
    g.tensor_f32(b + "ffn_up.weight", {H, I}, L.w_up);
    g.tensor_f32(b + "ffn_down.weight", {I, H}, L.w_down);
  }
  g.save(path);
}

void write_safetensors(const weights& w, const std::string& dir) {
  const config& c = w.cfg;
  kvflow::test::safetensors_writer s;
  std::int64_t H = c.hidden, I = c.intermediate, V = c.vocab_size, KV = c.kv_width();
  s.add_f32("model.embed_tokens.weight", {V, H}, w.embedding);
  s.add_f32("model.norm.weight", {H}, w.final_norm);
  if (!c.tie_embeddings) s.add_f32("lm_head.weight", {V, H}, w.output);
  for (int l = 0; l < c.layers; ++l) {
    const auto& L = w.layers[static_cast<std::size_t>(l)];
    std::string b = "model.layers." + std::to_string(l) + ".";
    s.add_f32(b + "input_layernorm.weight", {H}, L.attn_norm);
    s.add_f32(b + "self_attn.q_proj.weight", {H, H}, L.wq);
    s.add_f32(b + "self_attn.k_proj.weight", {KV, H}, L.wk);
    s.add_f32(b + "self_attn.v_proj.weight", {KV, H}, L.wv);
    s.add_f32(b + "self_attn.o_proj.weight", {H, H}, L.wo);
    s.add_f32(b + "post_attention_layernorm.weight", {H}, L.ffn_norm);
    s.add_f32(b + "mlp.gate_proj.weight", {I, H}, L.w_gate);
    s.add_f32(b + "mlp.up_proj.weight", {I, H}, L.w_up);
    s.add_f32(b + "mlp.down_proj.weight", {H, I}, L.w_down);
  }
  kvflow::test::safetensors_writer::save(dir + "/model.safetensors", s.bytes());
  nlohmann::json j = {{"model_type", "llama"},
                      {"vocab_size", c.vocab_size},
                      {"hidden_size", c.hidden},
                      {"intermediate_size", c.intermediate},
                      {"num_hidden_layers", c.layers},
                      {"num_attention_heads", c.heads},
                      {"num_key_value_heads", c.kv_heads},
                      {"rms_norm_eps", c.rms_eps},
                      {"rope_theta", c.rope_theta},
                      {"max_position_embeddings", c.max_positions},
                      {"tie_word_embeddings", c.tie_embeddings},
                      {"rope_scaling",
                       {{"rope_type", "llama3"},
                        {"factor", 32.0},
                        {"low_freq_factor", 1.0},
                        {"high_freq_factor", 4.0},
                        {"original_max_position_embeddings", 64}}}};
  kvflow::test::save_text(dir + "/config.json", j.dump());
}

void same_weights(const weights& a, const weights& b) {
  BOOST_TEST(a.embedding == b.embedding);
  BOOST_TEST(a.final_norm == b.final_norm);
  BOOST_TEST(a.output == b.output);
  BOOST_REQUIRE(a.layers.size() == b.layers.size());
  for (std::size_t l = 0; l < a.layers.size(); ++l) {
    BOOST_TEST(a.layers[l].wq == b.layers[l].wq);
    BOOST_TEST(a.layers[l].wk == b.layers[l].wk);
    BOOST_TEST(a.layers[l].wv == b.layers[l].wv);
    BOOST_TEST(a.layers[l].wo == b.layers[l].wo);
    BOOST_TEST(a.layers[l].attn_norm == b.layers[l].attn_norm);
    BOOST_TEST(a.layers[l].ffn_norm == b.layers[l].ffn_norm);
    BOOST_TEST(a.layers[l].w_gate == b.layers[l].w_gate);
    BOOST_TEST(a.layers[l].w_up == b.layers[l].w_up);
    BOOST_TEST(a.layers[l].w_down == b.layers[l].w_down);
  }
}

struct scratch {
  std::string dir = kvflow::test::scratch_dir("mf");
  ~scratch() { std::system(("rm -rf '" + dir + "'").c_str()); }
};

}  // namespace

BOOST_AUTO_TEST_CASE(rope_permutation_moves_rows_as_llama_cpp) {
  // 1 head of head_dim 4, 1 column: row r holds r. HF rows (0,1 | 2,3) are
  // (first half | second half); GGUF interleaves them as pairs (0,2),(1,3).
  std::vector<float> hf = {0, 1, 2, 3};
  auto g = rope_permute_rows(hf, 1, 1);
  BOOST_TEST(g == (std::vector<float>{0, 2, 1, 3}), boost::test_tools::per_element());
  BOOST_TEST(rope_unpermute_rows(g, 1, 1) == hf, boost::test_tools::per_element());
  // 2 heads of head_dim 6, 2 columns: HF row 1 (head 0, first half, i=1)
  // lands in GGUF row 2; HF row 6+3 (head 1, second half, i=0) in row 6+1.
  std::vector<float> m(24);
  for (std::size_t k = 0; k < m.size(); ++k) m[k] = static_cast<float>(k);
  auto p = rope_permute_rows(m, 2, 2);
  BOOST_TEST(p[2 * 2] == m[1 * 2]);
  BOOST_TEST(p[2 * 2 + 1] == m[1 * 2 + 1]);
  BOOST_TEST(p[7 * 2] == m[9 * 2]);
  BOOST_TEST(rope_unpermute_rows(p, 2, 2) == m, boost::test_tools::per_element());
  BOOST_TEST(rope_permute_rows(rope_unpermute_rows(m, 2, 2), 2, 2) == m, boost::test_tools::per_element());
  BOOST_CHECK_THROW(rope_permute_rows(std::vector<float>(6), 1, 2), kvflow::error);  // odd head_dim
}

BOOST_AUTO_TEST_CASE(gguf_llama_loads_in_hf_order) {
  scratch s;
  auto c = tiny();
  for (bool tied : {true, false}) {
    auto hf = hf_weights(c, tied);
    std::string path = s.dir + "/tiny.gguf";
    write_gguf(hf, path, true);
    auto m = load_model_file(path);
    BOOST_TEST(m.w.cfg.name == "tiny");
    BOOST_TEST(m.w.cfg.layers == 2);
    BOOST_TEST(m.w.cfg.hidden == 8);
    BOOST_TEST(m.w.cfg.heads == 2);
    BOOST_TEST(m.w.cfg.kv_heads == 1);
    BOOST_TEST(m.w.cfg.head_dim == 4);
    BOOST_TEST(m.w.cfg.intermediate == 12);
    BOOST_TEST(m.w.cfg.vocab_size == 270);
    BOOST_TEST(m.w.cfg.rope_theta == 50000.0f);
    BOOST_TEST(m.w.cfg.rms_eps == 1e-6f);
    BOOST_TEST(m.w.cfg.max_positions == 256);
    BOOST_TEST(m.w.cfg.tie_embeddings == tied);
    same_weights(m.w, hf);
    BOOST_TEST(m.w.fingerprint != sha256_digest{});
    BOOST_REQUIRE(m.tok);
    BOOST_TEST(m.tok->vocab_size() == 270);
    BOOST_TEST(m.chat_template == "{{'<|im_start|>'}}");
  }
}

BOOST_AUTO_TEST_CASE(gguf_shape_mismatch_is_named) {
  scratch s;
  auto hf = hf_weights(tiny(), true);
  std::string path = s.dir + "/bad.gguf";
  write_gguf(hf, path, false, 16);  // metadata says 16, tensors hold 12
  try {
    load_model_file(path);
    BOOST_FAIL("expected an error");
  } catch (const kvflow::error& e) {
    std::string what = e.what();
    BOOST_TEST(e.code() == errc::bad_file);
    BOOST_TEST(what.find(path) != std::string::npos, what);
    BOOST_TEST(what.find("ffn_gate") != std::string::npos, what);
  }
}

BOOST_AUTO_TEST_CASE(safetensors_folder_and_file_load) {
  scratch s;
  auto c = tiny();
  auto hf = hf_weights(c, false);
  write_safetensors(hf, s.dir);
  for (const std::string& p : {s.dir, s.dir + "/model.safetensors"}) {
    auto m = load_model_file(p);
    BOOST_TEST(!m.tok);
    BOOST_TEST(m.w.cfg.hidden == 8);
    BOOST_TEST(m.w.cfg.kv_heads == 1);
    BOOST_TEST(!m.w.cfg.tie_embeddings);
    BOOST_TEST(m.w.cfg.scaling.enabled);
    BOOST_TEST(m.w.cfg.scaling.factor == 32.0f);
    BOOST_TEST(m.w.cfg.scaling.original_max_positions == 64);
    same_weights(m.w, hf);
  }
  // A missing tensor and a bad config are named.
  kvflow::test::save_text(s.dir + "/config.json", "{\"vocab_size\": 270");
  try {
    load_model_file(s.dir);
    BOOST_FAIL("expected an error");
  } catch (const kvflow::error& e) {
    BOOST_TEST(std::string(e.what()).find("config.json") != std::string::npos);
  }
  kvflow::test::save_text(s.dir + "/config.json", "{\"vocab_size\": 270, \"hidden_size\": 8}");
  BOOST_CHECK_THROW(load_model_file(s.dir), kvflow::error);
}

BOOST_AUTO_TEST_CASE(dispatch_and_default_path) {
  scratch s;
  kvflow::test::save_text(s.dir + "/x.bin", "hello world");
  try {
    load_model_file(s.dir + "/x.bin");
    BOOST_FAIL("expected an error");
  } catch (const kvflow::error& e) {
    BOOST_TEST(e.code() == errc::bad_file);
    BOOST_TEST(std::string(e.what()).find("x.bin") != std::string::npos);
  }
  BOOST_CHECK_THROW(load_model_file(s.dir + "/none.gguf"), kvflow::error);
  BOOST_CHECK_THROW(load_model_file(s.dir), kvflow::error);  // folder without config.json

  ::setenv("KVFLOW_MODEL", "/some/model.gguf", 1);
  BOOST_TEST(default_model_path() == "/some/model.gguf");
  ::unsetenv("KVFLOW_MODEL");
  auto p = default_model_path();
  BOOST_TEST(p.find("models/SmolLM2-135M-Instruct.Q4_1.gguf") != std::string::npos);
}
