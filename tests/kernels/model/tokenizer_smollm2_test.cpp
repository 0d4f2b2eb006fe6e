// The real SmolLM2-135M-Instruct GGUF: config from metadata, full weight
// load, and tokenizer + chat template agreement with llama.cpp's output
// recorded in fixtures/smollm2_reference.json (fixtures/make_reference.py).
#define BOOST_TEST_MODULE kernels_model_tokenizer_smollm2
#include <boost/test/unit_test.hpp>

#include <sys/stat.h>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>

#include "kernels/model/chat_template.hpp"
#include "kernels/model/gguf.hpp"
#include "kernels/model/model_file.hpp"
#include "kernels/model/tokenizer.hpp"
#include "messages/error.hpp"
#include "tests/kernels/model/fixtures/gguf_writer.hpp"

using namespace kvflow;
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

// One load for all cases: the file is 98 MB.
const loaded_model& smol() {
  static const loaded_model m = load_model_file(model_path());
  return m;
}

#define REQUIRE_MODEL()                                                                  \
  if (!exists(model_path())) {                                                           \
    BOOST_WARN_MESSAGE(false, "skipped: " + model_path() + " not found (KVFLOW_MODEL)"); \
    return;                                                                              \
  }

std::vector<std::int32_t> ids_of(const nlohmann::json& a) { return a.get<std::vector<std::int32_t>>(); }

}  // namespace

BOOST_AUTO_TEST_CASE(config_from_metadata) {
  REQUIRE_MODEL();
  auto f = gguf_file::open(model_path());
  auto c = gguf_config(f, "smollm2");
  BOOST_TEST(c.layers == 30);
  BOOST_TEST(c.hidden == 576);
  BOOST_TEST(c.intermediate == 1536);
  BOOST_TEST(c.heads == 9);
  BOOST_TEST(c.kv_heads == 3);
  BOOST_TEST(c.head_dim == 64);
  BOOST_TEST(c.vocab_size == 49152);
  BOOST_TEST(c.tie_embeddings);
  BOOST_TEST(c.rope_theta == 100000.0f);
  BOOST_TEST(c.rms_eps == 1e-5f);
  BOOST_TEST(c.max_positions == 8192);
  BOOST_TEST(!c.scaling.enabled);
  auto p = preset("smollm2-135m");
  BOOST_TEST(c.vocab_size == p.vocab_size);
  BOOST_TEST(c.intermediate == p.intermediate);
  BOOST_TEST(f.tensors().size() == 272u);
  BOOST_TEST(static_cast<int>(f.find_tensor("token_embd.weight")->type) == static_cast<int>(ggml_type::q8_0));
  BOOST_TEST(static_cast<int>(f.find_tensor("blk.0.attn_q.weight")->type) == static_cast<int>(ggml_type::q4_1));
}

BOOST_AUTO_TEST_CASE(full_load) {
  REQUIRE_MODEL();
  auto t0 = std::chrono::steady_clock::now();
  const auto& m = smol();
  double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  BOOST_TEST_MESSAGE("load_model_file: " << s << " s");
  const auto& w = m.w;
  BOOST_TEST(w.embedding.size() == 49152u * 576u);
  BOOST_TEST(w.output.empty());
  BOOST_TEST(&w.lm_head() == &w.embedding);
  BOOST_TEST(w.layers.size() == 30u);
  BOOST_TEST(w.layers[29].wk.size() == 192u * 576u);
  BOOST_TEST(w.layers[29].w_down.size() == 576u * 1536u);
  BOOST_TEST(w.fingerprint != sha256_digest{});
  bool finite = true;
  for (float x : w.layers[0].wq) finite = finite && std::isfinite(x);
  BOOST_TEST(finite);
  BOOST_REQUIRE(m.tok);
  BOOST_TEST(m.tok->vocab_size() == 49152);
  BOOST_TEST(m.tok->bos() == 1);
  BOOST_TEST(m.tok->eos() == 2);
  BOOST_TEST(m.tok->pre() == "smollm");
  BOOST_TEST(!m.tok->add_bos());
  BOOST_TEST(m.chat_template.find("<|im_start|>") != std::string::npos);
  BOOST_TEST(s < 20.0);
}

