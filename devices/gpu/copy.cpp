#include "devices/gpu/copy.hpp"

#include <utility>

#include "platform/cuda_check.hpp"

namespace kvflow::devices {
namespace {

copy_ticket enqueue(void* dst, const void* src, std::size_t bytes, cudaMemcpyKind kind, cudaStream_t stream) {
  KVFLOW_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, kind, stream));
  cudaEvent_t ev = nullptr;
  KVFLOW_CUDA_CHECK(cudaEventCreateWithFlags(&ev, cudaEventDisableTiming));
  copy_ticket t(ev);
  KVFLOW_CUDA_CHECK(cudaEventRecord(ev, stream));
  return t;
}

}  // namespace

copy_ticket::~copy_ticket() {
  if (event_ != nullptr) KVFLOW_CUDA_OK(cudaEventDestroy(event_));
}

copy_ticket::copy_ticket(copy_ticket&& other) noexcept : event_(std::exchange(other.event_, nullptr)) {}

copy_ticket& copy_ticket::operator=(copy_ticket&& other) noexcept {
  if (this != &other) {
    if (event_ != nullptr) KVFLOW_CUDA_OK(cudaEventDestroy(event_));
    event_ = std::exchange(other.event_, nullptr);
  }
  return *this;
}

bool copy_ticket::ready() const {
  if (event_ == nullptr) return true;
  const cudaError_t s = cudaEventQuery(event_);
  if (s == cudaErrorNotReady) return false;
  KVFLOW_CUDA_CHECK(s);
  return true;
}

void copy_ticket::wait() const {
  if (event_ != nullptr) KVFLOW_CUDA_CHECK(cudaEventSynchronize(event_));
}

copy_ticket copy_to_device(void* dst, const void* src, std::size_t bytes, cudaStream_t stream) {
  return enqueue(dst, src, bytes, cudaMemcpyHostToDevice, stream);
}

copy_ticket copy_to_host(void* dst, const void* src, std::size_t bytes, cudaStream_t stream) {
  return enqueue(dst, src, bytes, cudaMemcpyDeviceToHost, stream);
}

}  // namespace kvflow::devices
