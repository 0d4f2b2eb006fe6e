#include "actors/tier_actor.hpp"

#include <atomic>
#include <memory>
#include <string>

#include "actors/atoms.hpp"
#include "actors/caf_error.hpp"
#include "actors/clock.hpp"
#include "actors/frame_type.hpp"
#include "messages/log.hpp"

namespace kvflow::tier_detail {
namespace {
std::atomic<std::int64_t> loads_now{0};
}  // namespace

std::int64_t loads_in_flight() { return loads_now.load(); }
void count_load_in_flight(int delta) { loads_now += delta; }

bool stall_grant(devices::chunk_store& store) {
  const auto& faults = store.disk().options().faults;
  return faults && faults->roll(devices::fault::tier_stall);
}

caf::expected<msg::frame> lookup(devices::chunk_store& store, msg::tier which, const msg::frame& f) {
  auto decoded = msg::decode(f);
  if (!decoded) return make_error(decoded.error());
  auto* q = std::get_if<msg::lookup>(&*decoded);
  if (!q) return make_error(errc::invalid_argument, "tier actor expects a lookup frame");
  auto layers = static_cast<std::uint32_t>(store.disk().options().shape.layers);
  devices::tier_lookup found = which == msg::tier::host ? store.host().lookup(q->keys) : store.disk().lookup(q->keys);
  msg::chunk_located out;
  out.request_id = q->request_id;
  for (std::size_t i = 0; i < q->keys.size(); ++i)
    if (i < found.chunks.size() && found.chunks[i].covers({0, layers}))
      out.chunks.push_back({q->keys[i], static_cast<std::uint32_t>(i), which, store.host().block_bytes()});
  return msg::encode(out);
}

caf::expected<load_grant> load_grant_of(const msg::frame& f, msg::tier which, workspace& ws) {
  auto decoded = msg::decode(f);
  if (!decoded) return make_error(decoded.error());
  auto* g = std::get_if<msg::grant>(&*decoded);
  if (!g || g->act != msg::action::load || g->source != which)
    return make_error(errc::invalid_argument,
                      std::string("tier ") + msg::to_string(which) + " takes load grants for itself only");
  if (g->cells.chunk_end > ws.keys().size())
    return make_error(errc::out_of_range,
                      "load grant beyond the cached chunks of request " + std::to_string(g->request_id));
  load_grant out;
  out.grant = *g;
  out.done.request_id = g->request_id;
  out.done.grant_id = g->grant_id;
  out.done.act = msg::action::load;
  out.done.cells = g->cells;
  out.done.started_ns = now_ns();
  return out;
}

span_target target_of(workspace& ws, std::uint32_t c, devices::layer_range layers) {
  auto& block = ws.block(static_cast<int>(c));
  auto offset = block.shape.span_offset_bytes(static_cast<int>(layers.begin));
  auto bytes = block.shape.span_bytes(static_cast<int>(layers.begin), static_cast<int>(layers.end));
  return {static_cast<std::uint8_t*>(block.data) + offset, offset, bytes};
}

void store_chunks(devices::chunk_store& store, msg::tier which, workspace& ws, std::uint32_t first, std::uint32_t end) {
  auto layers = devices::layer_range{0, static_cast<std::uint32_t>(store.disk().options().shape.layers)};
  for (auto c = first; c < end && c < ws.keys().size(); ++c) {
    auto& block = ws.block(static_cast<int>(c));
    // A host copy: the workspace's blocks may be device memory, and the
    // write-behind must not keep the request's memory alive.
    auto copy = std::make_shared<devices::pinned_buffer>(block.shape.bytes());
    ws.engine().to_host(copy->data(), block.data, block.shape.bytes());
    const auto& key = ws.keys()[c];
    try {
      if (which == msg::tier::host) store.store(key, layers, copy->data());
      store.disk().write_behind(key, layers, copy->data(), copy);
    } catch (const error& e) {
      logger("tiers")->warn("store of chunk {} of request {} failed: {}", c, ws.request_id(), e.what());
    }
  }
}

caf::message_handler shared_handlers(std::shared_ptr<devices::chunk_store> store, msg::tier which) {
  return {
      [=](const msg::frame& f) -> caf::result<msg::frame> {
        auto out = lookup(*store, which, f);
        if (!out) return std::move(out.error());
        return std::move(*out);
      },
      [=](flush_atom) {
        store->flush();
        return true;
      },
      [=](store_atom, workspace_ptr& ws, std::uint32_t first, std::uint32_t end) {
        store_chunks(*store, which, *ws, first, end);
      },
  };
}

}  // namespace kvflow::tier_detail
