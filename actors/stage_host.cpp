#include "actors/stage_host.hpp"

#include <algorithm>

#include "actors/caf_error.hpp"
#include "actors/clock.hpp"
#include "actors/gpu_actor.hpp"
#include "actors/stage_wire.hpp"
#include "kernels/model/kv_layout.hpp"
#include "messages/log.hpp"

namespace kvflow {
namespace {

using host_t = stage_host_actor::stateful_pointer<stage_host_state>;
using stage_wire::decode_as;

// The session of request `id` of the client that sent the current message.
std::pair<caf::actor_addr, std::uint64_t> key_of(host_t self, std::uint64_t id) {
  return {caf::actor_cast<caf::actor_addr>(self->current_sender()), id};
}

stage_session& session_of(host_t self, std::uint64_t id) {
  auto it = self->state.sessions.find(key_of(self, id));
  if (it == self->state.sessions.end())
    throw error(errc::not_found, "stage host: request " + std::to_string(id) + " has no open session");
  it->second.used = std::chrono::steady_clock::now();
  return it->second;
}

msg::frame open_session(host_t self, const msg::frame& reg_f, const msg::frame& sub_f) {
  auto& st = self->state;
  const auto& c = st.engine->cfg();
  auto reg = decode_as<msg::register_request>(reg_f, "register");
  auto sub = decode_as<msg::submit>(sub_f, "submit");
  const auto n = sub.tokens.size();
  if (reg.request_id != sub.request_id || reg.num_layers != static_cast<std::uint32_t>(c.layers) ||
      reg.chunk_tokens == 0 || n == 0 || n > static_cast<std::size_t>(c.max_positions) ||
      reg.num_chunks != (n + reg.chunk_tokens - 1) / reg.chunk_tokens)
    throw error(errc::invalid_argument,
                "stage host: open of request " + std::to_string(reg.request_id) + " (" + std::to_string(n) +
                    " tokens, chunks of " + std::to_string(reg.chunk_tokens) + ", " + std::to_string(reg.num_chunks) +
                    " chunks, " + std::to_string(reg.num_layers) + " layers) does not fit " + c.name);
  for (auto t : sub.tokens)
    if (t < 0 || t >= c.vocab_size) throw error(errc::out_of_range, "stage host: token " + std::to_string(t));
  const auto now = std::chrono::steady_clock::now();
  for (auto it = st.sessions.begin(); it != st.sessions.end();)
    it = now - it->second.used > stage_host_idle ? st.sessions.erase(it) : std::next(it);
  const auto key = key_of(self, reg.request_id);
  st.sessions.erase(key);
  if (st.sessions.size() >= stage_host_max_sessions)
    throw error(errc::capacity_exceeded, "stage host: " + std::to_string(st.sessions.size()) +
                                             " sessions open; request " + std::to_string(reg.request_id) + " refused");
  stage_session s;
  s.ws = std::make_unique<workspace>(reg.request_id, std::move(sub.tokens), static_cast<int>(reg.chunk_tokens),
                                     *st.engine);
  s.used = now;
  st.sessions.emplace(key, std::move(s));
  return reg_f;
}

// Lands KV spans of cells the host did not compute.
void store_cells(host_t self, const msg::frame& cf, const msg::frame& tf, const msg::bulk& in) {
  auto& st = self->state;
  auto cells = decode_as<msg::grant>(cf, "grant");
  auto t = decode_as<msg::transfer>(tf, "transfer");
  auto& ws = *session_of(self, cells.request_id).ws;
  const auto& c = cells.cells;
  try {
    if (cells.act != msg::action::load || c.chunk_begin >= c.chunk_end ||
        c.chunk_end > static_cast<std::uint32_t>(ws.num_chunks()) || c.layer_begin >= c.layer_end ||
        c.layer_begin < static_cast<std::uint32_t>(st.held.begin) ||
        c.layer_end > static_cast<std::uint32_t>(st.held.end))
      throw error(errc::invalid_argument, "stage host: stored cells of request " + std::to_string(cells.request_id) +
                                              " lie outside the stage or the prompt");
    stage_wire::check(t, in, "stage host: store for request " + std::to_string(cells.request_id));
    if (in.bytes.size() != stage_wire::bytes_of(ws, c.chunk_begin, c.chunk_end, c.layer_begin, c.layer_end, false))
      throw error(errc::malformed_frame,
                  "stage host: store of " + std::to_string(in.bytes.size()) + " bytes for other cells");
    stage_wire::reader r(in);
    for (auto ch = c.chunk_begin; ch < c.chunk_end; ++ch)
      r.take_span(ws, static_cast<int>(ch), c.layer_begin, c.layer_end);
  } catch (const error&) {
    // Later grants of the request would attend to KV that is not there.
    st.sessions.erase(key_of(self, cells.request_id));
    throw;
  }
}

caf::result<msg::frame, msg::frame, msg::bulk> run_part(host_t self, const msg::frame& gf, const msg::frame& tf,
                                                        const msg::bulk& in) {
  auto& st = self->state;
  auto& eng = *st.engine;
  const auto layers = static_cast<std::uint32_t>(eng.cfg().layers);
  const auto hb = static_cast<std::uint32_t>(st.held.begin), he = static_cast<std::uint32_t>(st.held.end);
  auto g = decode_as<msg::grant>(gf, "grant");
  auto t = decode_as<msg::transfer>(tf, "transfer");
  auto& ws = *session_of(self, g.request_id).ws;
  const auto chunks = static_cast<std::uint32_t>(ws.num_chunks());
  const auto& gc = g.cells;
  const std::uint32_t pb = std::max(gc.layer_begin, hb), pe = std::min(gc.layer_end, he);
  if (g.act != msg::action::compute || gc.chunk_begin >= gc.chunk_end || gc.chunk_end > chunks || pb >= pe ||
      gc.layer_end > layers)
    throw error(errc::invalid_argument, "stage host: grant " + std::to_string(g.grant_id) + " of request " +
                                            std::to_string(g.request_id) + " has no compute cells in layers [" +
                                            std::to_string(hb) + ", " + std::to_string(he) + ")");
  stage_wire::check(t, in, "stage host: grant " + std::to_string(g.grant_id));
  // The chunks enter here from the stage upstream (in another process).
  const bool input_hidden = pb == hb && hb > 0;
  const std::size_t expected = stage_wire::bytes_of(ws, gc.chunk_begin, gc.chunk_end, 0, 0, input_hidden);
  if (in.bytes.size() != expected)
    throw error(errc::malformed_frame, "stage host: grant " + std::to_string(g.grant_id) + " carries " +
                                           std::to_string(in.bytes.size()) + " bytes, its chunks need " +
                                           std::to_string(expected));
  stage_wire::reader r(in);
  if (input_hidden)
    for (auto c = gc.chunk_begin; c < gc.chunk_end; ++c) {
      auto& h = ws.hidden(static_cast<int>(c));
      r.take(eng, h.data, stage_wire::hidden_bytes(ws, static_cast<int>(c)));
    }
  msg::cell_range mine = gc;
  mine.layer_begin = pb;
  mine.layer_end = pe;
  std::vector<model::chunk_job> jobs;
  add_chunk_jobs(ws, mine, jobs);
  msg::cell_done done;
  done.request_id = g.request_id;
  done.grant_id = g.grant_id;
  done.act = msg::action::compute;
  done.cells = mine;
  done.started_ns = now_ns();
  eng.run_fused(jobs);
  eng.synchronize();
  done.finished_ns = now_ns();
  ++st.grants;
  msg::bulk out;
  out.bytes.reserve(stage_wire::bytes_of(ws, gc.chunk_begin, gc.chunk_end, pb, pe, pe == he && he < layers));
  stage_wire::writer w(out);
  for (auto c = gc.chunk_begin; c < gc.chunk_end; ++c) w.put_span(ws, static_cast<int>(c), pb, pe);
  if (pe == he && he < layers)
    for (auto c = gc.chunk_begin; c < gc.chunk_end; ++c)
      w.put(eng, ws.hidden(static_cast<int>(c)).data, stage_wire::hidden_bytes(ws, static_cast<int>(c)));
  done.bytes = out.bytes.size();
  auto announced = stage_wire::announce(g.grant_id, out);
  return {msg::encode(done), msg::encode(announced), std::move(out)};
}

}  // namespace

stage_host_actor::behavior_type stage_host(host_t self, std::shared_ptr<model::engine> engine) {
  self->state.engine = std::move(engine);
  self->state.held = self->state.engine->layers_held();
  return {
      [=](layout_atom) -> caf::result<msg::frame, std::uint32_t, std::uint32_t> {
        auto& st = self->state;
        const auto& c = st.engine->cfg();
        msg::kv_layout l;
        std::copy(st.engine->fingerprint().begin(), st.engine->fingerprint().end(), l.fingerprint.begin());
        l.layers = static_cast<std::uint32_t>(c.layers);
        l.kv_heads = static_cast<std::uint32_t>(c.kv_heads);
        l.tokens = 1;
        l.head_dim = static_cast<std::uint32_t>(c.head_dim);
        l.dtype = static_cast<std::uint8_t>(st.engine->kv_type());
        return {msg::encode(l), static_cast<std::uint32_t>(st.held.begin), static_cast<std::uint32_t>(st.held.end)};
      },
      [=](open_atom, const msg::frame& reg, const msg::frame& sub) -> caf::result<msg::frame> {
        try {
          return open_session(self, reg, sub);
        } catch (const error& e) {
          return make_error(e);
        }
      },
      [=](store_atom, const msg::frame& cells, const msg::frame& t, const msg::bulk& in) -> caf::result<bool> {
        try {
          store_cells(self, cells, t, in);
          return true;
        } catch (const error& e) {
          logger("actors")->warn("stage host: {}", e.what());
          return make_error(e);
        }
      },
      [=](stage_atom, const msg::frame& g, const msg::frame& t,
          const msg::bulk& in) -> caf::result<msg::frame, msg::frame, msg::bulk> {
        try {
          return run_part(self, g, t, in);
        } catch (const error& e) {
          logger("actors")->warn("stage host: {}", e.what());
          return make_error(e);
        }
      },
      [=](first_atom, std::uint64_t id, float temperature, float top_p,
          std::uint64_t seed) -> caf::result<std::int32_t> {
        try {
          auto& st = self->state;
          auto& ws = *session_of(self, id).ws;
          std::vector<float> logits;
          st.engine->logits(ws.hidden(ws.num_chunks() - 1), logits);
          return model::sample(logits, {temperature, top_p, seed}, 0);
        } catch (const error& e) {
          return make_error(e);
        }
      },
      [=](close_atom, std::uint64_t id) { self->state.sessions.erase(key_of(self, id)); },
  };
}

}  // namespace kvflow
