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
#ifdef KVFLOW_HAVE_CUDA
#include "devices/gpu/ipc.hpp"
#include "kernels/cuda/cuda_engine.hpp"
#include "platform/cuda_check.hpp"
#include "platform/cuda_memory.hpp"
#endif

namespace kvflow {

#ifdef KVFLOW_HAVE_CUDA
struct pd_device_side {
  int device = 0;
  cudaStream_t stream = nullptr;
  platform::device_buffer buffer;  ///< the contiguous span (packed to send, or landed)
  devices::ipc_exported exported;  ///< of `buffer`, once a sender exported it
  std::vector<std::uint8_t> handle;
  std::unique_ptr<devices::ipc_mapping> mapped;  ///< the last sender's buffer
  /// Exported buffers outgrown: a decode instance may still map one until
  /// its next handoff, so they live as long as this.
  std::vector<std::pair<platform::device_buffer, devices::ipc_exported>> retired;

  explicit pd_device_side(int d) : device(d) {
    KVFLOW_CUDA_CHECK(cudaSetDevice(device));
    KVFLOW_CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  }
  ~pd_device_side() {
    mapped.reset();
    exported = devices::ipc_exported();
    retired.clear();
    if (stream) KVFLOW_CUDA_OK(cudaStreamDestroy(stream));
  }
  pd_device_side(const pd_device_side&) = delete;
  pd_device_side& operator=(const pd_device_side&) = delete;