BOOST_AUTO_TEST_CASE(tokenize_matches_llama_cpp) {
  REQUIRE_MODEL();
  const auto& tok = *smol().tok;
  const auto& ref = reference();
  BOOST_TEST(ref["model"].get<std::string>() == "SmolLM2-135M-Instruct.Q4_1.gguf");
  BOOST_REQUIRE(ref["tokenize"].size() >= 5u);
  for (const auto& e : ref["tokenize"]) {
    auto text = e["text"].get<std::string>();
    bool special = e["parse_special"].get<bool>();
    auto want = ids_of(e["ids"]);
    BOOST_TEST_CONTEXT("text " << nlohmann::json(text).dump() << " special " << special) {
      auto got = tok.encode(text, special);
      BOOST_TEST(got == want, boost::test_tools::per_element());
      BOOST_TEST(tok.decode(got) == text);
    }
  }
}

BOOST_AUTO_TEST_CASE(chat_prompt_matches_llama_cpp) {
  REQUIRE_MODEL();
  const auto& m = smol();
  const auto& chat = reference()["chat"];
  std::vector<chat_message> msgs;
  for (const auto& x : chat["messages"])
    msgs.push_back({x["role"].get<std::string>(), x["content"].get<std::string>()});
  auto prompt = apply_chat_template(m.chat_template, msgs, true);
  BOOST_TEST(prompt == chat["prompt_text"].get<std::string>());
  auto ids = m.tok->encode(prompt, true);
  BOOST_TEST(ids == ids_of(chat["prompt_ids"]), boost::test_tools::per_element());
  auto greedy = ids_of(chat["greedy_ids"]);
  BOOST_TEST(greedy.size() >= 48u);
  BOOST_TEST(m.tok->decode(greedy) == chat["greedy_text"].get<std::string>());
  BOOST_TEST(m.tok->is_end_of_turn(m.tok->find("<|im_end|>")));
  BOOST_TEST(!m.tok->is_end_of_turn(m.tok->find("<|im_start|>")));
}

BOOST_AUTO_TEST_CASE(every_id_decodes_and_text_round_trips) {
  REQUIRE_MODEL();
  const auto& tok = *smol().tok;
  std::vector<std::int32_t> all(static_cast<std::size_t>(tok.vocab_size()));
  for (std::size_t i = 0; i < all.size(); ++i) all[i] = static_cast<std::int32_t>(i);
  BOOST_TEST(!tok.decode(all).empty());
  BOOST_CHECK_THROW(tok.decode({tok.vocab_size()}), kvflow::error);
  BOOST_CHECK_THROW(tok.decode({-1}), kvflow::error);
  std::mt19937 rng(5);
  const char* pieces[] = {"the", " ", "  ", "\n", "ü", "中", "😀", "12", "'s", "<|im_end|>", "\xc3\xa9", "!", "\t", "A"};
  for (int k = 0; k < 200; ++k) {
    std::string s;
    for (int j = 0; j < 12; ++j) s += pieces[rng() % (sizeof pieces / sizeof *pieces)];
    BOOST_TEST(tok.decode(tok.encode(s, true)) == s);
    BOOST_TEST(tok.decode(tok.encode(s, false)) == s);
  }
}

BOOST_AUTO_TEST_CASE(truncated_real_file_is_a_clean_error) {
  REQUIRE_MODEL();
  std::ifstream in(model_path(), std::ios::binary);
  std::vector<char> head(2u << 20);  // header, metadata and tensor infos end near 1.8 MB
  in.read(head.data(), static_cast<std::streamsize>(head.size()));
  std::string dir = kvflow::test::scratch_dir("smol");
  std::string path = dir + "/cut.gguf";
  std::mt19937 rng(9);
  for (int k = 0; k < 60; ++k) {
    std::size_t n = k < 30 ? rng() % 4096 : rng() % head.size();
    {
      std::ofstream out(path, std::ios::binary | std::ios::trunc);
      out.write(head.data(), static_cast<std::streamsize>(n));
    }
    BOOST_TEST_CONTEXT("cut at " << n) {
      try {
        load_model_file(path);
        BOOST_FAIL("a truncated file loaded");
      } catch (const kvflow::error& e) {
        BOOST_TEST(e.code() == errc::bad_file);
        BOOST_TEST(std::string(e.what()).find(path) != std::string::npos, e.what());
      }
    }
  }
  std::remove(path.c_str());
  std::remove(dir.c_str());
}
