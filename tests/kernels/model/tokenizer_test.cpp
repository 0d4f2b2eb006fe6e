// Byte-level BPE tokenizer on a small hand-made vocabulary: merges,
// pre-tokenization, special tokens, round trips of arbitrary bytes, bad ids.
#define BOOST_TEST_MODULE kernels_model_tokenizer
#include <boost/test/unit_test.hpp>

#include <cstdio>
#include <random>

#include "kernels/model/chat_template.hpp"
#include "kernels/model/gguf.hpp"
#include "kernels/model/tokenizer.hpp"
#include "messages/error.hpp"
#include "tests/kernels/model/fixtures/gguf_writer.hpp"

using namespace kvflow;
using namespace kvflow::model;
using kvflow::test::byte_char;

namespace {

tokenizer make(const std::string& pre = "smollm") {
  std::string dir = kvflow::test::scratch_dir("tok");
  std::string path = dir + "/tok.gguf";
  kvflow::test::gguf_writer w;
  kvflow::test::add_test_tokenizer(w, pre);
  w.save(path);
  auto t = tokenizer::from_gguf(gguf_file::open(path));
  std::remove(path.c_str());
  std::remove(dir.c_str());
  return t;
}

std::int32_t byte_id(int b) { return 4 + b; }

}  // namespace

BOOST_AUTO_TEST_CASE(merges_apply_by_rank) {
  auto t = make();
  BOOST_TEST(t.vocab_size() == 270);
  BOOST_TEST(t.bos() == 1);
  BOOST_TEST(t.eos() == 2);
  BOOST_TEST(t.add_bos());
  auto hello = t.find("hello");
  auto world = t.find(byte_char(' ') + "world");
  BOOST_REQUIRE(hello >= 0);
  BOOST_REQUIRE(world >= 0);
  auto ids = t.encode("hello world");
  BOOST_TEST(ids == (std::vector<std::int32_t>{hello, world}), boost::test_tools::per_element());
  // "hel" stops at "he" + "l": no merge "he l".
  ids = t.encode("hel");
  BOOST_TEST(ids == (std::vector<std::int32_t>{t.find("he"), byte_id('l')}), boost::test_tools::per_element());
  BOOST_TEST(t.decode(t.encode("hello world")) == "hello world");
}

BOOST_AUTO_TEST_CASE(digits_are_split_for_smollm_but_not_gpt2) {
  auto smol = make("smollm");
  BOOST_TEST(smol.encode("12") == (std::vector<std::int32_t>{byte_id('1'), byte_id('2')}),
             boost::test_tools::per_element());
  auto gpt2 = make("gpt-2");
  BOOST_TEST(gpt2.encode("12") == (std::vector<std::int32_t>{gpt2.find("12")}), boost::test_tools::per_element());
  BOOST_CHECK_THROW(make("no-such-pre"), kvflow::error);
}

BOOST_AUTO_TEST_CASE(pre_tokenizer_keeps_one_space_for_the_next_word) {
  auto t = make();
  // "a   b": "a", "  " (whitespace minus the last), " b"
  auto ids = t.encode("a   b");
  std::vector<std::int32_t> want = {byte_id('a'), byte_id(' '), byte_id(' '), byte_id(' '), byte_id('b')};
  BOOST_TEST(ids == want, boost::test_tools::per_element());
  BOOST_TEST(t.decode(ids) == "a   b");
}

BOOST_AUTO_TEST_CASE(special_tokens_in_text) {
  auto t = make();
  auto ids = t.encode("<|im_start|>hello<|im_end|>", true);
  BOOST_TEST(ids == (std::vector<std::int32_t>{1, t.find("hello"), 2}), boost::test_tools::per_element());
  auto plain = t.encode("<|im_start|>", false);
  BOOST_TEST(plain.size() > 3u);
  for (auto id : plain) BOOST_TEST(!t.is_special(id));
  BOOST_TEST(t.decode(plain) == "<|im_start|>");
  // User-defined tokens are matched even without parse_special (as llama.cpp).
  BOOST_TEST(t.encode("<tool>", false) == (std::vector<std::int32_t>{3}), boost::test_tools::per_element());
  BOOST_TEST(t.decode({1, 2, 0}) == "<|im_start|><|im_end|><|endoftext|>");
  BOOST_TEST(t.is_end_of_turn(2));
  BOOST_TEST(t.is_end_of_turn(0));
  BOOST_TEST(!t.is_end_of_turn(1));
  BOOST_TEST(!t.is_end_of_turn(-5));
  BOOST_TEST(!t.is_end_of_turn(100000));
}

BOOST_AUTO_TEST_CASE(arbitrary_bytes_round_trip) {
  auto t = make();
  std::mt19937 rng(1);
  auto put = [](std::string& s, std::uint32_t c) {  // UTF-8 of c
    if (c < 0x80) {
      s += static_cast<char>(c);
    } else if (c < 0x800) {
      s += static_cast<char>(0xC0 | (c >> 6));
      s += static_cast<char>(0x80 | (c & 0x3F));
    } else if (c < 0x10000) {
      s += static_cast<char>(0xE0 | (c >> 12));
      s += static_cast<char>(0x80 | ((c >> 6) & 0x3F));
      s += static_cast<char>(0x80 | (c & 0x3F));
    } else {
      s += static_cast<char>(0xF0 | (c >> 18));
      s += static_cast<char>(0x80 | ((c >> 12) & 0x3F));
      s += static_cast<char>(0x80 | ((c >> 6) & 0x3F));
      s += static_cast<char>(0x80 | (c & 0x3F));
    }
  };
  for (int k = 0; k < 300; ++k) {
    std::string s;
    for (int n = static_cast<int>(rng() % 30); n > 0; --n) {
      std::uint32_t range[] = {0x80, 0x800, 0x10000, 0x110000};
      std::uint32_t c = static_cast<std::uint32_t>(rng() % range[rng() % 4]);
      if (c >= 0xD800 && c < 0xE000) c = 'x';
      put(s, c);
    }
    BOOST_TEST(t.decode(t.encode(s, false)) == s);
    BOOST_TEST(t.decode(t.encode(s, true)) == s);
  }
  std::string mixed = "Grüße, 世界! Привет 👋 x² ٣ \t\n\r\n  code(){}; 3.14 <|im_end|>";
  BOOST_TEST(t.decode(t.encode(mixed)) == mixed);
  // Invalid UTF-8 becomes U+FFFD per bad byte, as in llama.cpp; never a crash.
  BOOST_TEST(t.decode(t.encode("a\xff\xe4\xb8"
                               "b")) ==
             "a\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD"
             "b");
  for (int k = 0; k < 300; ++k) {
    std::string s(rng() % 40, '\0');
    for (auto& c : s) c = static_cast<char>(rng());
    t.decode(t.encode(s, false));
  }
  BOOST_TEST(t.encode("").empty());
  BOOST_TEST(t.decode({}).empty());
}

