#include <algorithm>
#include <chrono>
#include <cstring>
#include <iterator>
#include <mutex>
#include <string>
#include <vector>

#include "actors/atoms.hpp"
#include "actors/caf_error.hpp"
#include "actors/clock.hpp"
#include "actors/frame_type.hpp"
#include "actors/tier_actor.hpp"
#include "devices/keys.hpp"
#include "messages/log.hpp"

namespace kvflow {

struct disk_reads {
  disk_reads() { tier_detail::count_load_in_flight(+1); }
  ~disk_reads() { tier_detail::count_load_in_flight(-1); }
  disk_reads(const disk_reads&) = delete;
  disk_reads& operator=(const disk_reads&) = delete;
  std::mutex m;
  std::size_t left = 0;
  std::uint64_t moved = 0;
  std::string failed;
  workspace_ptr ws;
  caf::actor me;  // the tier actor, told (finished_atom) when the last read landed
  std::uint64_t id = 0;
  bool duplicate = false;  // injected: tell it twice
  // Called once per chunk, by its read or by a read that could not start.
  void landed(const std::string& why, std::uint64_t bytes) {
    std::lock_guard<std::mutex> lock(m);
    if (why.empty()) moved += bytes;
    if (!why.empty() && failed.empty()) failed = why;
    if (--left > 0) return;
    caf::anon_send(me, finished_atom::value, id, now_ns());
    // Injected: the same completion again, after later ones.
    if (duplicate) caf::delayed_anon_send(me, std::chrono::milliseconds(3), finished_atom::value, id, now_ns());
  }
};

namespace {

using state_t = caf::stateful_actor<disk_tier_state>;
using tier_detail::target_of;

// Starts one chunk's read into `room` (slab slots it keeps until its
// completion has copied the span to the device and returns). The read is
// checked and copied on the I/O thread as it completes.
void start_read(disk_tier_state& st, const std::shared_ptr<disk_reads>& reads, std::uint32_t c,
                devices::layer_range layers, std::shared_ptr<devices::pinned_slab::lease> room) {
  auto& disk = st.store->disk();
  const auto& ws = reads->ws;
  auto t = target_of(*ws, c, layers);
  auto* staging = room->data();
  try {
    // No promotion here: it would read the whole chunk again over the same
    // (paced) link while the restore still needs it.
    disk.read_async(
        ws->keys().at(c), layers, staging,
        [reads, room = std::move(room), c, t](bool ok, const std::uint8_t* data, std::size_t bytes) mutable {
          const auto& ws = reads->ws;
          std::string why;
          if (!ok) {
            why = "disk tier lost chunk " + std::to_string(c) + " (" + devices::key_hex(ws->keys().at(c)) + ")";
          } else if (bytes != t.bytes) {
            why = "disk tier read " + std::to_string(bytes) + " bytes of chunk " + std::to_string(c) + ", want " +
                  std::to_string(t.bytes);
          } else {
            try {
              ws->engine().to_backend(t.dst, data, bytes);
            } catch (const std::exception& e) {
              why = e.what();
            }
          }
          // The slots go back before the grant is answered, so
          // that the next read can start on them.
          room.reset();
          reads->landed(why, bytes);
        });
  } catch (const std::exception& e) {
    reads->landed("disk read of chunk " + std::to_string(c) + " not started: " + e.what(), 0);
  }
}

// Starts the waiting reads, in order, while the slab has room for the
// first; the rest wait for slots to return (room_atom).
void start_waiting(state_t* self) {
  auto& st = self->state;
  while (!st.waiting.empty()) {
    const auto w = st.waiting.front();
    auto it = st.pending.find(w.id);
    if (it == st.pending.end()) {  // answered meanwhile (the actor is exiting)
      st.waiting.pop_front();
      continue;
    }
    auto reads = it->second.reads;
    std::shared_ptr<devices::pinned_slab::lease> room;
    try {
      if (!st.staging) throw error(errc::io_failure, "the disk tier has no read buffers");
      room = st.staging->take(st.store->disk().staging_bytes(w.layers));
    } catch (const std::exception& e) {
      st.waiting.pop_front();
      reads->landed("disk read of chunk " + std::to_string(w.chunk) + " has no staging room: " + e.what(), 0);
      continue;
    }
    if (!room) return;
    st.waiting.pop_front();
    start_read(st, reads, w.chunk, w.layers, std::move(room));
  }
}

// Queues the reads of layers of chunks [begin, end) of grant `id`, one per
// chunk, and starts those the slab has room for (the store queues reads
// beyond its I/O depth); the last to land sends (finished_atom, id,
// finished_ns) to the actor. Not waiting here is the point: the next
// grant's reads are submitted while this one's are still on the link, so
// the link does not idle through checksums, copies and the round trip of a
// grant through the actors.
void start_disk_load(state_t* self, std::uint64_t id, std::uint32_t begin, std::uint32_t end,
                     devices::layer_range layers) {
  auto& st = self->state;
  auto& reads = *st.pending.at(id).reads;
  reads.left = end - begin;
  reads.me = caf::actor_cast<caf::actor>(self);
  reads.id = id;
  const auto& faults = st.store->disk().options().faults;
  reads.duplicate = faults && faults->roll(devices::fault::duplicate_completion);
  for (auto c = begin; c < end; ++c) st.waiting.push_back({id, c, layers});
  start_waiting(self);
}

// Answers disk grant `id`, whose reads have all landed.
void answer_disk_load(state_t* self, std::uint64_t id, std::uint64_t finished_ns) {
  auto& st = self->state;
  auto it = st.pending.find(id);
  if (it == st.pending.end()) return;
  auto& p = it->second;
  auto& reads = *p.reads;
  std::uint64_t moved = 0;
  std::string failed;
  {
    std::lock_guard<std::mutex> lock(reads.m);
    moved = reads.moved;
    failed = std::move(reads.failed);
  }
  st.bytes_loaded += moved;
  if (!failed.empty()) {
    p.reply.deliver(make_error(errc::not_found, failed));
  } else {
    // The link works on queued grants back to back: this one had it from
    // when it came in or when the one before it landed, whichever is later.
    // The cost model learns each link's rate and per-grant latency from
    // these times, so overlapping reads must not count twice.
    p.done.started_ns = std::max(p.done.started_ns, st.last_finished_ns);
    p.done.finished_ns = std::max(finished_ns, p.done.started_ns);
    p.done.bytes = moved;
    st.last_finished_ns = p.done.finished_ns;
    p.reply.deliver(msg::encode(p.done));
  }
  st.pending.erase(it);
}

}  // namespace

caf::behavior disk_tier_actor(state_t* self, std::shared_ptr<devices::chunk_store> store, std::uint64_t staging_bytes) {
  self->state.store = std::move(store);
  {
    auto& disk = self->state.store->disk();
    const auto layers = static_cast<std::uint32_t>(disk.options().shape.layers);
    // One slot reads one layer (with its page of slack): a read of n layers
    // fits in n adjacent slots. A whole chunk's worth beyond the cap, so
    // that first-fit gaps do not hold back a cap's worth of reads.
    const std::size_t slot = disk.staging_bytes({0, 1});
    const std::size_t layer = std::max<std::size_t>(1, disk.options().shape.layer_bytes());
    const std::size_t slots = static_cast<std::size_t>((staging_bytes + layer - 1) / layer) + layers;
    const auto t0 = now_ns();
    try {
      self->state.staging = std::make_unique<devices::pinned_slab>(slot, slots);
      self->state.staging->set_on_free([addr = self->address()] {
        // Weak: the slab must not keep the actor alive.
        if (auto me = caf::actor_cast<caf::actor>(addr)) caf::anon_send(me, room_atom::value);
      });
      logger("tiers")->debug("disk tier: read slab of {} slots of {} bytes{} ready in {:.1f} ms", slots,
                             self->state.staging->slot_bytes(), self->state.staging->pinned() ? ", page-locked," : "",
                             (now_ns() - t0) / 1e6);
    } catch (const std::exception& e) {
      // Loads fail with this reason; lookups and stores still work.
      logger("tiers")->error("disk tier: no read slab of {} x {} bytes: {}", slots, slot, e.what());
    }
  }
  // Reads in flight keep their buffers (disk_reads); their grants are
  // answered now, or their requests would wait for their step timeout.
  self->set_exit_handler([self](caf::exit_msg& m) {
    if (!m.reason) return;  // a normal exit of a linked actor, as CAF's default handler
    auto& st = self->state;
    for (auto& [id, p] : st.pending)
      p.reply.deliver(make_error(errc::peer_down, "disk tier stopped before the reads of grant " +
                                                      std::to_string(p.done.grant_id) + " of request " +
                                                      std::to_string(p.done.request_id) + " landed"));
    st.pending.clear();
    self->quit(m.reason);
  });
  return caf::message_handler{
      [=](const msg::frame& f, workspace_ptr& ws) -> caf::result<msg::frame> {
        auto g = tier_detail::load_grant_of(f, msg::tier::disk, *ws);
        if (!g) return std::move(g.error());
        auto& st = self->state;
        if (tier_detail::stall_grant(*st.store)) return self->make_response_promise();  // injected: never answered
        auto id = st.next_load++;
        auto& p = st.pending[id];
        p.reply = self->make_response_promise();
        p.done = g->done;
        p.reads = std::make_shared<disk_reads>();
        p.reads->ws = ws;
        auto reply = p.reply;
        start_disk_load(self, id, g->grant.cells.chunk_begin, g->grant.cells.chunk_end, g->layers());
        return reply;
      },
      [=](finished_atom, std::uint64_t id, std::uint64_t finished_ns) { answer_disk_load(self, id, finished_ns); },
      [=](room_atom) { start_waiting(self); },
  }
      .or_else(tier_detail::shared_handlers(self->state.store, msg::tier::disk));
}

}  // namespace kvflow
