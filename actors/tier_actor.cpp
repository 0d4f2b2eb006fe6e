#include "actors/tier_actor.hpp"

#include <chrono>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <string>

#include "actors/atoms.hpp"
#include "actors/clock.hpp"
#include "actors/frame_type.hpp"
#include "devices/keys.hpp"
#include "messages/caf_error.hpp"
#include "messages/log.hpp"

namespace kvflow {
namespace {

using state_t = caf::stateful_actor<tier_state>;

msg::frame lookup(state_t* self, const msg::lookup& q) {
  auto& st = self->state;
  auto layers = static_cast<std::uint32_t>(st.store->disk().options().shape.layers);
  devices::tier_lookup found =
      st.which == msg::tier::host ? st.store->host().lookup(q.keys) : st.store->disk().lookup(q.keys);
  msg::chunk_located out;
  out.request_id = q.request_id;
  for (std::size_t i = 0; i < q.keys.size(); ++i)
    if (i < found.chunks.size() && found.chunks[i].covers({0, layers}))
      out.chunks.push_back({q.keys[i], static_cast<std::uint32_t>(i), st.which, st.store->host().block_bytes()});
  return msg::encode(out);
}

// Where layers of chunk c go in the workspace: device pointer, offset of the
// span inside a whole-chunk block and its bytes.
struct span_target {
  std::uint8_t* dst;
  std::size_t offset, bytes;
};

span_target target_of(workspace& ws, std::uint32_t c, devices::layer_range layers) {
  auto& block = ws.block(static_cast<int>(c));
  auto offset = block.shape.span_offset_bytes(static_cast<int>(layers.begin));
  auto bytes = block.shape.span_bytes(static_cast<int>(layers.begin), static_cast<int>(layers.end));
  return {static_cast<std::uint8_t*>(block.data) + offset, offset, bytes};
}

// Copies layers of chunks [begin, end) from the host tier into the workspace.
void load_from_host(state_t* self, workspace& ws, std::uint32_t begin, std::uint32_t end,
                    devices::layer_range layers) {
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

// Reads layers of chunks [begin, end) from disk, all chunks at once (up to
// the store's I/O depth in flight) into slices of the pinned staging buffer,
// and copies each to the device as its read completes, on the completing
// thread. Waits for every chunk before returning.
void load_from_disk(state_t* self, workspace& ws, std::uint32_t begin, std::uint32_t end,
                    devices::layer_range layers) {
  auto& st = self->state;
  auto& disk = st.store->disk();
  const std::size_t slice = (disk.staging_bytes(layers) + 4095) / 4096 * 4096;
  const std::size_t n = end - begin;
  if (st.staging.size() < slice * n) st.staging = devices::pinned_buffer(slice * n);
  std::mutex m;
  std::condition_variable cv;
  std::size_t left = n;
  std::uint64_t moved = 0;
  std::string failed;
  for (auto c = begin; c < end; ++c) {
    auto t = target_of(ws, c, layers);
    auto* staging = st.staging.data() + (c - begin) * slice;
    // No promotion here: it would read the whole chunk again over the same
    // (paced) link while the restore still needs it.
    disk.read_async(ws.keys().at(c), layers, staging, [&, c, t](bool ok, const std::uint8_t* data, std::size_t bytes) {
      std::string why;
      if (!ok) {
        why = "disk tier lost chunk " + std::to_string(c) + " (" + devices::key_hex(ws.keys().at(c)) + ")";
      } else if (bytes != t.bytes) {
        why = "disk tier read " + std::to_string(bytes) + " bytes of chunk " + std::to_string(c) + ", want " +
              std::to_string(t.bytes);
      } else {
        try {
          ws.engine().to_backend(t.dst, data, bytes);
        } catch (const std::exception& e) {
          why = e.what();
        }
      }
      std::lock_guard<std::mutex> lock(m);
      if (why.empty()) moved += bytes;
      if (!why.empty() && failed.empty()) failed = why;
      if (--left == 0) cv.notify_all();
    });
  }
  std::unique_lock<std::mutex> lock(m);
  cv.wait(lock, [&] { return left == 0; });
  st.bytes_loaded += moved;
  if (!failed.empty()) throw error(errc::not_found, failed);
}

}  // namespace

caf::behavior tier_actor(state_t* self, std::shared_ptr<devices::chunk_store> store, msg::tier which) {
  self->state.store = std::move(store);
  self->state.which = which;
  return {
      [=](const msg::frame& f) -> caf::result<msg::frame> {
        auto decoded = msg::decode(f);
        if (!decoded) return decoded.error();
        auto* q = std::get_if<msg::lookup>(&*decoded);
        if (!q) return make_error(errc::invalid_argument, "tier actor expects a lookup frame");
        return lookup(self, *q);
      },
      [=](const msg::frame& f, workspace_ptr& ws) -> caf::result<msg::frame> {
        auto decoded = msg::decode(f);
        if (!decoded) return decoded.error();
        auto* g = std::get_if<msg::grant>(&*decoded);
        if (!g || g->act != msg::action::load || g->source != self->state.which)
          return make_error(errc::invalid_argument, std::string("tier ") + msg::to_string(self->state.which) +
                                                        " takes load grants for itself only");
        if (g->cells.chunk_end > ws->keys().size())
          return make_error(errc::out_of_range, "load grant beyond the cached chunks of request " +
                                                    std::to_string(g->request_id));
        msg::cell_done done;
        done.request_id = g->request_id;
        done.grant_id = g->grant_id;
        done.act = msg::action::load;
        done.cells = g->cells;
        done.started_ns = now_ns();
        auto before = self->state.bytes_loaded;
        try {
          devices::layer_range layers{g->cells.layer_begin, g->cells.layer_end};
          if (self->state.which == msg::tier::host)
            load_from_host(self, *ws, g->cells.chunk_begin, g->cells.chunk_end, layers);
          else
            load_from_disk(self, *ws, g->cells.chunk_begin, g->cells.chunk_end, layers);
        } catch (const error& e) {
          return make_error(e);
        }
        done.finished_ns = now_ns();
        done.bytes = self->state.bytes_loaded - before;
        return msg::encode(done);
      },
      [=](flush_atom) {
        self->state.store->flush();
        return true;
      },
      [=](store_atom, workspace_ptr& ws, std::uint32_t first, std::uint32_t end) {
        auto& st = self->state;
        auto layers = devices::layer_range{0, static_cast<std::uint32_t>(st.store->disk().options().shape.layers)};
        for (auto c = first; c < end && c < ws->keys().size(); ++c) {
          auto& block = ws->block(static_cast<int>(c));
          // A host copy: the workspace's blocks may be device memory, and the
          // write-behind must not keep the request's memory alive.
          auto copy = std::make_shared<devices::pinned_buffer>(block.shape.bytes());
          ws->engine().to_host(copy->data(), block.data, block.shape.bytes());
          const auto& key = ws->keys()[c];
          try {
            if (st.which == msg::tier::host) st.store->store(key, layers, copy->data());
            st.store->disk().write_behind(key, layers, copy->data(), copy);
          } catch (const error& e) {
            logger("tiers")->warn("store of chunk {} of request {} failed: {}", c, ws->request_id(), e.what());
          }
        }
      },
  };
}

}  // namespace kvflow
