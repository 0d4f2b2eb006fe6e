#include "kernels/model/config.hpp"

#include "messages/error.hpp"

namespace kvflow::model {
namespace {

config make(const char* name, int vocab, int hidden, int inter, int layers, int heads, int kv_heads, float theta,
            int max_pos, bool tie) {
  config c;
  c.name = name;
  c.vocab_size = vocab;
  c.hidden = hidden;
  c.intermediate = inter;
  c.layers = layers;
  c.heads = heads;
  c.kv_heads = kv_heads;
  c.head_dim = hidden / heads;
  c.rope_theta = theta;
  c.max_positions = max_pos;
  c.tie_embeddings = tie;
  return c;
}

// llama-3.1's long-context RoPE scaling, so the llama-3 presets reach 128k.
config with_llama3_scaling(config c) {
  c.scaling = {true, 8.0f, 1.0f, 4.0f, 8192};
  return c;
}

}  // namespace

std::vector<std::string> preset_names() {
  return {"tiny-test", "smollm2-135m", "llama-2-7b", "llama-3-8b", "llama-2-13b", "llama-3-70b"};
}

config preset(const std::string& name) {
  if (name == "tiny-test") return make("tiny-test", 512, 64, 128, 4, 4, 2, 10000.0f, 8192, false);
  if (name == "smollm2-135m") return make("smollm2-135m", 49152, 576, 1536, 30, 9, 3, 100000.0f, 8192, true);
  if (name == "llama-2-7b") return make("llama-2-7b", 32000, 4096, 11008, 32, 32, 32, 10000.0f, 4096, false);
  if (name == "llama-3-8b")
    return with_llama3_scaling(make("llama-3-8b", 128256, 4096, 14336, 32, 32, 8, 500000.0f, 131072, false));
  if (name == "llama-2-13b") return make("llama-2-13b", 32000, 5120, 13824, 40, 40, 40, 10000.0f, 4096, false);
  if (name == "llama-3-70b")
    return with_llama3_scaling(make("llama-3-70b", 128256, 8192, 28672, 80, 64, 8, 500000.0f, 131072, false));
  std::string known;
  for (auto& n : preset_names()) known += (known.empty() ? "" : ", ") + n;
  throw error(errc::not_found, "model preset '" + name + "' (known: " + known + ")");
}

void validate(const config& c, const std::string& where) {
  auto bad = [&](const std::string& field, long long value) {
    throw error(errc::bad_file, where + ": " + field + " = " + std::to_string(value) + " is not a valid model shape");
  };
  // Reals are printed as they are: casting an out-of-range float to an
  // integer is undefined (found by the safetensors fuzz target).
  auto bad_real = [&](const std::string& field, double value) {
    throw error(errc::bad_file, where + ": " + field + " = " + std::to_string(value) + " is not a valid model shape");
  };
  if (c.vocab_size <= 0 || c.vocab_size > (1 << 22)) bad("vocab_size", c.vocab_size);
  if (c.hidden <= 0 || c.hidden > (1 << 16)) bad("hidden", c.hidden);
  if (c.intermediate <= 0 || c.intermediate > (1 << 18)) bad("intermediate", c.intermediate);
  if (c.layers <= 0 || c.layers > 1024) bad("layers", c.layers);
  if (c.heads <= 0 || c.hidden % c.heads != 0) bad("heads", c.heads);
  if (c.kv_heads <= 0 || c.heads % c.kv_heads != 0) bad("kv_heads", c.kv_heads);
  if (c.head_dim != c.hidden / c.heads || c.head_dim % 2 != 0) bad("head_dim", c.head_dim);
  if (c.max_positions <= 0) bad("max_positions", c.max_positions);
  if (!(c.rms_eps > 0 && c.rms_eps < 1)) bad_real("rms_eps", c.rms_eps);
  if (!(c.rope_theta > 1)) bad_real("rope_theta", c.rope_theta);
}

}  // namespace kvflow::model
