#include "messages/error.hpp"

namespace kvflow {

const char* to_string(errc code) {
  switch (code) {
    case errc::none:
      return "none";
    case errc::malformed_frame:
      return "malformed_frame";
    case errc::frame_too_large:
      return "frame_too_large";
    case errc::out_of_range:
      return "out_of_range";
    case errc::bad_file:
      return "bad_file";
    case errc::io_failure:
      return "io_failure";
    case errc::cuda_failure:
      return "cuda_failure";
    case errc::invalid_argument:
      return "invalid_argument";
    case errc::capacity_exceeded:
      return "capacity_exceeded";
    case errc::not_found:
      return "not_found";
    case errc::deadline_exceeded:
      return "deadline_exceeded";
    case errc::peer_down:
      return "peer_down";
    case errc::unsupported:
      return "unsupported";
  }
  return "unknown";
}

error::error(errc code, const std::string& context)
    : std::runtime_error(std::string(to_string(code)) + ": " + context), code_(code) {}

}  // namespace kvflow
