#include "devices/gpu/ipc.hpp"

#include <cstring>
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

ipc_mapping::ipc_mapping(const std::vector<std::uint8_t>& handle) {
  cudaIpcMemHandle_t h;
  if (handle.size() != sizeof h)
    throw error(errc::invalid_argument,
                "ipc handle of " + std::to_string(handle.size()) + " bytes, not " + std::to_string(sizeof h));
  std::memcpy(&h, handle.data(), sizeof h);
  KVFLOW_CUDA_CHECK(cudaIpcOpenMemHandle(&ptr_, h, cudaIpcMemLazyEnablePeerAccess));
}

ipc_mapping::~ipc_mapping() {
  if (ptr_ != nullptr) KVFLOW_CUDA_OK(cudaIpcCloseMemHandle(ptr_));
}

ipc_mapping::ipc_mapping(ipc_mapping&& other) noexcept : ptr_(std::exchange(other.ptr_, nullptr)) {}

std::uint32_t copy_pieces(void* dst, const void* src, const std::vector<net::kv_piece>& pieces, cudaStream_t stream) {
  auto* d = static_cast<std::uint8_t*>(dst);
  const auto* s = static_cast<const std::uint8_t*>(src);
  for (const auto& p : pieces)
    platform::enqueue_copy(d + p.offset, s + p.offset, p.bytes, cudaMemcpyDeviceToDevice, stream);
  return static_cast<std::uint32_t>(pieces.size());
}

}  // namespace kvflow::devices
