#include "kernels/cpu/embedding.hpp"

#include <cstring>
#include <string>

#include "messages/error.hpp"

namespace kvflow::cpu {

void embedding(const float* table, int vocab, int hidden, const std::int32_t* tokens, int count, float* out) {
  for (int i = 0; i < count; ++i) {
    std::int32_t t = tokens[i];
    if (t < 0 || t >= vocab) {
      throw error(errc::invalid_argument, "embedding: token " + std::to_string(t) + " at index " + std::to_string(i) +
                                              " is outside the vocabulary [0, " + std::to_string(vocab) + ")");
    }
    std::memcpy(out + static_cast<std::size_t>(i) * hidden, table + static_cast<std::size_t>(t) * hidden,
                sizeof(float) * static_cast<std::size_t>(hidden));
  }
}

}  // namespace kvflow::cpu
