#pragma once
// The hand-off of a chunk's hidden state from one pipeline stage's engine to
// the next: NCCL send/recv between GPUs (kernels/cuda/nccl_link), a host
// copy on the CPU backend (or between any two engines), behind one interface.

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "kernels/model/engine.hpp"

namespace kvflow::model {

/// Moves activations from the sender stage's engine memory to the receiver
/// stage's. Called only by the sender stage's owner, once the sender's jobs
/// that wrote `src` have finished (after its engine's when_done), and only
/// into a receiver buffer that no job enqueued on the receiver touches.
/// Returns when `dst` holds the bytes. Errors throw kvflow::error.
class stage_link {
 public:
  virtual ~stage_link() = default;
  /// Copies `bytes` from `src` (sender memory, [tokens][hidden]) to `dst`
  /// (receiver memory, same layout).
  virtual void send(const void* src, void* dst, std::size_t bytes) = 0;
  /// "host" or "nccl": what the bench reports beside the hand-off cost.
  virtual const char* kind() const = 0;
};

/// A link through host memory: the sender's to_host, then the receiver's
/// to_backend. Works between any two engines (CPU, CUDA, different devices).
std::unique_ptr<stage_link> make_host_link(engine& sender, engine& receiver);

/// An NCCL unique id (ncclUniqueId's bytes) and the rank it admits.
struct link_id {
  std::array<std::uint8_t, 128> id{};
  std::uint32_t ranks = 0;
  std::uint32_t rank = 0;
};

/// The id as a Cap'n Proto NcclUniqueId message (messages/kvflow.capnp):
/// what one rank sends to another before both join the communicator.
std::vector<std::uint8_t> encode_link_id(const link_id& id);
/// Reads a NcclUniqueId message; throws kvflow::error(malformed_frame) for
/// bytes that do not decode and (out_of_range) for a wrong id length or a
/// rank outside [0, ranks).
link_id decode_link_id(const std::vector<std::uint8_t>& bytes);

}  // namespace kvflow::model
