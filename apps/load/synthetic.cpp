#include "apps/load/synthetic.hpp"

#include <array>

#include "messages/error.hpp"
#include "messages/mix.hpp"

namespace kvflow::load {
namespace {

// Short, common words: each is one token (with its leading space) for the
// GPT-2 style BPE vocabularies of small chat models.
constexpr std::array<const char*, 128> words = {
    "the",    "of",     "and",   "to",    "in",     "is",    "was",    "for",    "that",   "with",   "as",    "on",
    "by",     "at",     "from",  "his",   "her",    "an",    "it",     "were",   "are",    "which",  "this",  "be",
    "or",     "has",    "had",   "one",   "first",  "new",   "their",  "after",  "time",   "two",    "who",   "its",
    "but",    "year",   "also",  "been",  "city",   "have",  "other",  "when",   "into",   "all",    "more",  "during",
    "world",  "most",   "only",  "over",  "three",  "part",  "film",   "team",   "would",  "school", "known", "some",
    "state",  "where",  "made",  "many",  "there",  "water", "music",  "house",  "family", "early",  "later", "game",
    "war",    "about",  "place", "river", "name",   "south", "north",  "party",  "small",  "large",  "under", "great",
    "town",   "west",   "east",  "long",  "light",  "began", "until",  "group",  "public", "book",   "story", "line",
    "number", "second", "best",  "local", "field",  "high",  "life",   "work",   "power",  "old",    "order", "land",
    "area",   "form",   "found", "built", "church", "road",  "night",  "market", "point",  "round",  "word",  "table",
    "paper",  "bridge", "horse", "stone", "garden", "green", "summer", "winter"};

}  // namespace

std::uint64_t hash_key(std::string_view key) {
  std::uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char c : key) {
    h ^= c;
    h *= 0x100000001b3ull;
  }
  return h;
}

std::vector<std::int32_t> block_tokens(std::uint64_t key, int n, int vocab) {
  if (vocab < 2) throw error(errc::invalid_argument, "block_tokens: vocab " + std::to_string(vocab) + " < 2");
  if (n < 0) throw error(errc::invalid_argument, "block_tokens: negative length " + std::to_string(n));
  std::vector<std::int32_t> out(static_cast<std::size_t>(n));
  for (int i = 0; i < n; ++i)
    out[i] = 1 + static_cast<std::int32_t>(splitmix64(key ^ splitmix64(static_cast<std::uint64_t>(i))) %
                                           static_cast<std::uint64_t>(vocab - 1));
  return out;
}

std::string block_words(std::uint64_t key, int n) {
  if (n < 0) throw error(errc::invalid_argument, "block_words: negative length " + std::to_string(n));
  std::string out;
  out.reserve(static_cast<std::size_t>(n) * 6);
  for (int i = 0; i < n; ++i) {
    if (i) out += ' ';
    out += words[splitmix64(key ^ splitmix64(static_cast<std::uint64_t>(i) + 0x51ull)) % words.size()];
  }
  return out;
}

}  // namespace kvflow::load
