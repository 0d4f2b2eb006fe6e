// The decode instance in-process: a request prefilled on one gpu actor and
// handed to another decodes the same tokens as decoding it where it was
// prefilled; bad handoffs, corrupted KV and unknown requests are refused
// with a reason rather than decoded.

#define BOOST_TEST_MODULE actors.pd_actor
#include <boost/test/unit_test.hpp>

#include <caf/all.hpp>

#include <future>
#include <random>

#include "actors/atoms.hpp"
#include "actors/frame_type.hpp"
#include "actors/gpu_actor.hpp"
#include "actors/pd_actor.hpp"
#include "actors/system_config.hpp"
#include "kernels/model/cpu_engine.hpp"
#include "kernels/model/weights.hpp"
#include "messages/error.hpp"

using namespace kvflow;

namespace {

struct two_instances {
  system_config cfg;
  caf::actor_system sys{cfg};
  std::shared_ptr<model::engine> a_engine, b_engine;
  caf::actor a_gpu, b_gpu, b_decode;
  std::shared_ptr<devices::net::transport> a_net, b_net;

  two_instances() {
    auto w = model::random_weights(model::preset("tiny-test"), 7);
    a_engine = model::make_cpu_engine(w, 1);
    b_engine = model::make_cpu_engine(w, 1);
    a_net = std::make_shared<devices::net::transport>(devices::net::transport_options{"tcp", "lo"});
    b_net = std::make_shared<devices::net::transport>(devices::net::transport_options{"tcp", "lo"});
    a_gpu = caf::actor_cast<caf::actor>(sys.spawn<caf::detached>(gpu_actor, a_engine, 0u));
    b_gpu = caf::actor_cast<caf::actor>(sys.spawn<caf::detached>(gpu_actor, b_engine, 0u));
    b_decode = caf::actor_cast<caf::actor>(sys.spawn(pd_decode_actor, b_engine, b_gpu, b_net));
  }
  ~two_instances() {
    for (auto& a : {a_gpu, b_gpu, b_decode}) caf::anon_send_exit(a, caf::exit_reason::user_shutdown);
  }
};

std::vector<std::int32_t> prompt_of(int n, unsigned seed) {
  std::mt19937 rng(seed);
  std::vector<std::int32_t> p(static_cast<std::size_t>(n));
  for (auto& t : p) t = static_cast<std::int32_t>(rng() % 512);
  return p;
}

// A handoff of a 40-token prompt of `eng`'s model, one contiguous span.
msg::pd_handoff handoff_of(const model::engine& eng, std::uint64_t id) {
  msg::pd_handoff h;
  h.request_id = id;
  h.prompt = prompt_of(40, static_cast<unsigned>(id));
  h.first_token = 3;
  h.max_new_tokens = 4;
  h.kv.transfer_id = id * 100;
  h.kv.shape = model::kv_shape_of(eng.cfg(), 40, eng.kv_type());
  h.kv.chunk_tokens = 16;
  h.kv.layer_begin = 0;
  h.kv.layer_end = h.kv.shape.layers;
  h.kv.bytes = h.kv.shape.bytes();
  h.kv.pieces = 1;
  return h;
}

msg::pd_reply ask(caf::scoped_actor& self, const caf::actor& to, const msg::pd_handoff& h) {
  msg::pd_reply out;
  self->request(to, std::chrono::seconds(10), pd_handoff_atom::value, msg::frame{msg::encode(h)})
      .receive([&](const msg::frame& f) { out = *msg::decode_pd_reply(f.bytes); },
               [&](const caf::error& e) { out.why = "error: " + self->system().render(e); });
  return out;
}

}  // namespace

