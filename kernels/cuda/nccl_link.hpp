#pragma once
// Stage hand-off over NCCL: ncclSend on the sender's device, ncclRecv on the
// receiver's, with the communicator's unique id passed as a Cap'n Proto
// NcclUniqueId message (kernels/model/stage_link.hpp).

#include <memory>
#include <vector>

#include "kernels/model/stage_link.hpp"

namespace kvflow::model {

/// A fresh NCCL unique id for a communicator of `ranks` ranks, as the
/// message rank 0 sends to rank `rank`.
std::vector<std::uint8_t> make_nccl_link_id(std::uint32_t ranks, std::uint32_t rank);

/// A link whose ranks live in this process: rank 0 sends from
/// `sender_device`, rank 1 receives on `receiver_device`. On one device
/// (NCCL refuses two ranks on one GPU) the communicator has one rank that
/// sends to itself. `id_message` is make_nccl_link_id's message for the
/// receiving rank: make_nccl_link_id(2, 1), or (1, 0) on one device; another
/// size is kvflow::error(invalid_argument). Each send is one grouped
/// ncclSend/ncclRecv of f32 activations on the link's own streams, waited
/// for before it returns. Throws kvflow::error(cuda_failure) naming the
/// NCCL call that failed.
std::unique_ptr<stage_link> make_nccl_link(int sender_device, int receiver_device,
                                           const std::vector<std::uint8_t>& id_message);

}  // namespace kvflow::model
