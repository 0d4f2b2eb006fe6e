#pragma once
// Deterministic prompt content for load tests: blocks of token ids (for
// random-weight presets, which have no tokenizer) or of English words (for
// text models), each a pure function of a key, so two prompts that name the
// same keys in the same order share a prefix and so share cached KV.

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace kvflow::load {

/// 64-bit FNV-1a of a string: turns a script's or trace's key into a seed.
std::uint64_t hash_key(std::string_view key);

/// `n` token ids in [1, vocab), the same for the same (key, vocab, n); a
/// shorter `n` gives a prefix of a longer one. Throws invalid_argument when
/// vocab < 2 or n < 0.
std::vector<std::int32_t> block_tokens(std::uint64_t key, int n, int vocab);

/// `n` space-separated common English words, the same for the same key; a
/// shorter `n` gives a prefix of a longer one. Each word is about one token
/// for a BPE tokenizer such as SmolLM2's, so `n` approximates the token count.
std::string block_words(std::uint64_t key, int n);

}  // namespace kvflow::load
