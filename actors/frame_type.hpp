#pragma once
// Lets CAF carry msg::frame: a byte vector, which CAF 0.17 serializes with
// its memcpy fast path across nodes.

#include <cstddef>
#include <type_traits>

#include <caf/error.hpp>
#include <caf/meta/type_name.hpp>
#include <caf/sec.hpp>

#include "messages/codec.hpp"

namespace kvflow::msg {

/// Saving (serializers, to_string): the bytes as one sequence.
template <class Inspector>
typename std::enable_if<Inspector::reads_state, typename Inspector::result_type>::type inspect(Inspector& f, frame& x) {
  return f(caf::meta::type_name("kvflow::frame"), x.bytes);
}

/// Loading (a peer's bytes): the same wire format, but the declared length is
/// checked against the frame cap before anything is allocated; CAF's own
/// loader would resize to whatever a peer declares.
template <class Inspector>
typename std::enable_if<Inspector::writes_state, typename Inspector::result_type>::type inspect(Inspector& f,
                                                                                                frame& x) {
  std::size_t n = 0;
  if (auto err = f.begin_sequence(n)) return err;
  if (n > limits{}.max_frame_bytes)
    return caf::make_error(caf::sec::invalid_argument, "kvflow::frame: declared length over the frame cap");
  x.bytes.resize(n);
  if (n > 0)
    if (auto err = f.apply_raw(n, x.bytes.data())) return err;
  return f.end_sequence();
}

}  // namespace kvflow::msg
