#pragma once
// Loading a model file into fp32 host weights (+ tokenizer and chat
// template where the file has them): GGUF, a .safetensors file with
// config.json beside it, or a Hugging Face folder.

#include <memory>
#include <string>
#include <vector>

#include "kernels/model/config.hpp"
#include "kernels/model/tokenizer.hpp"
#include "kernels/model/weights.hpp"

namespace kvflow::model {

class gguf_file;

struct loaded_model {
  weights w;
  std::shared_ptr<const tokenizer> tok;  ///< null for safetensors without a tokenizer
  std::string chat_template;             ///< Jinja text from the file, or ""
};

/// Dispatches on the GGUF magic, a .safetensors file or a folder with
/// config.json. Throws kvflow::error(bad_file / io_failure / unsupported)
/// naming the path and what is wrong.
loaded_model load_model_file(const std::string& path);

/// The llama config from GGUF metadata (validated). `name` becomes cfg.name.
config gguf_config(const gguf_file& file, const std::string& name);

/// fp32 weights in HF order from a llama GGUF (Q/K rows un-permuted),
/// shapes checked and fingerprint set.
weights gguf_weights(const gguf_file& file, const std::string& name);

/// Weights from a .safetensors file (config.json in the same folder) or a
/// folder holding config.json and *.safetensors.
weights safetensors_weights(const std::string& path);

/// llama.cpp's Q/K row permutation (convert_hf_to_gguf.py `permute`): rows
/// of each head go from HF rotate-half order [first half, second half] to
/// interleaved pairs. `w` is [n_head * head_dim][cols], head_dim even.
std::vector<float> rope_permute_rows(const std::vector<float>& w, int n_head, int cols);
/// The inverse of rope_permute_rows: GGUF order back to HF order.
std::vector<float> rope_unpermute_rows(const std::vector<float>& w, int n_head, int cols);

/// $KVFLOW_MODEL if set, else models/SmolLM2-135M-Instruct.Q4_1.gguf found
/// under the current folder or next to the executable (../../models); the
/// relative path when none exists.
std::string default_model_path();

}  // namespace kvflow::model
