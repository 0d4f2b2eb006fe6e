#pragma once
// Byte-level BPE tokenizer (GPT-2 family: SmolLM2, llama-3, ...) built from
// GGUF metadata, matching llama.cpp's tokenization of the same file.

#include <cstdint>
#include <map>
#include <string>
#include <unordered_map>
#include <vector>

namespace kvflow::model {

class gguf_file;

/// Immutable after construction; safe to share between threads.
class tokenizer {
 public:
  /// Reads tokenizer.ggml.{model,pre,tokens,token_type,merges,bos/eos ids}.
  /// Throws kvflow::error(bad_file) naming the file and key on malformed
  /// metadata, (unsupported) for tokenizer models other than "gpt2".
  static tokenizer from_gguf(const gguf_file& file);

  /// Token ids of `text` (no BOS added). With parse_special, control-token
  /// texts such as "<|im_start|>" in `text` become their ids; otherwise they
  /// are tokenized as plain text.
  std::vector<std::int32_t> encode(const std::string& text, bool parse_special = true) const;

  /// The bytes the ids stand for; special tokens render as their text.
  /// Throws kvflow::error(out_of_range) naming the first id outside the vocab.
  std::string decode(const std::vector<std::int32_t>& ids) const;

  /// The vocabulary entry as stored (byte-level form for normal tokens).
  /// Throws kvflow::error(out_of_range) naming the id.
  std::string token_text(std::int32_t id) const;

  std::int32_t bos() const { return bos_; }
  std::int32_t eos() const { return eos_; }
  int vocab_size() const { return static_cast<int>(tokens_.size()); }
  /// Whether prompts of this model start with bos() (tokenizer.ggml.add_bos_token;
  /// false when absent). encode() never adds it.
  bool add_bos() const { return add_bos_; }

  /// True for the eos id and for end-of-turn markers (<|im_end|>,
  /// <|eot_id|>, <|endoftext|>, ...).
  bool is_end_of_turn(std::int32_t id) const;
  /// True for control and user-defined tokens.
  bool is_special(std::int32_t id) const;
  /// The id of an exact vocabulary entry, or -1.
  std::int32_t find(const std::string& token) const;
  /// The pre-tokenizer name (tokenizer.ggml.pre), e.g. "smollm".
  const std::string& pre() const { return pre_; }

 private:
  enum class pre_kind { gpt2_digits, gpt2, llama3 };
  void bpe_word(const std::string& word, std::vector<std::int32_t>& out) const;
  void encode_plain(const std::string& text, std::vector<std::int32_t>& out) const;

  std::vector<std::string> tokens_;
  std::vector<std::int32_t> types_;
  std::unordered_map<std::string, std::int32_t> index_;
  std::unordered_map<std::string, int> merge_rank_;  // "left right" -> rank
  std::vector<std::int32_t> specials_;               // longest text first
  std::vector<bool> end_of_turn_;
  std::int32_t bos_ = -1;
  std::int32_t eos_ = -1;
  bool add_bos_ = false;
  std::string pre_;
  pre_kind kind_ = pre_kind::gpt2;
};

}  // namespace kvflow::model
