#pragma once
// The one error enum of kvflow. Library code throws kvflow::error (or returns
// it inside kvflow::expected, messages/expected.hpp); actors turn it into a
// caf::error of category "kvflow" (actors/caf_error.hpp).

#include <cstdint>
#include <stdexcept>
#include <string>

namespace kvflow {

enum class errc : std::uint8_t {
  none = 0,
  malformed_frame,    ///< Cap'n Proto bytes that do not decode
  frame_too_large,    ///< a frame over the configured byte cap
  out_of_range,       ///< a decoded value outside its allowed range
  bad_file,           ///< a model, tokenizer or chunk file that fails a check
  io_failure,         ///< the OS refused a read, write, open or allocation
  cuda_failure,       ///< a CUDA, cuBLAS or NCCL call failed
  invalid_argument,   ///< a caller passed something unusable
  capacity_exceeded,  ///< a pool or tier is full and cannot evict
  not_found,          ///< a key, chunk, model or peer is unknown
  deadline_exceeded,  ///< a request or transfer ran past its deadline
  peer_down,          ///< a remote actor or node vanished
  unsupported,        ///< valid input kvflow does not handle (yet)
};

/// Short stable name of an error code, as printed in logs and errors.
const char* to_string(errc code);

/// An error with a code and a context string that says what failed where.
class error : public std::runtime_error {
 public:
  error(errc code, const std::string& context);
  errc code() const noexcept { return code_; }

 private:
  errc code_;
};

}  // namespace kvflow
