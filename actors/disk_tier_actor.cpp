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
  // One per chunk; the I/O thread writes them until `left` is 0.
  std::vector<devices::pinned_buffer> staging;
  workspace_ptr ws;
};

namespace {

using state_t = caf::stateful_actor<disk_tier_state>;
using tier_detail::take_staging;
using tier_detail::target_of;

void keep_staging(disk_tier_state& st, std::vector<devices::pinned_buffer>& buffers) {
  for (auto& b : buffers) tier_detail::keep_staging(st, std::move(b), st.spare_cap);
  buffers.clear();
}

// Starts reading layers of chunks [begin, end) of grant `id` from disk, all
// chunks at once (the store queues reads beyond its I/O depth), each into a
// staging buffer of its own. Each read is checked and copied to the device on
// the I/O thread as it completes; the last one sends (finished_atom, id,
// finished_ns) to the actor. Not waiting here is the point:
// the next grant's reads are submitted while this one's are still on the
// link, so the link does not idle through checksums, copies and the round
// trip of a grant through the actors. Throws only before any read started
// (no staging memory).
void start_disk_load(state_t* self, std::uint64_t id, std::uint32_t begin, std::uint32_t end,
                     devices::layer_range layers) {
  auto& st = self->state;
  auto& p = st.pending.at(id);
  auto& disk = st.store->disk();
  const std::size_t slice = devices::align_up(disk.staging_bytes(layers));
  const std::size_t n = end - begin;
  auto reads = p.reads;
  try {
    for (std::size_t i = 0; i < n; ++i) reads->staging.push_back(take_staging(st, slice));
  } catch (...) {
    keep_staging(st, reads->staging);
    throw;
  }
  reads->left = n;
  auto me = caf::actor_cast<caf::actor>(self);
  // Called once per chunk, by its read or by a submission that failed.
  const bool duplicate = disk.options().faults && disk.options().faults->roll(devices::fault::duplicate_completion);
  auto landed = [reads, me, id, duplicate](const std::string& why, std::uint64_t bytes) {
    std::lock_guard<std::mutex> lock(reads->m);
    if (why.empty()) reads->moved += bytes;
    if (!why.empty() && reads->failed.empty()) reads->failed = why;
    if (--reads->left > 0) return;
    caf::anon_send(me, finished_atom::value, id, now_ns());
    // Injected: the same completion again, after later ones.
    if (duplicate) caf::delayed_anon_send(me, std::chrono::milliseconds(3), finished_atom::value, id, now_ns());
  };
  const auto& ws = reads->ws;
  for (auto c = begin; c < end; ++c) {
    auto t = target_of(*ws, c, layers);
    auto* staging = reads->staging[c - begin].data();
    try {
      // No promotion here: it would read the whole chunk again over the same
      // (paced) link while the restore still needs it.
      disk.read_async(
          ws->keys().at(c), layers, staging, [landed, ws, c, t](bool ok, const std::uint8_t* data, std::size_t bytes) {
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
            landed(why, bytes);
          });
    } catch (const std::exception& e) {
      landed("disk read of chunk " + std::to_string(c) + " not started: " + e.what(), 0);
    }
  }
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
  keep_staging(st, reads.staging);
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
  auto& st0 = self->state;
  st0.spare_cap = 2 * staging_bytes;
  if (staging_bytes > 0) {
    auto& disk = st0.store->disk();
    const std::size_t slice = devices::align_up(disk.staging_bytes({0, 1}));
    try {
      for (std::uint64_t made = 0; made < staging_bytes; made += slice) {
        st0.spare.emplace(slice, devices::pinned_buffer(slice));
        st0.spare_bytes += slice;
      }
    } catch (const std::exception& e) {
      logger("tiers")->warn("disk tier: read buffers made up to {} of {} bytes: {}", st0.spare_bytes, staging_bytes,
                            e.what());
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
        try {
          start_disk_load(self, id, g->grant.cells.chunk_begin, g->grant.cells.chunk_end, g->layers());
        } catch (const std::exception& e) {
          st.pending.erase(id);
          reply.deliver(make_error(errc::io_failure, "disk load of request " + std::to_string(g->grant.request_id) +
                                                         ": no staging memory: " + e.what()));
        }
        return reply;
      },
      [=](finished_atom, std::uint64_t id, std::uint64_t finished_ns) { answer_disk_load(self, id, finished_ns); },
  }
      .or_else(tier_detail::shared_handlers(self->state.store, msg::tier::disk));
}

}  // namespace kvflow
