#include <string>

#include "actors/atoms.hpp"
#include "actors/caf_error.hpp"
#include "actors/clock.hpp"
#include "actors/frame_type.hpp"
#include "actors/tier_actor.hpp"
#include "devices/keys.hpp"

namespace kvflow {
namespace {

using state_t = caf::stateful_actor<host_tier_state>;
using tier_detail::target_of;

// Copies layers of chunks [begin, end) from the host tier into the workspace.
void load_from_host(state_t* self, workspace& ws, std::uint32_t begin, std::uint32_t end, devices::layer_range layers) {
  auto& st = self->state;
  for (auto c = begin; c < end; ++c) {
    auto t = target_of(ws, c, layers);
    const auto& key = ws.keys().at(c);
    auto lease = st.store->host().acquire(key);
    if (!lease || !lease.layers().covers(layers))
      throw error(errc::not_found, "host tier lost chunk " + std::to_string(c) + " (" + devices::key_hex(key) + ")");
    ws.engine().to_backend(t.dst, lease.data() + t.offset, t.bytes);
    st.bytes_loaded += t.bytes;
  }
}

}  // namespace

caf::behavior host_tier_actor(state_t* self, std::shared_ptr<devices::chunk_store> store) {
  self->state.store = std::move(store);
  return caf::message_handler{
      [=](const msg::frame& f, workspace_ptr& ws) -> caf::result<msg::frame> {
        auto g = tier_detail::load_grant_of(f, msg::tier::host, *ws);
        if (!g) return std::move(g.error());
        auto& st = self->state;
        if (tier_detail::stall_grant(*st.store)) return self->make_response_promise();  // injected: never answered
        auto before = st.bytes_loaded;
        try {
          load_from_host(self, *ws, g->grant.cells.chunk_begin, g->grant.cells.chunk_end, g->layers());
        } catch (const error& e) {
          return make_error(e);
        }
        g->done.finished_ns = now_ns();
        g->done.bytes = st.bytes_loaded - before;
        return msg::encode(g->done);
      },
  }
      .or_else(tier_detail::shared_handlers(self->state.store, msg::tier::host));
}

}  // namespace kvflow