BOOST_AUTO_TEST_CASE(decode_elsewhere_equals_decode_in_place) {
  two_instances t;
  caf::scoped_actor self{t.sys};
  model::sampling greedy;
  // 150 tokens in chunks of 64: three chunks, the last one short.
  auto p = pd_prefill(self, t.a_gpu, *t.a_engine, 11, prompt_of(150, 3), 64, greedy);
  pd_handoff(self, t.b_decode, *t.a_net, p, 9, greedy, {});
  // The same request decoded where it was prefilled (generated() holds the first token).
  self->send(t.a_gpu, decode_atom::value, p.ws, 8, greedy, std::vector<std::int32_t>{},
             caf::actor_cast<caf::actor>(self), decode_hooks{});
  self->receive([](done_atom, std::uint64_t) {});
  auto got = pd_collect(self, t.b_decode, 11);
  BOOST_TEST(got.ok, got.why);
  BOOST_TEST(got.tokens.size() == 9u);
  BOOST_TEST((got.tokens == p.ws->generated()));
  // Collected once: the request is gone.
  auto again = pd_collect(self, t.b_decode, 11);
  BOOST_TEST(!again.ok);
}

BOOST_AUTO_TEST_CASE(bad_handoffs_are_refused_with_a_reason) {
  two_instances t;
  caf::scoped_actor self{t.sys};
  auto h = handoff_of(*t.b_engine, 5);
  h.kv.pieces = 2;  // not one contiguous span
  auto r = ask(self, t.b_decode, h);
  BOOST_TEST(!r.ok);
  BOOST_TEST(r.why.find("contiguous") != std::string::npos, r.why);
  h.kv.pieces = 1;
  h.kv.shape.kv_heads += 1;  // another model's shape
  h.kv.bytes = h.kv.shape.bytes();
  r = ask(self, t.b_decode, h);
  BOOST_TEST(!r.ok);
  BOOST_TEST(r.why.find("shape") != std::string::npos, r.why);
  self->request(t.b_decode, std::chrono::seconds(5), pd_handoff_atom::value, msg::frame{std::vector<char>(16, 'x')})
      .receive([&](const msg::frame& f) { BOOST_TEST(!msg::decode_pd_reply(f.bytes)->ok); },
               [&](const caf::error&) { BOOST_FAIL("a malformed handoff must be answered"); });
  auto unknown = pd_collect(self, t.b_decode, 999);
  BOOST_TEST(!unknown.ok);
}

BOOST_AUTO_TEST_CASE(kv_that_lands_corrupted_is_not_decoded) {
  two_instances t;
  caf::scoped_actor self{t.sys};
  auto h = handoff_of(*t.b_engine, 6);
  h.kv.checksum = 12345;  // not the bytes' checksum
  auto ready = ask(self, t.b_decode, h);
  BOOST_REQUIRE(ready.ok);
  std::vector<std::uint8_t> bytes(h.kv.bytes, 1);
  std::promise<bool> sent;
  t.a_net->send(ready.receiver, h.kv.transfer_id, bytes.data(), bytes.size(),
                [&](bool ok, std::string) { sent.set_value(ok); });
  BOOST_TEST(sent.get_future().get());
  auto r = pd_collect(self, t.b_decode, 6);
  BOOST_TEST(!r.ok);
  BOOST_TEST(r.why.find("checksum") != std::string::npos, r.why);
}

BOOST_AUTO_TEST_CASE(cuda_ipc_is_refused_without_cuda_engines) {
  two_instances t;
  caf::scoped_actor self{t.sys};
  // A CPU engine has no device buffer to export.
  model::sampling greedy;
  auto p = pd_prefill(self, t.a_gpu, *t.a_engine, 21, prompt_of(40, 5), 16, greedy);
  pd_outbox ipc(*t.a_net, pd_path::cuda_ipc);
  BOOST_CHECK_THROW(pd_handoff(self, t.b_decode, ipc, p, 4, greedy, {}), kvflow::error);
  // A decode instance on a CPU engine cannot map a handle: refused, and the
  // request is not kept.
  auto h = handoff_of(*t.b_engine, 22);
  h.kv.ipc_handle.assign(64, 1);
  auto r = ask(self, t.b_decode, h);
  BOOST_TEST(!r.ok);
  BOOST_TEST(r.why.find("IPC") != std::string::npos, r.why);
  BOOST_TEST(!pd_collect(self, t.b_decode, 22).ok);
  BOOST_TEST(std::string(to_string(parse_pd_path("cuda_ipc"))) == "cuda_ipc");
  BOOST_CHECK_THROW(parse_pd_path("nvlink"), kvflow::error);
}
