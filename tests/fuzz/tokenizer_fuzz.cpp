// Fuzz target: the real model's tokenizer (SmolLM2-135M-Instruct, loaded
// once). Byte 0 picks the mode: decode of arbitrary token ids (raw int32s, or
// 16-bit values mapped mostly into the vocabulary), or encode of arbitrary
// bytes with or without special-token parsing.
// Properties: ids outside the vocabulary are refused with out_of_range and
// nothing else escapes; encode yields ids inside the vocabulary; for valid
// UTF-8, decode(encode(text)) == text less the bytes that have no byte-level
// token (SmolLM2's vocabulary lacks 04 06 13 14 16 1d f1 f2 ...; encode drops
// them as llama.cpp does), and decode -> encode -> decode is stable.

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "kernels/model/gguf.hpp"
#include "kernels/model/tokenizer.hpp"
#include "messages/error.hpp"
#include "tests/fuzz/fuzz_check.hpp"

using namespace kvflow::model;

namespace {

const tokenizer& tok() {
  static const tokenizer t = [] {
    const char* env = std::getenv("KVFLOW_MODEL");
    std::string path = env && *env ? env : KVFLOW_SOURCE_DIR "/models/SmolLM2-135M-Instruct.Q4_1.gguf";
    try {
      auto file = gguf_file::open(path);
      return tokenizer::from_gguf(file);
    } catch (const kvflow::error& e) {
      std::fprintf(stderr, "tokenizer fuzz: cannot load the model's tokenizer: %s\n", e.what());
      std::abort();
    }
  }();
  return t;
}

// Strict UTF-8: shortest forms, no surrogates, nothing above U+10FFFF.
bool valid_utf8(const std::string& s) {
  std::size_t i = 0;
  while (i < s.size()) {
    auto b = static_cast<unsigned char>(s[i]);
    std::size_t len = b < 0x80 ? 1 : (b >> 5) == 6 ? 2 : (b >> 4) == 14 ? 3 : (b >> 3) == 30 ? 4 : 0;
    if (len == 0 || i + len > s.size()) return false;
    std::uint32_t c = len == 1 ? b : len == 2 ? (b & 0x1F) : len == 3 ? (b & 0x0F) : (b & 0x07);
    for (std::size_t k = 1; k < len; ++k) {
      auto n = static_cast<unsigned char>(s[i + k]);
      if ((n & 0xC0) != 0x80) return false;
      c = (c << 6) | (n & 0x3F);
    }
    static const std::uint32_t min_of_len[] = {0, 0, 0x80, 0x800, 0x10000};
    if (c < min_of_len[len] || c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF)) return false;
    i += len;
  }
  return true;
}

// Bytes without a byte-level token in the vocabulary (GPT-2's byte to code
// point map: printable Latin-1 maps to itself, the rest to U+0100 onwards).
const std::vector<bool>& unmapped_bytes() {
  static const std::vector<bool> missing = [] {
    std::vector<bool> m(256, false);
    std::uint32_t next = 256;
    for (int b = 0; b < 256; ++b) {
      bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
      std::uint32_t cp = printable ? static_cast<std::uint32_t>(b) : next++;
      std::string text;
      if (cp < 0x80) {
        text += static_cast<char>(cp);
      } else {
        text += static_cast<char>(0xC0 | (cp >> 6));
        text += static_cast<char>(0x80 | (cp & 0x3F));
      }
      m[static_cast<std::size_t>(b)] = tok().find(text) < 0;
    }
    return m;
  }();
  return missing;
}

std::string without_unmapped(const std::string& s) {
  std::string out;
  for (unsigned char c : s)
    if (!unmapped_bytes()[c]) out += static_cast<char>(c);
  return out;
}

void check_ids(const std::vector<std::int32_t>& ids) {
  for (auto id : ids)
    KVFLOW_FUZZ_CHECK(id >= 0 && id < tok().vocab_size(), "encode produced an id outside the vocabulary");
}

void decode_ids(const std::vector<std::int32_t>& ids) {
  const auto& t = tok();
  bool in_vocab = true;
  for (auto id : ids) in_vocab = in_vocab && id >= 0 && id < t.vocab_size();
  std::string text;
  try {
    text = t.decode(ids);
  } catch (const kvflow::error& e) {
    KVFLOW_FUZZ_CHECK(!in_vocab, "decode refused ids inside the vocabulary");
    KVFLOW_FUZZ_CHECK(e.code() == kvflow::errc::out_of_range, "decode refused with another code than out_of_range");
    return;
  }
  KVFLOW_FUZZ_CHECK(in_vocab, "decode accepted an id outside the vocabulary");
  for (auto id : ids) {
    t.token_text(id);
    t.is_special(id);
    t.is_end_of_turn(id);
  }
  if (!valid_utf8(text)) return;
  auto again = t.encode(text, true);
  check_ids(again);
  KVFLOW_FUZZ_CHECK(t.decode(again) == without_unmapped(text), "decode -> encode -> decode changed the text");
}

void encode_text(const std::string& text, bool special) {
  const auto& t = tok();
  auto ids = t.encode(text, special);
  check_ids(ids);
  auto back = t.decode(ids);
  if (valid_utf8(text)) KVFLOW_FUZZ_CHECK(back == without_unmapped(text), "decode(encode(text)) != text");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 1) return 0;
  const std::uint8_t mode = data[0] % 4;
  ++data, --size;
  std::vector<std::int32_t> ids;
  switch (mode) {
    case 0:  // raw 32-bit ids: mostly out of range
      for (std::size_t i = 0; i + 4 <= size; i += 4) {
        std::int32_t id;
        std::memcpy(&id, data + i, 4);
        ids.push_back(id);
      }
      decode_ids(ids);
      break;
    case 1:  // 16-bit values over [-1, vocab]: mostly real tokens
      for (std::size_t i = 0; i + 2 <= size; i += 2) {
        std::int32_t v = data[i] | (data[i + 1] << 8);
        ids.push_back(v % (tok().vocab_size() + 2) - 1);
      }
      decode_ids(ids);
      break;
    default:
      encode_text(std::string(reinterpret_cast<const char*>(data), size), mode == 3);
      break;
  }
  return 0;
}
