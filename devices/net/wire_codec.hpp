#pragma once
// Lossless compression of KV bytes for the wire. Each element (bf16, f16,
// f32) is rotated left by one bit, so the sign drops to the bottom and, for
// bf16 and f32, the exponent fills the top byte alone; the rotated elements
// are split into byte planes. The exponent plane (a few distinct values)
// is entropy-coded with zstd; mantissa planes are close to random and are
// kept raw unless zstd makes them smaller. A frame is self-describing and
// decodes to exactly the bytes it was made from.

#include <cstddef>
#include <cstdint>
#include <vector>

namespace kvflow::devices::net {

/// Bytes of a frame before its planes: magic, element size, plane count,
/// raw size and each plane's mode and size.
std::size_t wire_frame_overhead(std::size_t elem_bytes);

/// The frame of `bytes` bytes at `data`, elements of `elem_bytes` (1, 2 or
/// 4; other sizes, or a length that is not whole elements, are coded as
/// bytes), zstd at `level`. Never fails; the frame may be larger than the
/// input (incompressible data): callers compare and keep the raw bytes.
std::vector<std::uint8_t> wire_encode(const void* data, std::size_t bytes, std::size_t elem_bytes, int level = 1);

/// Decodes `frame` into exactly `bytes` bytes at `dst`. Throws
/// kvflow::error(malformed_frame) for a frame that is truncated, corrupt or
/// decodes to any other size; nothing past `bytes` at `dst` is written and
/// nothing is allocated beyond `bytes` (a hostile frame cannot ask for more).
void wire_decode(const void* frame, std::size_t frame_bytes, void* dst, std::size_t bytes);

}  // namespace kvflow::devices::net
