#include "devices/gpu/ipc.hpp"

#include <cstring>
#include <map>
#include <mutex>
#include <utility>

#include "messages/error.hpp"
#include "platform/cuda_check.hpp"
#include "platform/cuda_copy.hpp"

namespace kvflow::devices {

std::vector<std::uint8_t> ipc_export(void* base) {
  cudaIpcMemHandle_t h;
  KVFLOW_CUDA_CHECK(cudaIpcGetMemHandle(&h, base));
  std::vector<std::uint8_t> out(sizeof h);
  std::memcpy(out.data(), &h, sizeof h);
  return out;
}

namespace {

// This process's live exports: handle bytes -> allocation.
struct export_table {
  std::mutex m;
  std::map<std::vector<std::uint8_t>, void*> by_handle;
};

export_table& exports() {
  static export_table t;
  return t;
}

}  // namespace

ipc_exported::ipc_exported(void* base) : handle_(ipc_export(base)) {
  auto& t = exports();
  std::lock_guard<std::mutex> lock(t.m);
  t.by_handle[handle_] = base;
}

ipc_exported::~ipc_exported() { withdraw(); }

ipc_exported::ipc_exported(ipc_exported&& other) noexcept : handle_(std::exchange(other.handle_, {})) {}

ipc_exported& ipc_exported::operator=(ipc_exported&& other) noexcept {
  if (this != &other) {
    withdraw();
    handle_ = std::exchange(other.handle_, {});
  }
  return *this;
}

void ipc_exported::withdraw() noexcept {
  if (handle_.empty()) return;
  auto& t = exports();
  std::lock_guard<std::mutex> lock(t.m);
  t.by_handle.erase(handle_);
  handle_.clear();
}

ipc_mapping::ipc_mapping(const std::vector<std::uint8_t>& handle) {
  cudaIpcMemHandle_t h;
  if (handle.size() != sizeof h)
    throw error(errc::invalid_argument,
                "ipc handle of " + std::to_string(handle.size()) + " bytes, not " + std::to_string(sizeof h));
  {
    auto& t = exports();
    std::lock_guard<std::mutex> lock(t.m);
    if (auto it = t.by_handle.find(handle); it != t.by_handle.end()) {
      ptr_ = it->second;
      return;
    }
  }
  std::memcpy(&h, handle.data(), sizeof h);
  KVFLOW_CUDA_CHECK(cudaIpcOpenMemHandle(&ptr_, h, cudaIpcMemLazyEnablePeerAccess));
  opened_ = true;
}

ipc_mapping::~ipc_mapping() {
  if (ptr_ != nullptr && opened_) KVFLOW_CUDA_OK(cudaIpcCloseMemHandle(ptr_));
}

ipc_mapping::ipc_mapping(ipc_mapping&& other) noexcept
    : ptr_(std::exchange(other.ptr_, nullptr)), opened_(std::exchange(other.opened_, false)) {}

std::uint32_t copy_pieces(void* dst, const void* src, const std::vector<net::kv_piece>& pieces, cudaStream_t stream) {
  auto* d = static_cast<std::uint8_t*>(dst);
  const auto* s = static_cast<const std::uint8_t*>(src);
  for (const auto& p : pieces)
    platform::enqueue_copy(d + p.offset, s + p.offset, p.bytes, cudaMemcpyDeviceToDevice, stream);
  return static_cast<std::uint32_t>(pieces.size());
}

namespace {

// One 2D copy per chunk between the chunk blocks and the prompt-long block:
// rows are (layer, K|V, head) of layers [layer_begin, layer_end), a chunk's
// row is its tokens' head_dim values, the prompt-long block's rows are
// kv.shape.tokens long.
template <class Chunk>
std::uint32_t relayout(const net::request_kv& kv, std::size_t blocks, int layer_begin, int layer_end, Chunk&& copy) {
  if (kv.chunk_tokens <= 0 || kv.shape.tokens <= 0 || layer_begin < 0 || layer_end > kv.shape.layers ||
      layer_begin >= layer_end)
    throw error(errc::invalid_argument, "device relayout: layers [" + std::to_string(layer_begin) + ", " +
                                            std::to_string(layer_end) + ") of " + std::to_string(kv.shape.layers) +
                                            ", " + std::to_string(kv.shape.tokens) + " tokens");
  if (blocks != static_cast<std::size_t>(kv.chunks()))
    throw error(errc::invalid_argument, "device relayout: " + std::to_string(blocks) + " blocks for " +
                                            std::to_string(kv.chunks()) + " chunks");
  const std::size_t es = model::dtype_size(kv.shape.type);
  const std::size_t tok = static_cast<std::size_t>(kv.shape.head_dim) * es;
  const std::size_t rows = static_cast<std::size_t>(layer_end - layer_begin) * 2 * kv.shape.kv_heads;
  for (int c = 0; c < kv.chunks(); ++c) {
    const auto cs = kv.chunk_shape(c);
    const std::size_t width = tok * static_cast<std::size_t>(cs.tokens);
    copy(c, kv.shape.span_offset_bytes(layer_begin) + tok * static_cast<std::size_t>(c) * kv.chunk_tokens,
         tok * static_cast<std::size_t>(kv.shape.tokens), cs.span_offset_bytes(layer_begin), width, rows);
  }
  return static_cast<std::uint32_t>(kv.chunks());
}

}  // namespace

std::uint32_t pack_chunks_device(const net::request_kv& kv, const std::vector<const void*>& blocks, void* dst,
                                 int layer_begin, int layer_end, cudaStream_t stream) {
  auto* d = static_cast<std::uint8_t*>(dst);
  return relayout(
      kv, blocks.size(), layer_begin, layer_end,
      [&](int c, std::size_t at, std::size_t pitch, std::size_t from, std::size_t width, std::size_t rows) {
        KVFLOW_CUDA_CHECK(cudaMemcpy2DAsync(d + at, pitch, static_cast<const std::uint8_t*>(blocks[c]) + from, width,
                                            width, rows, cudaMemcpyDeviceToDevice, stream));
      });
}

std::uint32_t unpack_chunks_device(const net::request_kv& kv, const void* src, const std::vector<void*>& blocks,
                                   int layer_begin, int layer_end, cudaStream_t stream) {
  const auto* s = static_cast<const std::uint8_t*>(src);
  return relayout(kv, blocks.size(), layer_begin, layer_end,
                  [&](int c, std::size_t at, std::size_t pitch, std::size_t to, std::size_t width, std::size_t rows) {
                    KVFLOW_CUDA_CHECK(cudaMemcpy2DAsync(static_cast<std::uint8_t*>(blocks[c]) + to, width, s + at,
                                                        pitch, width, rows, cudaMemcpyDeviceToDevice, stream));
                  });
}

}  // namespace kvflow::devices
