#include "kernels/cuda/nccl_link.hpp"

#include <cuda_runtime_api.h>
#include <nccl.h>

#include <cstring>
#include <string>

#include "kernels/cuda/check.hpp"
#include "messages/error.hpp"

namespace kvflow::model {
namespace {

void check_nccl(ncclResult_t r, const char* expr) {
  if (r != ncclSuccess) throw error(errc::cuda_failure, std::string(expr) + ": " + ncclGetErrorString(r));
}
#define KVFLOW_NCCL_CHECK(expr) check_nccl((expr), #expr)

class nccl_link final : public stage_link {
 public:
  nccl_link(int sender_device, int receiver_device, const link_id& id) : dev_{sender_device, receiver_device} {
    if (id.ranks != 2)
      throw error(errc::invalid_argument, "an in-process NCCL link has 2 ranks, got " + std::to_string(id.ranks));
    ncclUniqueId uid;
    static_assert(sizeof(uid.internal) == sizeof(id.id), "ncclUniqueId is 128 bytes");
    std::memcpy(uid.internal, id.id.data(), sizeof(uid.internal));
    for (int r = 0; r < 2; ++r) {
      KVFLOW_CUDA_CHECK(cudaSetDevice(dev_[r]));
      KVFLOW_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_[r], cudaStreamNonBlocking));
    }
    // Both ranks join from this thread: ncclCommInitRank blocks until every
    // rank has joined, so they join inside one group.
    KVFLOW_NCCL_CHECK(ncclGroupStart());
    for (int r = 0; r < 2; ++r) {
      KVFLOW_CUDA_CHECK(cudaSetDevice(dev_[r]));
      KVFLOW_NCCL_CHECK(ncclCommInitRank(&comm_[r], 2, uid, r));
    }
    KVFLOW_NCCL_CHECK(ncclGroupEnd());
  }
  ~nccl_link() override {
    for (int r = 0; r < 2; ++r) {
      if (comm_[r]) ncclCommDestroy(comm_[r]);
      if (stream_[r]) cudaStreamDestroy(stream_[r]);
    }
  }

  void send(const void* src, void* dst, std::size_t bytes) override {
    if (bytes % sizeof(float) != 0)
      throw error(errc::invalid_argument, "hand-off of " + std::to_string(bytes) + " bytes: not f32 activations");
    const std::size_t n = bytes / sizeof(float);
    KVFLOW_NCCL_CHECK(ncclGroupStart());
    KVFLOW_CUDA_CHECK(cudaSetDevice(dev_[0]));
    KVFLOW_NCCL_CHECK(ncclSend(src, n, ncclFloat32, 1, comm_[0], stream_[0]));
    KVFLOW_CUDA_CHECK(cudaSetDevice(dev_[1]));
    KVFLOW_NCCL_CHECK(ncclRecv(dst, n, ncclFloat32, 0, comm_[1], stream_[1]));
    KVFLOW_NCCL_CHECK(ncclGroupEnd());
    for (int r = 0; r < 2; ++r) {
      KVFLOW_CUDA_CHECK(cudaSetDevice(dev_[r]));
      KVFLOW_CUDA_CHECK(cudaStreamSynchronize(stream_[r]));
    }
  }
  const char* kind() const override { return "nccl"; }

 private:
  int dev_[2];
  cudaStream_t stream_[2] = {nullptr, nullptr};
  ncclComm_t comm_[2] = {nullptr, nullptr};
};

}  // namespace

std::vector<std::uint8_t> make_nccl_link_id(std::uint32_t ranks, std::uint32_t rank) {
  ncclUniqueId uid;
  KVFLOW_NCCL_CHECK(ncclGetUniqueId(&uid));
  link_id id;
  std::memcpy(id.id.data(), uid.internal, sizeof(uid.internal));
  id.ranks = ranks;
  id.rank = rank;
  return encode_link_id(id);
}

std::unique_ptr<stage_link> make_nccl_link(int sender_device, int receiver_device,
                                           const std::vector<std::uint8_t>& id_message) {
  return std::make_unique<nccl_link>(sender_device, receiver_device, decode_link_id(id_message));
}

}  // namespace kvflow::model
