#include "kernels/model/model_file.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include <dirent.h>
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>

#include "kernels/model/gguf.hpp"
#include "kernels/model/safetensors.hpp"
#include "messages/error.hpp"

namespace kvflow::model {
namespace {

bool is_dir(const std::string& p) {
  struct stat st {};
  return ::stat(p.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

bool is_file(const std::string& p) {
  struct stat st {};
  return ::stat(p.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

std::string dir_of(const std::string& p) {
  auto k = p.find_last_of('/');
  return k == std::string::npos ? "." : (k == 0 ? "/" : p.substr(0, k));
}

std::string stem_of(const std::string& p) {
  std::string base = p;
  while (base.size() > 1 && base.back() == '/') base.pop_back();
  auto k = base.find_last_of('/');
  if (k != std::string::npos) base = base.substr(k + 1);
  for (const char* ext : {".gguf", ".safetensors"}) {
    std::size_t n = std::strlen(ext);
    if (base.size() > n && base.compare(base.size() - n, n, ext) == 0) base.resize(base.size() - n);
  }
  return base;
}

int to_int(std::int64_t v, const std::string& where, const std::string& key) {
  if (v <= 0 || v > (1 << 30))
    throw error(errc::bad_file, where + ": " + key + ": value " + std::to_string(v) + " out of range");
  return static_cast<int>(v);
}

// GGUF tensors are row-major with dims[0] the innermost axis: an HF matrix
// [rows][cols] is stored with dims {cols, rows}.
std::vector<float> take(const gguf_file& f, const std::string& name, std::int64_t rows, std::int64_t cols) {
  auto* t = f.find_tensor(name);
  if (!t) throw error(errc::bad_file, f.path() + ": tensor '" + name + "': missing");
  bool ok = rows == 0 ? (t->dims.size() == 1 && t->dims[0] == cols)
                      : (t->dims.size() == 2 && t->dims[0] == cols && t->dims[1] == rows);
  if (!ok) {
    std::string got;
    for (auto d : t->dims) got += (got.empty() ? "" : ", ") + std::to_string(d);
    throw error(errc::bad_file, f.path() + ": tensor '" + name + "': dims {" + got + "}, expected {" +
                                    std::to_string(cols) + (rows ? ", " + std::to_string(rows) : std::string()) + "}");
  }
  return f.dequantize(*t);
}

}  // namespace

namespace {

// HF row h*hd + j*half + i is GGUF row h*hd + 2*i + j
// (reshape(n_head, 2, half, cols).swapaxes(1, 2)); `to_gguf` moves rows from
// the first order to the second, else back.
std::vector<float> move_rope_rows(const std::vector<float>& w, int n_head, int cols, bool to_gguf, const char* what) {
  if (n_head <= 0 || cols <= 0 || w.size() % (static_cast<std::size_t>(n_head) * cols) != 0)
    throw error(errc::invalid_argument,
                std::string(what) + ": size " + std::to_string(w.size()) + " not heads x rows x cols");
  std::size_t hd = w.size() / cols / n_head;
  if (hd % 2 != 0) throw error(errc::invalid_argument, std::string(what) + ": odd head_dim " + std::to_string(hd));
  std::size_t half = hd / 2;
  std::vector<float> out(w.size());
  for (std::size_t h = 0; h < static_cast<std::size_t>(n_head); ++h)
    for (std::size_t j = 0; j < 2; ++j)
      for (std::size_t i = 0; i < half; ++i) {
        const std::size_t hf = (h * hd + j * half + i) * cols, gguf = (h * hd + 2 * i + j) * cols;
        std::memcpy(&out[to_gguf ? gguf : hf], &w[to_gguf ? hf : gguf], sizeof(float) * cols);
      }
  return out;
}

}  // namespace

std::vector<float> rope_permute_rows(const std::vector<float>& w, int n_head, int cols) {
  return move_rope_rows(w, n_head, cols, true, "rope_permute_rows");
}

std::vector<float> rope_unpermute_rows(const std::vector<float>& w, int n_head, int cols) {
  return move_rope_rows(w, n_head, cols, false, "rope_unpermute_rows");
}

config gguf_config(const gguf_file& f, const std::string& name) {
  const std::string& p = f.path();
  auto arch = f.get_string("general.architecture");
  if (arch != "llama") throw error(errc::unsupported, p + ": general.architecture: '" + arch + "' (only llama)");
  config c;
  c.name = name;
  c.layers = to_int(f.get_int("llama.block_count"), p, "llama.block_count");
  c.hidden = to_int(f.get_int("llama.embedding_length"), p, "llama.embedding_length");
  c.intermediate = to_int(f.get_int("llama.feed_forward_length"), p, "llama.feed_forward_length");
  c.heads = to_int(f.get_int("llama.attention.head_count"), p, "llama.attention.head_count");
  c.kv_heads = to_int(f.get_int("llama.attention.head_count_kv", c.heads), p, "llama.attention.head_count_kv");
  c.head_dim = c.hidden / c.heads;
  if (f.find("llama.attention.key_length")) {
    auto kl = f.get_int("llama.attention.key_length");
    if (kl != c.head_dim)
      throw error(errc::unsupported, p + ": llama.attention.key_length: " + std::to_string(kl) +
                                         " differs from embedding_length / head_count = " + std::to_string(c.head_dim));
  }
  if (f.find("llama.rope.dimension_count")) {
    auto rd = f.get_int("llama.rope.dimension_count");
    if (rd != c.head_dim)
      throw error(errc::unsupported, p + ": llama.rope.dimension_count: partial RoPE (" + std::to_string(rd) + " of " +
                                         std::to_string(c.head_dim) + ") is not supported");
  }
  c.rms_eps = static_cast<float>(f.get_float("llama.attention.layer_norm_rms_epsilon", 1e-5));
  c.rope_theta = static_cast<float>(f.get_float("llama.rope.freq_base", 10000.0));
  if (!(c.rms_eps > 0) || !std::isfinite(c.rms_eps))
    throw error(errc::bad_file, p + ": llama.attention.layer_norm_rms_epsilon: not a positive number");
  if (!(c.rope_theta > 0) || !std::isfinite(c.rope_theta))
    throw error(errc::bad_file, p + ": llama.rope.freq_base: not a positive number");
  c.max_positions = to_int(f.get_int("llama.context_length", 4096), p, "llama.context_length");

  auto* embd = f.find_tensor("token_embd.weight");
  if (!embd || embd->dims.size() != 2)
    throw error(errc::bad_file, p + ": tensor 'token_embd.weight': missing or not 2-d");
  if (f.find("tokenizer.ggml.tokens"))
    c.vocab_size =
        to_int(static_cast<std::int64_t>(f.get_strings("tokenizer.ggml.tokens").size()), p, "tokenizer.ggml.tokens");
  else
    c.vocab_size = to_int(f.get_int("llama.vocab_size", embd->dims[1]), p, "llama.vocab_size");
  if (embd->dims[1] != c.vocab_size)
    throw error(errc::bad_file, p + ": tensor 'token_embd.weight': " + std::to_string(embd->dims[1]) +
                                    " rows, vocabulary has " + std::to_string(c.vocab_size));
  c.tie_embeddings = f.find_tensor("output.weight") == nullptr;

  auto stype = f.get_string("llama.rope.scaling.type", "none");
  bool has_freqs = f.find_tensor("rope_freqs.weight") != nullptr;
  if (stype == "llama3" || has_freqs) {
    // llama-3.1 scaling: convert_hf_to_gguf stores the derived frequencies as
    // rope_freqs.weight; the parameters are llama-3.1's unless given.
    c.scaling.enabled = true;
    c.scaling.factor = static_cast<float>(f.get_float("llama.rope.scaling.factor", 8.0));
    c.scaling.low_freq_factor = static_cast<float>(f.get_float("llama.rope.scaling.low_freq_factor", 1.0));
    c.scaling.high_freq_factor = static_cast<float>(f.get_float("llama.rope.scaling.high_freq_factor", 4.0));
    c.scaling.original_max_positions = to_int(f.get_int("llama.rope.scaling.original_context_length", 8192), p,
                                              "llama.rope.scaling.original_context_length");
  } else if (stype != "none" && f.get_float("llama.rope.scaling.factor", 1.0) != 1.0) {
    throw error(errc::unsupported, p + ": llama.rope.scaling.type: '" + stype + "' scaling is not supported");
  }
  validate(c, p);
  return c;
}

weights gguf_weights(const gguf_file& f, const std::string& name) {
  weights w;
  w.cfg = gguf_config(f, name);
  const config& c = w.cfg;
  const std::int64_t q_rows = static_cast<std::int64_t>(c.heads) * c.head_dim;
  const std::int64_t kv_rows = c.kv_width();
  w.embedding = take(f, "token_embd.weight", c.vocab_size, c.hidden);
  w.final_norm = take(f, "output_norm.weight", 0, c.hidden);
  if (!c.tie_embeddings) w.output = take(f, "output.weight", c.vocab_size, c.hidden);
  w.layers.resize(static_cast<std::size_t>(c.layers));
  for (int l = 0; l < c.layers; ++l) {
    auto& lw = w.layers[static_cast<std::size_t>(l)];
    std::string b = "blk." + std::to_string(l) + ".";
    lw.attn_norm = take(f, b + "attn_norm.weight", 0, c.hidden);
    lw.wq = rope_unpermute_rows(take(f, b + "attn_q.weight", q_rows, c.hidden), c.heads, c.hidden);
    lw.wk = rope_unpermute_rows(take(f, b + "attn_k.weight", kv_rows, c.hidden), c.kv_heads, c.hidden);
    lw.wv = take(f, b + "attn_v.weight", kv_rows, c.hidden);
    lw.wo = take(f, b + "attn_output.weight", c.hidden, q_rows);
    lw.ffn_norm = take(f, b + "ffn_norm.weight", 0, c.hidden);
    lw.w_gate = take(f, b + "ffn_gate.weight", c.intermediate, c.hidden);
    lw.w_up = take(f, b + "ffn_up.weight", c.intermediate, c.hidden);
    lw.w_down = take(f, b + "ffn_down.weight", c.hidden, c.intermediate);
  }
  check_shapes(w, f.path());
  compute_fingerprint(w);
  return w;
}

namespace {

config config_from_json(const std::string& json_path, const std::string& name) {
  std::ifstream in(json_path, std::ios::binary);
  if (!in) throw error(errc::io_failure, json_path + ": cannot open");
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (text.size() > (16u << 20)) throw error(errc::bad_file, json_path + ": over 16 MiB");
  auto j = nlohmann::json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_object()) throw error(errc::bad_file, json_path + ": not a JSON object");
  auto get_int = [&](const char* key, std::int64_t fallback, bool required) -> std::int64_t {
    auto it = j.find(key);
    if (it == j.end() || it->is_null()) {
      if (required) throw error(errc::bad_file, json_path + ": " + key + ": missing");
      return fallback;
    }
    if (!it->is_number_integer()) throw error(errc::bad_file, json_path + ": " + key + ": not an integer");
    return it->get<std::int64_t>();
  };
  auto get_num = [&](const nlohmann::json& o, const char* key, double fallback) -> double {
    auto it = o.find(key);
    if (it == o.end() || it->is_null()) return fallback;
    if (!it->is_number()) throw error(errc::bad_file, json_path + ": " + key + ": not a number");
    return it->get<double>();
  };
  if (auto mt = j.find("model_type"); mt != j.end() && mt->is_string() && mt->get<std::string>() != "llama")
    throw error(errc::unsupported, json_path + ": model_type: '" + mt->get<std::string>() + "' (only llama)");
  config c;
  c.name = name;
  c.vocab_size = to_int(get_int("vocab_size", 0, true), json_path, "vocab_size");
  c.hidden = to_int(get_int("hidden_size", 0, true), json_path, "hidden_size");
  c.intermediate = to_int(get_int("intermediate_size", 0, true), json_path, "intermediate_size");
  c.layers = to_int(get_int("num_hidden_layers", 0, true), json_path, "num_hidden_layers");
  c.heads = to_int(get_int("num_attention_heads", 0, true), json_path, "num_attention_heads");
  c.kv_heads = to_int(get_int("num_key_value_heads", c.heads, false), json_path, "num_key_value_heads");
  c.head_dim = c.hidden / c.heads;
  auto hd = get_int("head_dim", c.head_dim, false);
  if (hd != c.head_dim)
    throw error(errc::unsupported,
                json_path + ": head_dim: " + std::to_string(hd) + " differs from hidden_size / heads");
  c.rms_eps = static_cast<float>(get_num(j, "rms_norm_eps", 1e-6));
  c.rope_theta = static_cast<float>(get_num(j, "rope_theta", 10000.0));
  c.max_positions = to_int(get_int("max_position_embeddings", 4096, false), json_path, "max_position_embeddings");
  auto tie = j.find("tie_word_embeddings");
  c.tie_embeddings = tie != j.end() && tie->is_boolean() && tie->get<bool>();
  auto rs = j.find("rope_scaling");
  if (rs != j.end() && !rs->is_null()) {
    if (!rs->is_object()) throw error(errc::bad_file, json_path + ": rope_scaling: not an object");
    std::string type;
    for (const char* k : {"rope_type", "type"})
      if (rs->contains(k) && (*rs)[k].is_string()) type = (*rs)[k].get<std::string>();
    if (type == "llama3") {
      c.scaling.enabled = true;
      c.scaling.factor = static_cast<float>(get_num(*rs, "factor", 8.0));
      c.scaling.low_freq_factor = static_cast<float>(get_num(*rs, "low_freq_factor", 1.0));
      c.scaling.high_freq_factor = static_cast<float>(get_num(*rs, "high_freq_factor", 4.0));
      // Range-checked before the cast: a double outside int's range is
      // undefined behaviour (found by the safetensors fuzz target).
      const double original = get_num(*rs, "original_max_position_embeddings", 8192.0);
      if (!(original >= 1 && original <= (1 << 30)))
        throw error(errc::bad_file, json_path + ": rope_scaling.original_max_position_embeddings: " +
                                        std::to_string(original) + " out of range");
      c.scaling.original_max_positions = static_cast<int>(original);
    } else if (type != "default" && !type.empty()) {
      throw error(errc::unsupported, json_path + ": rope_scaling: type '" + type + "' is not supported");
    }
  }
  validate(c, json_path);
  return c;
}

}  // namespace

weights safetensors_weights(const std::string& path) {
  std::vector<std::string> files;
  std::string dir;
  if (is_dir(path)) {
    dir = path;
    DIR* d = ::opendir(path.c_str());
    if (!d) throw error(errc::io_failure, path + ": cannot list folder");
    while (auto* e = ::readdir(d)) {
      std::string n = e->d_name;
      if (n.size() > 12 && n.compare(n.size() - 12, 12, ".safetensors") == 0) {
        std::string full = path;
        files.push_back(full.append("/").append(n));
      }
    }
    ::closedir(d);
    std::sort(files.begin(), files.end());
    if (files.empty()) throw error(errc::bad_file, path + ": no .safetensors files in folder");
  } else {
    dir = dir_of(path);
    files.push_back(path);
  }
  std::string cfg_path = dir + "/config.json";
  if (!is_file(cfg_path)) throw error(errc::bad_file, path + ": config.json: missing beside the weights");
  weights w;
  w.cfg = config_from_json(cfg_path, stem_of(path));
  const config& c = w.cfg;

  std::vector<safetensors_file> shards;
  shards.reserve(files.size());
  for (auto& fp : files) shards.push_back(safetensors_file::open(fp));
  auto take_st = [&](const std::string& name, std::int64_t rows, std::int64_t cols, bool required) {
    for (auto& s : shards) {
      if (auto* t = s.find(name)) {
        bool ok = rows == 0 ? (t->shape.size() == 1 && t->shape[0] == cols)
                            : (t->shape.size() == 2 && t->shape[0] == rows && t->shape[1] == cols);
        if (!ok)
          throw error(errc::bad_file, s.path() + ": tensor '" + name + "': shape does not match config (expected [" +
                                          (rows ? std::to_string(rows) + ", " : std::string()) + std::to_string(cols) +
                                          "])");
        return s.to_fp32(*t);
      }
    }
    if (required) throw error(errc::bad_file, path + ": tensor '" + name + "': missing");
    return std::vector<float>();
  };
  const std::int64_t q_rows = static_cast<std::int64_t>(c.heads) * c.head_dim;
  const std::int64_t kv_rows = c.kv_width();
  w.embedding = take_st("model.embed_tokens.weight", c.vocab_size, c.hidden, true);
  w.final_norm = take_st("model.norm.weight", 0, c.hidden, true);
  if (!c.tie_embeddings) {
    w.output = take_st("lm_head.weight", c.vocab_size, c.hidden, false);
    // Some exports tie weights without saying so: no lm_head means tied.
    if (w.output.empty()) w.cfg.tie_embeddings = true;
  }
  w.layers.resize(static_cast<std::size_t>(c.layers));
  for (int l = 0; l < c.layers; ++l) {
    auto& lw = w.layers[static_cast<std::size_t>(l)];
    std::string b = "model.layers." + std::to_string(l) + ".";
    lw.attn_norm = take_st(b + "input_layernorm.weight", 0, c.hidden, true);
    lw.wq = take_st(b + "self_attn.q_proj.weight", q_rows, c.hidden, true);
    lw.wk = take_st(b + "self_attn.k_proj.weight", kv_rows, c.hidden, true);
    lw.wv = take_st(b + "self_attn.v_proj.weight", kv_rows, c.hidden, true);
    lw.wo = take_st(b + "self_attn.o_proj.weight", c.hidden, q_rows, true);
    lw.ffn_norm = take_st(b + "post_attention_layernorm.weight", 0, c.hidden, true);
    lw.w_gate = take_st(b + "mlp.gate_proj.weight", c.intermediate, c.hidden, true);
    lw.w_up = take_st(b + "mlp.up_proj.weight", c.intermediate, c.hidden, true);
    lw.w_down = take_st(b + "mlp.down_proj.weight", c.hidden, c.intermediate, true);
  }
  check_shapes(w, path);
  compute_fingerprint(w);
  return w;
}

loaded_model load_model_file(const std::string& path) {
  loaded_model m;
  if (is_dir(path)) {
    m.w = safetensors_weights(path);
    return m;
  }
  if (!is_file(path)) throw error(errc::io_failure, path + ": no such file or folder");
  char magic[4] = {0, 0, 0, 0};
  {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw error(errc::io_failure, path + ": cannot open");
    in.read(magic, 4);
  }
  if (std::memcmp(magic, "GGUF", 4) == 0) {
    auto f = gguf_file::open(path);
    m.w = gguf_weights(f, stem_of(path));
    if (f.find("tokenizer.ggml.model")) m.tok = std::make_shared<const tokenizer>(tokenizer::from_gguf(f));
    m.chat_template = f.get_string("tokenizer.chat_template", "");
    return m;
  }
  if (path.size() > 12 && path.compare(path.size() - 12, 12, ".safetensors") == 0) {
    m.w = safetensors_weights(path);
    return m;
  }
  throw error(errc::bad_file, path + ": magic: neither GGUF nor .safetensors nor a folder with config.json");
}

std::string default_model_path() {
  if (const char* env = std::getenv("KVFLOW_MODEL"); env && *env) return env;
  std::string rel = "models/SmolLM2-135M-Instruct.Q4_1.gguf";
  // The current folder and its parents (build folders sit inside the
  // checkout), then the executable's folder and its parents.
  std::vector<std::string> bases;
  char buf[4096];
  if (::getcwd(buf, sizeof buf)) bases.emplace_back(buf);
  ssize_t n = ::readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n > 0) {
    buf[n] = 0;
    bases.push_back(dir_of(buf));
  }
  for (auto base : bases) {
    for (int up = 0; up < 5 && !base.empty(); ++up) {
      std::string cand = base;
      cand.append("/").append(rel);
      if (is_file(cand)) return cand;
      if (base == "/") break;
      base = dir_of(base);
    }
  }
  return rel;
}

}  // namespace kvflow::model
