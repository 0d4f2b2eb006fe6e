#pragma once
// The shape of a llama-architecture model and the named presets.

#include <cstdint>
#include <string>
#include <vector>

namespace kvflow::model {

/// llama-3 style RoPE frequency scaling ("rope_scaling" in HF config.json).
struct rope_scaling {
  bool enabled = false;
  float factor = 8.0f;
  float low_freq_factor = 1.0f;
  float high_freq_factor = 4.0f;
  int original_max_positions = 8192;
};

struct config {
  std::string name;
  int vocab_size = 0;
  int hidden = 0;        ///< model width
  int intermediate = 0;  ///< SwiGLU inner width
  int layers = 0;
  int heads = 0;     ///< query heads
  int kv_heads = 0;  ///< key/value heads (GQA when < heads)
  int head_dim = 0;  ///< hidden / heads
  float rms_eps = 1e-5f;
  float rope_theta = 10000.0f;
  rope_scaling scaling;
  int max_positions = 4096;
  bool tie_embeddings = false;  ///< output projection shares the embedding

  /// Elements of one token's K (or V) for one layer: kv_heads * head_dim.
  std::int64_t kv_width() const { return static_cast<std::int64_t>(kv_heads) * head_dim; }
};

/// The presets: tiny-test, smollm2-135m, llama-2-7b, llama-3-8b,
/// llama-2-13b, llama-3-70b. Throws kvflow::error(not_found) naming the
/// known presets for anything else.
config preset(const std::string& name);
std::vector<std::string> preset_names();

/// Throws kvflow::error(bad_file or invalid_argument) naming the field when
/// a shape is impossible (zero sizes, heads not dividing, kv_heads not
/// dividing heads, ...). `where` names the source (file, preset) in errors.
void validate(const config& c, const std::string& where);

}  // namespace kvflow::model
