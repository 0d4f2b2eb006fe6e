#include "platform/cuda_copy.hpp"

#include <string>
#include <utility>

#include "messages/error.hpp"
#include "platform/cuda_check.hpp"

namespace kvflow::platform {
namespace {

const char* direction(cudaMemcpyKind kind) {
  switch (kind) {
    case cudaMemcpyHostToDevice:
      return "host to device";
    case cudaMemcpyDeviceToHost:
      return "device to host";
    case cudaMemcpyDeviceToDevice:
      return "device to device";
    case cudaMemcpyHostToHost:
      return "host to host";
    case cudaMemcpyDefault:
      return "of inferred direction";
    default:
      return "of unknown direction";
  }
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

void copy_ticket::order_before(cudaStream_t stream) const {
  if (event_ != nullptr) KVFLOW_CUDA_CHECK(cudaStreamWaitEvent(stream, event_, 0));
}

copy_ticket ticket_after(cudaStream_t stream) {
  cudaEvent_t ev = nullptr;
  KVFLOW_CUDA_CHECK(cudaEventCreateWithFlags(&ev, cudaEventDisableTiming));
  copy_ticket t(ev);
  KVFLOW_CUDA_CHECK(cudaEventRecord(ev, stream));
  return t;
}

void enqueue_copy(void* dst, const void* src, std::size_t bytes, cudaMemcpyKind kind, cudaStream_t stream) {
  const cudaError_t e = cudaMemcpyAsync(dst, src, bytes, kind, stream);
  if (e == cudaSuccess) return;
  cudaGetLastError();
  throw error(errc::cuda_failure, "enqueue_copy: " + std::to_string(bytes) + " bytes " + direction(kind) + ": " +
                                      cudaGetErrorName(e) + ": " + cudaGetErrorString(e));
}

void enqueue_copy_2d(void* dst, std::size_t dst_pitch, const void* src, std::size_t src_pitch, std::size_t width,
                     std::size_t height, cudaMemcpyKind kind, cudaStream_t stream) {
  const cudaError_t e = cudaMemcpy2DAsync(dst, dst_pitch, src, src_pitch, width, height, kind, stream);
  if (e == cudaSuccess) return;
  cudaGetLastError();
  throw error(errc::cuda_failure, "enqueue_copy_2d: " + std::to_string(height) + " rows of " + std::to_string(width) +
                                      " bytes " + direction(kind) + ": " + cudaGetErrorName(e) + ": " +
                                      cudaGetErrorString(e));
}

copy_ticket copy_to_device(void* dst, const void* src, std::size_t bytes, cudaStream_t stream) {
  enqueue_copy(dst, src, bytes, cudaMemcpyHostToDevice, stream);
  return ticket_after(stream);
}

copy_ticket copy_to_host(void* dst, const void* src, std::size_t bytes, cudaStream_t stream) {
  enqueue_copy(dst, src, bytes, cudaMemcpyDeviceToHost, stream);
  return ticket_after(stream);
}

void copy_now(void* dst, const void* src, std::size_t bytes, cudaMemcpyKind kind) {
  enqueue_copy(dst, src, bytes, kind, nullptr);
  KVFLOW_CUDA_CHECK(cudaStreamSynchronize(nullptr));
}

}  // namespace kvflow::platform
