// Prompts stitched from documents for the runtime's document-path tests (CPU
// and CUDA): random tokens, a system text, documents in a chosen order, a
// question, and one submit with or without the document spans.
#pragma once

#include <cstdint>
#include <random>
#include <vector>

#include "actors/runtime.hpp"

namespace kvflow::test {

inline std::vector<std::int32_t> random_tokens(int n, unsigned seed, int vocab) {
  std::mt19937 gen(seed);
  std::uniform_int_distribution<int> d(0, vocab - 1);
  std::vector<std::int32_t> t(static_cast<std::size_t>(n));
  for (auto& x : t) x = d(gen);
  return t;
}

struct prompt {
  std::vector<std::int32_t> tokens;
  std::vector<document_span> documents;
};

// 9 tokens of system text, docs[order[0]], docs[order[1]], ..., 7 question tokens.
inline prompt stitch(const std::vector<std::vector<std::int32_t>>& docs, const std::vector<int>& order,
                     unsigned question, int vocab) {
  prompt p;
  p.tokens = random_tokens(9, 1, vocab);
  for (int d : order) {
    p.documents.push_back({static_cast<std::uint32_t>(p.tokens.size()), static_cast<std::uint32_t>(docs[d].size())});
    p.tokens.insert(p.tokens.end(), docs[d].begin(), docs[d].end());
  }
  auto q = random_tokens(7, question, vocab);
  p.tokens.insert(p.tokens.end(), q.begin(), q.end());
  return p;
}

// Four tokens with the KV digest; the document spans only when `documents`.
inline restore_report run(runtime& rt, const prompt& p, bool documents, double ratio, bool store = true) {
  submit_options so;
  so.max_new_tokens = 4;
  so.digest_kv = true;
  so.store = store;
  if (documents) so.documents = p.documents;
  so.recompute_ratio = ratio;
  return rt.submit(p.tokens, so).get();
}

}  // namespace kvflow::test
