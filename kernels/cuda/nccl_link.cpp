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
  nccl_link(int sender_device, int receiver_device, const link_id& id)
      : dev_{sender_device, receiver_device}, ranks_(sender_device == receiver_device ? 1 : 2) {
    // NCCL refuses two ranks on one GPU (since 2.5): stages on one device
    // share a one-rank communicator and the hand-off is a send to itself.
    if (id.ranks != static_cast<std::uint32_t>(ranks_))
      throw error(errc::invalid_argument, "an NCCL link from device " + std::to_string(sender_device) + " to " +
                                              std::to_string(receiver_device) + " has " + std::to_string(ranks_) +
                                              " ranks; the id is for " + std::to_string(id.ranks));
    ncclUniqueId uid;
    static_assert(sizeof(uid.internal) == sizeof(id.id), "ncclUniqueId is 128 bytes");
    std::memcpy(uid.internal, id.id.data(), sizeof(uid.internal));
    for (int r = 0; r < ranks_; ++r) {
      KVFLOW_CUDA_CHECK(cudaSetDevice(dev_[r]));
      KVFLOW_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_[r], cudaStreamNonBlocking));
    }
    // Every rank joins from this thread: ncclCommInitRank blocks until all
    // ranks have joined, so they join inside one group.
    KVFLOW_NCCL_CHECK(ncclGroupStart());
    for (int r = 0; r < ranks_; ++r) {
      KVFLOW_CUDA_CHECK(cudaSetDevice(dev_[r]));
      KVFLOW_NCCL_CHECK(ncclCommInitRank(&comm_[r], ranks_, uid, r));
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
    const int receiver = ranks_ - 1;  // rank 1, or rank 0 itself on one device
    KVFLOW_NCCL_CHECK(ncclGroupStart());
    KVFLOW_CUDA_CHECK(cudaSetDevice(dev_[0]));
    KVFLOW_NCCL_CHECK(ncclSend(src, n, ncclFloat32, receiver, comm_[0], stream_[0]));
    KVFLOW_CUDA_CHECK(cudaSetDevice(dev_[1]));
    KVFLOW_NCCL_CHECK(ncclRecv(dst, n, ncclFloat32, 0, comm_[receiver], stream_[receiver]));
    KVFLOW_NCCL_CHECK(ncclGroupEnd());
    for (int r = 0; r < ranks_; ++r) {
      KVFLOW_CUDA_CHECK(cudaSetDevice(dev_[r]));
      KVFLOW_CUDA_CHECK(cudaStreamSynchronize(stream_[r]));
    }
  }
  const char* kind() const override { return "nccl"; }

 private:
  int dev_[2];
  int ranks_;
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
