#pragma once
// Helpers of the devices suites: a scratch directory and deterministic blocks.

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "devices/chunk_store.hpp"
#include "kernels/model/kv_layout.hpp"
#include "messages/types.hpp"

namespace kvflow::devices::test {

/// A fresh directory under $TMPDIR (or /tmp), removed with its contents.
struct scratch_dir {
  std::string path;
  scratch_dir() {
    const char* base = std::getenv("TMPDIR");
    std::string tmpl = std::string(base != nullptr ? base : "/tmp") + "/kvflow-tiers-XXXXXX";
    std::vector<char> buf(tmpl.begin(), tmpl.end());
    buf.push_back('\0');
    path = mkdtemp(buf.data());
  }
  ~scratch_dir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
};

/// Small shape: 4 layers of 2 heads x 16 tokens x 32 dims bf16 (4 KiB a layer).
inline model::kv_shape small_shape() { return model::kv_shape{4, 2, 16, 32, model::dtype::bf16}; }
/// A layer of 3 KiB, so spans start inside a 4 KiB page.
inline model::kv_shape odd_shape() { return model::kv_shape{6, 2, 16, 24, model::dtype::bf16}; }

/// A store of `host_blocks` blocks of `shape` in host memory over a disk
/// tier in `dir` (fingerprint all 9s, 64 queued writes).
inline chunk_store_options store_options(const std::string& dir, std::size_t host_blocks,
                                         const model::kv_shape& shape) {
  chunk_store_options o;
  o.host_capacity_bytes = host_blocks * shape.bytes();
  o.disk.directory = dir;
  o.disk.fingerprint.fill(9);
  o.disk.shape = shape;
  o.disk.write_queue_cap = 64;
  return o;
}

inline msg::chunk_key key_of(std::uint32_t i) {
  msg::chunk_key k{};
  for (std::size_t b = 0; b < k.size(); ++b) k[b] = static_cast<std::uint8_t>((i * 131u + b * 7u + (i >> 8)) & 0xff);
  k[0] = static_cast<std::uint8_t>(i);
  k[1] = static_cast<std::uint8_t>(i >> 8);
  return k;
}

/// A block whose bytes depend on (seed, position): distinct per chunk.
inline std::vector<std::uint8_t> block_of(const model::kv_shape& s, std::uint32_t seed) {
  std::vector<std::uint8_t> b(s.bytes());
  std::uint64_t x = 0x9e3779b97f4a7c15ull * (seed + 1);
  for (auto& v : b) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    v = static_cast<std::uint8_t>(x);
  }
  return b;
}

}  // namespace kvflow::devices::test
