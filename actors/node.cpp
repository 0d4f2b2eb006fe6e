#include "actors/node.hpp"

#include <caf/stateful_actor.hpp>

#include "actors/atoms.hpp"
#include "actors/caf_error.hpp"
#include "actors/frame_type.hpp"
#include "messages/log.hpp"

namespace kvflow {

caf::behavior node_actor(caf::stateful_actor<node_state>* self, msg::node_inventory inventory) {
  self->state.inventory = std::move(inventory);
  return {
      [=](inventory_atom) -> msg::frame { return msg::encode(self->state.inventory); },
      [=](const msg::frame& in) -> caf::result<msg::frame> {
        auto decoded = msg::decode(in);
        if (!decoded) {
          logger("actors")->warn("node {}: refused frame of {} bytes: {}", self->state.inventory.node_id,
                                 in.bytes.size(), decoded.error().what());
          return make_error(decoded.error());
        }
        return msg::encode(*decoded);
      },
  };
}

}  // namespace kvflow
