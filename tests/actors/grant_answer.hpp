#pragma once
// Test helper: the answer an actor gives a grant request (a cellDone frame
// or an error), collected from a scoped actor's pending request.

#include <cstdint>
#include <string>
#include <variant>

#include <caf/all.hpp>

#include "actors/frame_type.hpp"
#include "messages/codec.hpp"

namespace kvflow::test {

struct grant_answer {
  std::uint32_t chunk = 0;  ///< what the test asked for, if it tracks it
  bool ok = false;
  msg::cell_done done;
  std::string error;
};

/// Waits for `pending` (a scoped actor's request handle) and records the answer.
template <class Handle>
void receive_answer(caf::actor_system& sys, Handle& pending, grant_answer& out) {
  pending.receive(
      [&](const msg::frame& f) {
        auto decoded = msg::decode(f);
        if (decoded && std::holds_alternative<msg::cell_done>(*decoded)) {
          out.ok = true;
          out.done = std::get<msg::cell_done>(*decoded);
        } else {
          out.error = "not a cellDone frame";
        }
      },
      [&](caf::error& e) { out.error = sys.render(e); });
}

}  // namespace kvflow::test
