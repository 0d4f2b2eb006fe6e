#pragma once
// Aligned host memory carved out of plain malloc blocks. glibc before 2.38
// hardly reuses memory freed by memalign/posix_memalign/aligned new (glibc
// bug 14581): the leading and trailing remainders it splits off stay
// fragments, so a server that allocates and frees aligned buffers per
// request grows its malloc arena without bound while its live heap stays
// flat (kvflow serve: about 10 KB per request, 31 -> 183 MiB in a 10-minute
// soak). A malloc block of size + alignment, aligned inside, is reused like
// any other.

#include <cstddef>

namespace kvflow::platform {

/// `bytes` (0 allowed) aligned to `alignment` (a power of two, at least
/// sizeof(void*)), from malloc; nullptr when malloc fails, the size overflows
/// or the alignment is not a power of two. Free with aligned_heap_free only.
void* aligned_heap_alloc(std::size_t bytes, std::size_t alignment) noexcept;

/// Frees memory from aligned_heap_alloc; nullptr is a no-op.
void aligned_heap_free(void* p) noexcept;

}  // namespace kvflow::platform
