#pragma once
// Token embedding lookup.

#include <cstdint>

namespace kvflow::cpu {

/// out[i] = table[tokens[i]] for i < count: table [vocab][hidden], out
/// [count][hidden]. Throws kvflow::error(invalid_argument) naming the token
/// when one is outside [0, vocab).
void embedding(const float* table, int vocab, int hidden, const std::int32_t* tokens, int count, float* out);

}  // namespace kvflow::cpu
