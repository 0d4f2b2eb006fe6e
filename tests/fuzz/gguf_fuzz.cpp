// Fuzz target: the GGUF loader on arbitrary file bytes, and what is built
// from a GGUF's metadata: the typed accessors, dequantization of every tensor,
// the llama config and weights, and the tokenizer (which then encodes and
// decodes a little text).
// Properties: only kvflow::error escapes; every tensor's data lies inside the
// file; a tokenizer built from the file decodes what it encodes.

#include <cstddef>
#include <cstdint>
#include <string>

#include "kernels/model/gguf.hpp"
#include "kernels/model/model_file.hpp"
#include "kernels/model/tokenizer.hpp"
#include "messages/error.hpp"
#include "tests/fuzz/fuzz_check.hpp"
#include "tests/fuzz/memory_file.hpp"

using namespace kvflow::model;

namespace {

template <class F>
void tolerate(F&& f) {
  try {
    f();
  } catch (const kvflow::error&) {
  }
}

void exercise(const gguf_file& g) {
  for (const auto& kv : g.metadata()) {
    const auto& key = kv.first;
    tolerate([&] { g.get_string(key); });
    tolerate([&] { g.get_int(key); });
    tolerate([&] { g.get_float(key); });
    tolerate([&] { g.get_bool(key, false); });
    tolerate([&] { g.get_strings(key); });
    tolerate([&] { g.get_ints(key); });
  }
  for (const auto& t : g.tensors()) {
    KVFLOW_FUZZ_CHECK(g.find_tensor(t.name) != nullptr, "tensor not found by its name");
    KVFLOW_FUZZ_CHECK(g.data_offset() <= g.file_size() && t.offset <= g.file_size() - g.data_offset() &&
                          t.bytes <= g.file_size() - g.data_offset() - t.offset,
                      "tensor data outside the file");
    // Bound the work per input; the file bounds t.bytes anyway.
    if (t.elements() <= (1 << 20))
      tolerate([&] {
        auto v = g.dequantize(t);
        KVFLOW_FUZZ_CHECK(static_cast<std::int64_t>(v.size()) == t.elements(), "dequantized element count");
      });
  }
  tolerate([&] { gguf_weights(g, "fuzz"); });
  tolerate([&] {
    auto tok = tokenizer::from_gguf(g);
    const std::string text = "Hello, world! 12345 <|im_start|>user\n\xc3\xa9t\xc3\xa9 \xe2\x82\xac";
    for (bool special : {false, true}) {
      auto ids = tok.encode(text, special);
      for (auto id : ids)
        KVFLOW_FUZZ_CHECK(id >= 0 && id < tok.vocab_size(), "encode produced an id outside the vocabulary");
      tok.decode(ids);
    }
    for (std::int32_t id : {-1, 0, tok.vocab_size() - 1, tok.vocab_size()}) {
      tok.is_special(id);
      tok.is_end_of_turn(id);
      tolerate([&] { tok.token_text(id); });
    }
  });
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  kvflow::fuzz::memory_file file(data, size);
  gguf_limits lim;  // small, so a hostile count fails fast instead of allocating
  lim.max_kv = 1024;
  lim.max_tensors = 1024;
  lim.max_string = 1u << 16;
  lim.max_array = 1u << 16;
  tolerate([&] { exercise(gguf_file::open(file.path(), lim)); });
  return 0;
}
