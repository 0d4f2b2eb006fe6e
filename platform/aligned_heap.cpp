#include "platform/aligned_heap.hpp"

#include <cstdint>
#include <cstdlib>
#include <limits>

namespace kvflow::platform {

void* aligned_heap_alloc(std::size_t bytes, std::size_t alignment) noexcept {
  if (alignment < sizeof(void*) || (alignment & (alignment - 1)) != 0) return nullptr;
  // Room to move up to the alignment, with the malloc pointer stored just
  // below the aligned address.
  const std::size_t extra = alignment - 1 + sizeof(void*);
  if (bytes > std::numeric_limits<std::size_t>::max() - extra) return nullptr;
  void* raw = std::malloc(bytes + extra);
  if (raw == nullptr) return nullptr;
  const auto start = reinterpret_cast<std::uintptr_t>(raw) + sizeof(void*);
  const auto aligned = (start + alignment - 1) & ~static_cast<std::uintptr_t>(alignment - 1);
  reinterpret_cast<void**>(aligned)[-1] = raw;
  return reinterpret_cast<void*>(aligned);
}

void aligned_heap_free(void* p) noexcept {
  if (p != nullptr) std::free(static_cast<void**>(p)[-1]);
}

}  // namespace kvflow::platform