BOOST_AUTO_TEST_CASE(bad_ids_throw_out_of_range) {
  auto t = make();
  for (std::int32_t id : {-1, 270, 1 << 30}) {
    try {
      t.decode({5, id});
      BOOST_FAIL("expected out_of_range");
    } catch (const kvflow::error& e) {
      BOOST_TEST(e.code() == errc::out_of_range);
      BOOST_TEST(std::string(e.what()).find(std::to_string(id)) != std::string::npos);
    }
    BOOST_CHECK_THROW(t.token_text(id), kvflow::error);
  }
  BOOST_TEST(t.token_text(1) == "<|im_start|>");
}

BOOST_AUTO_TEST_CASE(malformed_tokenizer_metadata) {
  std::string dir = kvflow::test::scratch_dir("tokbad");
  std::string path = dir + "/bad.gguf";
  auto expect_bad = [&](kvflow::test::gguf_writer& w, const std::string& needle) {
    w.save(path);
    try {
      tokenizer::from_gguf(gguf_file::open(path));
      BOOST_FAIL("expected an error for " << needle);
    } catch (const kvflow::error& e) {
      BOOST_TEST(std::string(e.what()).find(needle) != std::string::npos, e.what());
      BOOST_TEST(std::string(e.what()).find(path) != std::string::npos);
    }
  };
  {
    kvflow::test::gguf_writer w;
    w.kv_str("tokenizer.ggml.model", "llama");
    expect_bad(w, "tokenizer.ggml.model");
  }
  {
    kvflow::test::gguf_writer w;
    w.kv_str("tokenizer.ggml.model", "gpt2");
    w.kv_strs("tokenizer.ggml.tokens", {"a", "b"});
    w.kv_i32s("tokenizer.ggml.token_type", {1});
    w.kv_strs("tokenizer.ggml.merges", {});
    expect_bad(w, "token_type");
  }
  {
    kvflow::test::gguf_writer w;
    w.kv_str("tokenizer.ggml.model", "gpt2");
    w.kv_strs("tokenizer.ggml.tokens", {"a", "b"});
    w.kv_strs("tokenizer.ggml.merges", {"ab"});
    expect_bad(w, "merges");
  }
  {
    kvflow::test::gguf_writer w;
    w.kv_str("tokenizer.ggml.model", "gpt2");
    w.kv_strs("tokenizer.ggml.tokens", {"a", "b"});
    w.kv_strs("tokenizer.ggml.merges", {"a b"});
    w.kv_u32("tokenizer.ggml.eos_token_id", 9);
    expect_bad(w, "eos_token_id");
  }
  std::remove(path.c_str());
  std::remove(dir.c_str());
}

BOOST_AUTO_TEST_CASE(chat_templates) {
  const std::string smol =
      "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\n"
      "You are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}"
      "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
      "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";
  BOOST_TEST(default_system_prompt(smol) == "You are a helpful AI assistant named SmolLM, trained by Hugging Face");
  auto p = apply_chat_template(smol, {{"user", "Hi"}}, true);
  BOOST_TEST(p ==
             "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
             "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
  p = apply_chat_template(smol, {{"system", "S"}, {"user", "U"}, {"assistant", "A"}}, false);
  BOOST_TEST(p ==
             "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n<|im_start|>assistant\nA<|im_end|>\n");
  BOOST_TEST(apply_chat_template(smol, {}, false).empty());
  BOOST_CHECK_THROW(apply_chat_template(smol, {{"robot", "x"}}, true), kvflow::error);

  const std::string l3 = "{{ bos_token }}{% for m in messages %}<|start_header_id|>...";
  BOOST_TEST(static_cast<int>(detect_chat_style(l3)) == static_cast<int>(chat_style::llama3));
  BOOST_TEST(apply_chat_template(l3, {{"user", " Hi "}}, true) ==
             "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
             "<|start_header_id|>assistant<|end_header_id|>\n\n");
  const std::string l2 = "{% if messages[0]['role'] == 'system' %}... [INST] ... [/INST]";
  BOOST_TEST(apply_chat_template(l2, {{"system", "S"}, {"user", "U"}, {"assistant", "A"}, {"user", "V"}}, true) ==
             "<s>[INST] <<SYS>>\nS\n<</SYS>>\n\nU [/INST] A </s><s>[INST] V [/INST]");
  BOOST_CHECK_THROW(detect_chat_style("{{ nothing known }}"), kvflow::error);
  BOOST_TEST(apply_chat_template("", {{"user", "x"}}, true) ==
             "<|im_start|>user\nx<|im_end|>\n<|im_start|>assistant\n");
}
