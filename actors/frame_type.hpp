#pragma once
// Lets CAF carry msg::frame: a byte vector, which CAF 0.17 serializes with
// its memcpy fast path across nodes.

#include <caf/meta/type_name.hpp>

#include "messages/codec.hpp"

namespace kvflow::msg {

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, frame& x) {
  return f(caf::meta::type_name("kvflow::frame"), x.bytes);
}

}  // namespace kvflow::msg
