#include "devices/net/wire_codec.hpp"

#include <zstd.h>

#include <cstring>
#include <memory>
#include <string>

#include "messages/error.hpp"

namespace kvflow::devices::net {

namespace {

// Frame: "kvz" 1, element size, plane count, two zero bytes, the raw size
// (u64), then per plane its mode (u8) and stored size (u32), then the planes.
constexpr std::uint8_t magic[4] = {'k', 'v', 'z', 1};
constexpr std::size_t head_bytes = 16, plane_head_bytes = 5;
enum plane_mode : std::uint8_t { plane_raw = 0, plane_zstd = 1 };

void put_le(std::uint8_t* p, std::uint64_t v, int n) {
  for (int k = 0; k < n; ++k) p[k] = static_cast<std::uint8_t>(v >> (8 * k));
}

std::uint64_t get_le(const std::uint8_t* p, int n) {
  std::uint64_t v = 0;
  for (int k = 0; k < n; ++k) v |= std::uint64_t{p[k]} << (8 * k);
  return v;
}

[[noreturn]] void corrupt(const std::string& why) { throw error(errc::malformed_frame, "wire frame: " + why); }

struct zstd_contexts {
  std::unique_ptr<ZSTD_CCtx, decltype(&ZSTD_freeCCtx)> c{ZSTD_createCCtx(), &ZSTD_freeCCtx};
  std::unique_ptr<ZSTD_DCtx, decltype(&ZSTD_freeDCtx)> d{ZSTD_createDCtx(), &ZSTD_freeDCtx};
  std::vector<std::uint8_t> planes;  // decode scratch: the zstd planes of one frame
};

zstd_contexts& contexts() {
  thread_local zstd_contexts z;
  return z;
}

// Rotating left by one puts the sign in bit 0, so the exponent of bf16 and
// f32 is the element's top byte on its own (bf16: 1 sign, 8 exponent, 7
// mantissa bits; the exponent plane of KV holds a handful of values).
template <class T>
T rotl1(T v) {
  return static_cast<T>((v << 1) | (v >> (sizeof(T) * 8 - 1)));
}
template <class T>
T rotr1(T v) {
  return static_cast<T>((v >> 1) | (v << (sizeof(T) * 8 - 1)));
}

template <class T>
void split(const std::uint8_t* in, std::size_t n, std::uint8_t* planes) {
  for (std::size_t i = 0; i < n; ++i) {
    T v;
    std::memcpy(&v, in + i * sizeof(T), sizeof(T));
    v = rotl1(v);
    for (std::size_t k = 0; k < sizeof(T); ++k) planes[k * n + i] = static_cast<std::uint8_t>(v >> (8 * k));
  }
}

void join2(const std::uint8_t* p0, const std::uint8_t* p1, std::size_t n, std::uint8_t* out) {
  for (std::size_t i = 0; i < n; ++i) {
    const auto v = rotr1(static_cast<std::uint16_t>(p0[i] | (p1[i] << 8)));
    std::memcpy(out + 2 * i, &v, 2);
  }
}

void join4(const std::uint8_t* const* p, std::size_t n, std::uint8_t* out) {
  for (std::size_t i = 0; i < n; ++i) {
    const auto v = rotr1(static_cast<std::uint32_t>(p[0][i] | (p[1][i] << 8) | (p[2][i] << 16) |
                                                    (static_cast<std::uint32_t>(p[3][i]) << 24)));
    std::memcpy(out + 4 * i, &v, 4);
  }
}

}  // namespace

std::size_t wire_frame_overhead(std::size_t elem_bytes) { return head_bytes + plane_head_bytes * elem_bytes; }

std::vector<std::uint8_t> wire_encode(const void* data, std::size_t bytes, std::size_t elem_bytes, int level) {
  if ((elem_bytes != 2 && elem_bytes != 4) || bytes % elem_bytes != 0) elem_bytes = 1;
  const std::size_t n = bytes / elem_bytes;
  const auto* in = static_cast<const std::uint8_t*>(data);
  std::vector<std::uint8_t> planes;
  if (elem_bytes == 2) {
    planes.resize(bytes);
    split<std::uint16_t>(in, n, planes.data());
  } else if (elem_bytes == 4) {
    planes.resize(bytes);
    split<std::uint32_t>(in, n, planes.data());
  }
  const std::uint8_t* plane_src = elem_bytes == 1 ? in : planes.data();
  auto& z = contexts();
  std::vector<std::uint8_t> out(wire_frame_overhead(elem_bytes));
  std::memcpy(out.data(), magic, 4);
  out[4] = static_cast<std::uint8_t>(elem_bytes);
  out[5] = static_cast<std::uint8_t>(elem_bytes);
  put_le(out.data() + 8, bytes, 8);
  std::vector<std::uint8_t> packed(ZSTD_compressBound(n));
  for (std::size_t k = 0; k < elem_bytes; ++k) {
    const auto* plane = plane_src + k * n;
    std::size_t stored = n;
    std::uint8_t mode = plane_raw;
    if (n > 0) {
      const auto r = ZSTD_compressCCtx(z.c.get(), packed.data(), packed.size(), plane, n, level);
      if (!ZSTD_isError(r) && r < n) {
        stored = r;
        mode = plane_zstd;
      }
    }
    auto* head = out.data() + head_bytes + k * plane_head_bytes;
    head[0] = mode;
    put_le(head + 1, stored, 4);
    const auto* from = mode == plane_zstd ? packed.data() : plane;
    out.insert(out.end(), from, from + stored);
  }
  return out;
}

void wire_decode(const void* frame, std::size_t frame_bytes, void* dst, std::size_t bytes) {
  const auto* f = static_cast<const std::uint8_t*>(frame);
  if (frame_bytes < head_bytes || std::memcmp(f, magic, 4) != 0)
    corrupt(std::to_string(frame_bytes) + " bytes without the kvz header");
  const std::size_t elem = f[4];
  if ((elem != 1 && elem != 2 && elem != 4) || f[5] != elem || f[6] != 0 || f[7] != 0)
    corrupt("element size " + std::to_string(elem) + " with " + std::to_string(f[5]) + " planes");
  const auto raw = get_le(f + 8, 8);
  if (raw != bytes)
    corrupt("decodes to " + std::to_string(raw) + " bytes where " + std::to_string(bytes) + " were announced");
  if (bytes % elem != 0) corrupt(std::to_string(bytes) + " bytes are not whole elements of " + std::to_string(elem));
  const std::size_t n = bytes / elem;
  if (frame_bytes < wire_frame_overhead(elem)) corrupt("truncated plane table");
  auto& z = contexts();
  // Zstd planes decode into scratch (at most `bytes` in all); raw planes
  // are read where they lie. Bf16 and f32 planes then rejoin into dst;
  // a byte frame's single plane decodes straight into dst.
  const std::uint8_t* planes[4] = {};
  std::size_t at = wire_frame_overhead(elem), scratch_used = 0;
  if (elem > 1 && z.planes.size() < bytes) z.planes.resize(bytes);
  for (std::size_t k = 0; k < elem; ++k) {
    const auto* head = f + head_bytes + k * plane_head_bytes;
    const auto mode = head[0];
    const auto stored = get_le(head + 1, 4);
    if (stored > frame_bytes - at) corrupt("plane " + std::to_string(k) + " runs past the frame");
    const auto* src = f + at;
    at += stored;
    if (mode == plane_raw) {
      if (stored != n) corrupt("raw plane " + std::to_string(k) + " of " + std::to_string(stored) + " bytes");
      if (elem == 1 && n > 0)
        std::memcpy(dst, src, n);
      else
        planes[k] = src;
    } else if (mode == plane_zstd) {
      auto* to = elem == 1 ? static_cast<std::uint8_t*>(dst) : z.planes.data() + scratch_used;
      const auto r = ZSTD_decompressDCtx(z.d.get(), to, n, src, stored);
      if (ZSTD_isError(r)) corrupt("plane " + std::to_string(k) + ": " + ZSTD_getErrorName(r));
      if (r != n)
        corrupt("plane " + std::to_string(k) + " decodes to " + std::to_string(r) + " bytes, not " + std::to_string(n));
      planes[k] = to;
      scratch_used += n;
    } else {
      corrupt("plane " + std::to_string(k) + " has mode " + std::to_string(mode));
    }
  }
  if (at != frame_bytes) corrupt(std::to_string(frame_bytes - at) + " bytes after the planes");
  auto* out = static_cast<std::uint8_t*>(dst);
  if (elem == 2) join2(planes[0], planes[1], n, out);
  if (elem == 4) join4(planes, n, out);
}

}  // namespace kvflow::devices::net
