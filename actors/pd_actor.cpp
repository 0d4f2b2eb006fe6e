#include "actors/pd_actor.hpp"

#include <algorithm>
#include <future>

#include "actors/atoms.hpp"
#include "actors/caf_error.hpp"
#include "actors/clock.hpp"
#include "actors/frame_type.hpp"
#include "actors/gpu_actor.hpp"
#include "messages/codec.hpp"
#include "messages/log.hpp"

namespace kvflow {
namespace {

msg::frame frame_of(const msg::pd_reply& r) { return msg::frame{msg::encode(r)}; }

msg::pd_reply failed(std::uint64_t id, std::string why) {
  msg::pd_reply r;
  r.request_id = id;
  r.why = std::move(why);
  return r;
}

// The shape a handoff's KV must have on this instance's model.
std::string check_handoff(const msg::pd_handoff& h, const model::engine& eng) {
  const auto want = model::kv_shape_of(eng.cfg(), static_cast<int>(h.prompt.size()), eng.kv_type());
  const auto& got = h.kv.shape;
  if (got.layers != want.layers || got.kv_heads != want.kv_heads || got.head_dim != want.head_dim ||
      got.type != want.type || got.tokens != want.tokens)
    return "KV shape differs from this instance's model";
  if (!h.kv.contiguous || h.kv.pieces != 1 || h.kv.layer_begin != 0 || h.kv.layer_end != want.layers)
    return "only one contiguous span of every layer is taken";
  if (h.max_new_tokens == 0) return "nothing to decode";
  return {};
}

msg::pd_reply result_of(std::uint64_t id, pd_incoming& in) {
  if (!in.why.empty()) return failed(id, in.why);
  msg::pd_reply r;
  r.request_id = id;
  r.ok = true;
  r.tokens = in.ws->generated();
  r.transfer_ns = in.landed_ns - in.announced_ns;
  return r;
}

// The request ended (decoded, or failed with in.why): collectors already
// waiting get the answer and the request goes; else it waits for one.
void finish(std::map<std::uint64_t, pd_incoming>& requests, std::uint64_t id) {
  auto it = requests.find(id);
  if (it == requests.end()) return;
  it->second.finished = true;
  if (it->second.waiting.empty()) return;
  auto r = result_of(id, it->second);
  for (auto& p : it->second.waiting) p.deliver(frame_of(r));
  requests.erase(it);
}

}  // namespace

caf::behavior pd_decode_actor(caf::stateful_actor<pd_decode_state>* self, std::shared_ptr<model::engine> engine,
                              caf::actor gpu, std::shared_ptr<devices::net::transport> net) {
  self->state.engine = std::move(engine);
  self->state.gpu = std::move(gpu);
  self->state.net = std::move(net);
  return {
      [=](pd_handoff_atom, const msg::frame& f) -> msg::frame {
        auto h = msg::decode_pd_handoff(f.bytes);
        if (!h) return frame_of(failed(0, h.error().what()));
        auto& st = self->state;
        const auto id = h->request_id;
        if (st.requests.count(id))
          return frame_of(failed(id, "request " + std::to_string(id) + " already handed over"));
        if (auto why = check_handoff(*h, *st.engine); !why.empty()) return frame_of(failed(id, why));
        pd_incoming in;
        try {
          in.ws = std::make_shared<workspace>(id, h->prompt, h->kv.chunk_tokens, *st.engine);
          in.staging = devices::pinned_buffer(h->kv.bytes);
        } catch (const error& e) {
          return frame_of(failed(id, e.what()));
        }
        in.handoff = std::move(*h);
        in.announced_ns = now_ns();
        auto& slot = st.requests.emplace(id, std::move(in)).first->second;
        auto me = caf::actor_cast<caf::actor>(self);
        devices::net::request_kv r{slot.handoff.kv.shape, slot.handoff.kv.chunk_tokens};
        try {
          devices::net::expect_pieces(*st.net, slot.handoff.kv.transfer_id, slot.staging.data(),
                                      devices::net::contiguous_pieces(r, 0, r.shape.layers),
                                      [me, id](devices::net::moved m) {
                                        caf::anon_send(me, pd_landed_atom::value, id, m.ok, m.why, m.finished_ns);
                                      });
        } catch (const error& e) {
          st.requests.erase(id);
          return frame_of(failed(id, e.what()));
        }
        msg::pd_reply ready;
        ready.request_id = id;
        ready.ok = true;
        ready.receiver = st.net->address();
        return frame_of(ready);
      },
      [=](pd_landed_atom, std::uint64_t id, bool ok, const std::string& why, std::uint64_t at_ns) {
        auto& st = self->state;
        auto it = st.requests.find(id);
        if (it == st.requests.end()) return;
        auto& in = it->second;
        in.landed_ns = at_ns;
        const auto& kv = in.handoff.kv;
        if (ok && devices::net::checksum(in.staging.data(), kv.bytes) != kv.checksum) {
          ok = false;
          in.why = "KV checksum mismatch";
        } else if (!ok) {
          in.why = "KV transfer failed: " + why;
        }
        if (ok) {
          try {
            // The contiguous span back into this engine's chunk blocks.
            devices::net::request_kv r{kv.shape, kv.chunk_tokens};
            std::vector<std::vector<std::uint8_t>> host(static_cast<std::size_t>(r.chunks()));
            std::vector<void*> ptrs;
            for (int c = 0; c < r.chunks(); ++c) {
              host[static_cast<std::size_t>(c)].resize(r.chunk_shape(c).bytes());
              ptrs.push_back(host[static_cast<std::size_t>(c)].data());
            }
            devices::net::unpack_chunks(r, in.staging.data(), ptrs, 0, r.shape.layers);
            for (int c = 0; c < r.chunks(); ++c)
              st.engine->to_backend(in.ws->block(c).data, ptrs[static_cast<std::size_t>(c)],
                                    host[static_cast<std::size_t>(c)].size());
          } catch (const error& e) {
            in.why = e.what();
          }
        }
        in.staging = devices::pinned_buffer();
        if (!in.why.empty()) return finish(st.requests, id);
        in.ws->generated().push_back(in.handoff.first_token);
        const auto& stops = in.handoff.stop_tokens;
        const int more = static_cast<int>(in.handoff.max_new_tokens) - 1;
        if (more <= 0 || std::find(stops.begin(), stops.end(), in.handoff.first_token) != stops.end())
          return finish(st.requests, id);
        model::sampling s{in.handoff.temperature, in.handoff.top_p, in.handoff.seed};
        self->send(st.gpu, decode_atom::value, in.ws, more, s, stops, caf::actor_cast<caf::actor>(self),
                   decode_hooks{});
      },
      [=](done_atom, std::uint64_t id) { finish(self->state.requests, id); },
      [=](pd_collect_atom, std::uint64_t id) -> caf::result<msg::frame> {
        auto& st = self->state;
        auto it = st.requests.find(id);
        if (it == st.requests.end()) return frame_of(failed(id, "unknown request " + std::to_string(id)));
        if (it->second.finished) {
          auto r = result_of(id, it->second);
          st.requests.erase(it);  // collected: its memory goes back
          return frame_of(r);
        }
        auto p = self->make_response_promise();
        it->second.waiting.push_back(p);
        return p;
      },
  };
}

pd_prefilled pd_prefill(caf::scoped_actor& self, const caf::actor& gpu, model::engine& engine, std::uint64_t request_id,
                        std::vector<std::int32_t> prompt, int chunk_tokens, const model::sampling& s,
                        std::chrono::seconds timeout) {
  pd_prefilled out;
  const auto t0 = now_ns();
  out.ws = std::make_shared<workspace>(request_id, std::move(prompt), chunk_tokens, engine);
  msg::grant g;
  g.request_id = request_id;
  g.grant_id = 1;
  g.act = msg::action::compute;
  g.cells = {0, static_cast<std::uint32_t>(out.ws->num_chunks()), 0, static_cast<std::uint32_t>(engine.cfg().layers)};
  std::string why;
  self->request(gpu, timeout, msg::encode(g), out.ws)
      .receive([](const msg::frame&) {}, [&](const caf::error& e) { why = "prefill: " + self->system().render(e); });
  if (!why.empty()) throw error(errc::io_failure, why);
  self->request(gpu, timeout, first_atom::value, out.ws, s)
      .receive([&](std::int32_t t) { out.first_token = t; },
               [&](const caf::error& e) { why = "first token: " + self->system().render(e); });
  if (!why.empty()) throw error(errc::io_failure, why);
  out.prefill_s = static_cast<double>(now_ns() - t0) / 1e9;
  return out;
}

devices::pinned_buffer pd_pack(workspace& ws) {
  auto& eng = ws.engine();
  devices::net::request_kv r{model::kv_shape_of(eng.cfg(), static_cast<int>(ws.tokens().size()), eng.kv_type()),
                             ws.chunk_tokens()};
  std::vector<std::vector<std::uint8_t>> host(static_cast<std::size_t>(ws.num_chunks()));
  std::vector<const void*> ptrs;
  for (int c = 0; c < ws.num_chunks(); ++c) {
    auto& h = host[static_cast<std::size_t>(c)];
    h.resize(ws.block(c).shape.bytes());
    eng.to_host(h.data(), ws.block(c).data, h.size());
    ptrs.push_back(h.data());
  }
  devices::pinned_buffer out(r.shape.bytes());
  devices::net::pack_chunks(r, ptrs, out.data(), 0, r.shape.layers);
  return out;
}

void pd_handoff(caf::scoped_actor& self, const caf::actor& decode, devices::net::transport& net, pd_prefilled& p,
                std::uint32_t max_new_tokens, const model::sampling& s, const std::vector<std::int32_t>& stop_tokens,
                std::chrono::seconds timeout) {
  auto& ws = *p.ws;
  auto& eng = ws.engine();
  auto staging = pd_pack(ws);
  msg::pd_handoff h;
  h.request_id = ws.request_id();
  h.prompt = ws.tokens();
  h.first_token = p.first_token;
  h.max_new_tokens = max_new_tokens;
  h.temperature = s.temperature;
  h.top_p = s.top_p;
  h.seed = s.seed;
  h.stop_tokens = stop_tokens;
  h.kv.transfer_id = (ws.request_id() << 8) | 1;
  h.kv.shape = model::kv_shape_of(eng.cfg(), static_cast<int>(ws.tokens().size()), eng.kv_type());
  h.kv.chunk_tokens = ws.chunk_tokens();
  h.kv.layer_begin = 0;
  h.kv.layer_end = h.kv.shape.layers;
  h.kv.bytes = h.kv.shape.bytes();
  h.kv.contiguous = true;
  h.kv.pieces = 1;
  h.kv.checksum = devices::net::checksum(staging.data(), h.kv.bytes);
  h.kv.sender = net.address();
  msg::pd_reply ready;
  std::string why;
  auto reply_of = [&](const msg::frame& f) {
    auto r = msg::decode_pd_reply(f.bytes);
    if (!r)
      why = r.error().what();
    else
      ready = *r;
  };
  self->request(decode, timeout, pd_handoff_atom::value, msg::frame{msg::encode(h)})
      .receive(reply_of, [&](const caf::error& e) { why = "handoff: " + self->system().render(e); });
  if (!why.empty()) throw error(errc::peer_down, why);
  if (!ready.ok) throw error(errc::invalid_argument, "decode instance refused the handoff: " + ready.why);
  std::promise<devices::net::moved> sent;
  auto f = sent.get_future();
  devices::net::request_kv r{h.kv.shape, h.kv.chunk_tokens};
  devices::net::send_pieces(net, ready.receiver, h.kv.transfer_id, staging.data(),
                            devices::net::contiguous_pieces(r, 0, r.shape.layers),
                            [&sent](devices::net::moved m) { sent.set_value(m); });
  if (f.wait_for(timeout) != std::future_status::ready) throw error(errc::deadline_exceeded, "KV send timed out");
  auto m = f.get();
  if (!m.ok) throw error(errc::peer_down, "KV send failed: " + m.why);
}

msg::pd_reply pd_collect(caf::scoped_actor& self, const caf::actor& decode, std::uint64_t request_id,
                         std::chrono::seconds timeout) {
  std::string why;
  msg::pd_reply done;
  self->request(decode, timeout, pd_collect_atom::value, request_id)
      .receive(
          [&](const msg::frame& fr) {
            auto r2 = msg::decode_pd_reply(fr.bytes);
            if (!r2)
              why = r2.error().what();
            else
              done = *r2;
          },
          [&](const caf::error& e) { why = "collect: " + self->system().render(e); });
  if (!why.empty()) throw error(errc::peer_down, why);
  return done;
}

msg::pd_reply pd_handoff_and_collect(caf::scoped_actor& self, const caf::actor& decode, devices::net::transport& net,
                                     pd_prefilled& p, std::uint32_t max_new_tokens, const model::sampling& s,
                                     const std::vector<std::int32_t>& stop_tokens, std::chrono::seconds timeout) {
  pd_handoff(self, decode, net, p, max_new_tokens, s, stop_tokens, timeout);
  return pd_collect(self, decode, p.ws->request_id(), timeout);
}

}  // namespace kvflow