  // At least `bytes` of buffer (grown, never shrunk: the next request
  // reuses it and a decode instance keeps its mapping).
  void* buffer_of(std::size_t bytes) {
    KVFLOW_CUDA_CHECK(cudaSetDevice(device));
    if (buffer.size() < bytes) {
      if (!exported.handle().empty()) retired.emplace_back(std::move(buffer), std::move(exported));
      buffer = platform::device_buffer();
      buffer = platform::device_buffer(bytes, device);
    }
    return buffer.data();
  }
  const std::vector<std::uint8_t>& export_buffer() {
    if (exported.handle().empty()) exported = devices::ipc_exported(buffer.data());
    return exported.handle();
  }
  // The sender's buffer behind `h`, mapped once per allocation.
  const void* map(const std::vector<std::uint8_t>& h) {
    if (!mapped || handle != h) {
      mapped.reset();
      handle.clear();
      mapped = std::make_unique<devices::ipc_mapping>(h);
      handle = h;
    }
    return mapped->data();
  }
  void sync() { KVFLOW_CUDA_CHECK(cudaStreamSynchronize(stream)); }
};

namespace {
std::shared_ptr<pd_device_side> device_side_of(model::engine& eng) {
  auto* ce = dynamic_cast<model::cuda_engine*>(&eng);
  return ce ? std::make_shared<pd_device_side>(ce->device()) : nullptr;
}
}  // namespace
#else
struct pd_device_side {};

namespace {
std::shared_ptr<pd_device_side> device_side_of(model::engine&) { return nullptr; }
}  // namespace
#endif

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

std::vector<void*> block_ptrs(workspace& ws) {
  std::vector<void*> out;
  for (int c = 0; c < ws.num_chunks(); ++c) out.push_back(ws.block(c).data);
  return out;
}

// The landed contiguous span (host memory) into the workspace's chunk
// blocks: on a CUDA engine one pinned->device copy and a device relayout,
// else a host relayout and a copy per chunk.
void land_from_host(pd_decode_state& st, pd_incoming& in) {
  const auto& kv = in.handoff.kv;
  devices::net::request_kv r{kv.shape, kv.chunk_tokens};
#ifdef KVFLOW_HAVE_CUDA
  if (st.dev) {
    auto& d = *st.dev;
    void* span = d.buffer_of(kv.bytes);
    KVFLOW_CUDA_CHECK(cudaMemcpyAsync(span, in.staging.data(), kv.bytes, cudaMemcpyHostToDevice, d.stream));
    devices::unpack_chunks_device(r, span, block_ptrs(*in.ws), 0, r.shape.layers, d.stream);
    d.sync();
    return;
  }
#endif
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
}

// A handoff by CUDA IPC: the sender's span copied in ONE call into this
// instance's buffer, then relaid into the chunk blocks on the device.
// Returns why it failed, or empty.
std::string land_by_ipc(pd_decode_state& st, pd_incoming& in) {
#ifdef KVFLOW_HAVE_CUDA
  if (!st.dev) return "CUDA IPC handoff to a decode instance without a CUDA engine";
  try {
    const auto& kv = in.handoff.kv;
    devices::net::request_kv r{kv.shape, kv.chunk_tokens};
    auto& d = *st.dev;
    void* span = d.buffer_of(kv.bytes);
    const void* src = d.map(kv.ipc_handle);
    devices::copy_pieces(span, src, devices::net::contiguous_pieces(r, 0, r.shape.layers), d.stream);
    devices::unpack_chunks_device(r, span, block_ptrs(*in.ws), 0, r.shape.layers, d.stream);
    d.sync();
    in.landed_ns = now_ns();
    return {};
  } catch (const error& e) {
    return e.what();
  }
#else
  (void)st;
  (void)in;
  return "CUDA IPC handoff to a build without CUDA";
#endif
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

// The KV landed: the first token counts, and decoding goes on in the gpu
// actor's batch unless it already ended.
void start_decode(caf::stateful_actor<pd_decode_state>* self, std::uint64_t id) {
  auto& st = self->state;
  auto& in = st.requests.at(id);
  in.ws->generated().push_back(in.handoff.first_token);
  const auto& stops = in.handoff.stop_tokens;
  const int more = static_cast<int>(in.handoff.max_new_tokens) - 1;
  if (more <= 0 || std::find(stops.begin(), stops.end(), in.handoff.first_token) != stops.end())
    return finish(st.requests, id);
  model::sampling s{in.handoff.temperature, in.handoff.top_p, in.handoff.seed};
  self->send(st.gpu, decode_atom::value, in.ws, more, s, stops, caf::actor_cast<caf::actor>(self), decode_hooks{});
}

}  // namespace

caf::behavior pd_decode_actor(caf::stateful_actor<pd_decode_state>* self, std::shared_ptr<model::engine> engine,
                              caf::actor gpu, std::shared_ptr<devices::net::transport> net) {
  self->state.engine = std::move(engine);
  self->state.gpu = std::move(gpu);
  self->state.net = std::move(net);
  self->state.dev = device_side_of(*self->state.engine);
  return {
      [=](pd_handoff_atom, const msg::frame& f) -> msg::frame {
        auto h = msg::decode_pd_handoff(f.bytes);
        if (!h) return frame_of(failed(0, h.error().what()));
        auto& st = self->state;
        const auto id = h->request_id;
        if (st.requests.count(id))
          return frame_of(failed(id, "request " + std::to_string(id) + " already handed over"));
        if (auto why = check_handoff(*h, *st.engine); !why.empty()) return frame_of(failed(id, why));
        const bool ipc = !h->kv.ipc_handle.empty();
        pd_incoming in;
        try {
          in.ws = std::make_shared<workspace>(id, h->prompt, h->kv.chunk_tokens, *st.engine);
          if (!ipc) in.staging = devices::pinned_buffer(h->kv.bytes);
        } catch (const error& e) {
          return frame_of(failed(id, e.what()));
        }
        in.handoff = std::move(*h);
        in.announced_ns = now_ns();
        auto& slot = st.requests.emplace(id, std::move(in)).first->second;
        if (ipc) {
          if (auto why = land_by_ipc(st, slot); !why.empty()) {
            st.requests.erase(id);
            return frame_of(failed(id, why));
          }
          msg::pd_reply landed;
          landed.request_id = id;
          landed.ok = true;
          landed.transfer_ns = slot.landed_ns - slot.announced_ns;
          start_decode(self, id);
          return frame_of(landed);
        }
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
            land_from_host(st, in);
          } catch (const error& e) {
            in.why = e.what();
          }
        }
        in.staging = devices::pinned_buffer();
        if (!in.why.empty()) return finish(st.requests, id);
        start_decode(self, id);
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

pd_path parse_pd_path(const std::string& name) {
  if (name == "host_ucx") return pd_path::host_ucx;
  if (name == "cuda_ipc") return pd_path::cuda_ipc;
  throw error(errc::invalid_argument, "KV path '" + name + "' (use host_ucx or cuda_ipc)");
}

const char* to_string(pd_path p) { return p == pd_path::cuda_ipc ? "cuda_ipc" : "host_ucx"; }

pd_outbox::pd_outbox(devices::net::transport& net, pd_path path) : net_(net), path_(path) {}
pd_outbox::~pd_outbox() = default;

pd_device_side* pd_outbox::device(model::engine& eng) {
  if (!dev_) dev_ = device_side_of(eng);
  return dev_.get();
}

void pd_handoff(caf::scoped_actor& self, const caf::actor& decode, pd_outbox& out, pd_prefilled& p,
                std::uint32_t max_new_tokens, const model::sampling& s, const std::vector<std::int32_t>& stop_tokens,
                std::chrono::seconds timeout) {
  auto& ws = *p.ws;
  auto& eng = ws.engine();
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
  devices::net::request_kv r{h.kv.shape, h.kv.chunk_tokens};
  auto* dev = out.device(eng);
  devices::pinned_buffer staging;
#ifdef KVFLOW_HAVE_CUDA
  if (dev) {
    // The chunk blocks into one device span (a 2D copy per chunk); IPC
    // hands that span over, the host path copies it to pinned memory once.
    std::vector<const void*> blocks;
    for (int c = 0; c < ws.num_chunks(); ++c) blocks.push_back(ws.block(c).data);
    void* span = dev->buffer_of(h.kv.bytes);
    devices::pack_chunks_device(r, blocks, span, 0, r.shape.layers, dev->stream);
    if (out.path() == pd_path::cuda_ipc) {
      h.kv.ipc_handle = dev->export_buffer();
    } else {
      staging = devices::pinned_buffer(h.kv.bytes);
      KVFLOW_CUDA_CHECK(cudaMemcpyAsync(staging.data(), span, h.kv.bytes, cudaMemcpyDeviceToHost, dev->stream));
    }
    dev->sync();
  }
#endif
  if (out.path() == pd_path::cuda_ipc && !dev)
    throw error(errc::unsupported, "pd: the cuda_ipc KV path needs a CUDA engine on both instances");
  if (out.path() == pd_path::host_ucx) {
    if (!dev) staging = pd_pack(ws);
    h.kv.checksum = devices::net::checksum(staging.data(), h.kv.bytes);
    h.kv.sender = out.net().address();
  }
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
  // By IPC the decode instance copied the span before it answered.
  if (out.path() == pd_path::cuda_ipc) return;
  std::promise<devices::net::moved> sent;
  auto f = sent.get_future();
  devices::net::send_pieces(out.net(), ready.receiver, h.kv.transfer_id, staging.data(),
                            devices::net::contiguous_pieces(r, 0, r.shape.layers),
                            [&sent](devices::net::moved m) { sent.set_value(m); });
  if (f.wait_for(timeout) != std::future_status::ready) throw error(errc::deadline_exceeded, "KV send timed out");
  auto m = f.get();
  if (!m.ok) throw error(errc::peer_down, "KV send failed: " + m.why);
}

void pd_handoff(caf::scoped_actor& self, const caf::actor& decode, devices::net::transport& net, pd_prefilled& p,
                std::uint32_t max_new_tokens, const model::sampling& s, const std::vector<std::int32_t>& stop_tokens,
                std::chrono::seconds timeout) {
  pd_outbox out(net);
  pd_handoff(self, decode, out, p, max_new_tokens, s, stop_tokens, timeout);
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

msg::pd_reply pd_handoff_and_collect(caf::scoped_actor& self, const caf::actor& decode, pd_outbox& out, pd_prefilled& p,
                                     std::uint32_t max_new_tokens, const model::sampling& s,
                                     const std::vector<std::int32_t>& stop_tokens, std::chrono::seconds timeout) {
  pd_handoff(self, decode, out, p, max_new_tokens, s, stop_tokens, timeout);
  return pd_collect(self, decode, p.ws->request_id(), timeout);
}

}  // namespace kvflow
