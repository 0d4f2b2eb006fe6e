// Fuzz target: the node protocol, what an authenticated peer's socket
// delivers to `kvflow node`'s actor. One node (a host tier in front of a
// disk tier in a temporary folder, UCX on loopback) with a small KV layout
// serves a sequence of messages the input encodes as records
//   [op][length, 2 bytes][payload]
// op & 7: 0 an echo frame, 1 a layout, 2 a lookup, 3 a fetch, 4 a store
// (the payload as the frame's bytes; with op & 8, as CAF's serialization of
// a msg::frame, as the middleman delivers it), 5 a flush, 6 a transfer built
// from the payload's fields (id, layer range, keys, byte count exact or
// not, a peer address) sent as fetch or store by op & 8, 7 a lookup of keys
// from the payload.
// Properties: nothing crashes; every request is answered (a frame or an
// error) within 10 s; a lookup's answer is a chunkLocated naming only keys
// it asked for; a refused frame's error is kvflow's.

#include <caf/actor_system.hpp>
#include <caf/binary_deserializer.hpp>
#include <caf/scoped_actor.hpp>

#include <unistd.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <optional>
#include <set>

#include "actors/atoms.hpp"
#include "actors/caf_error.hpp"
#include "actors/frame_type.hpp"
#include "actors/node.hpp"
#include "actors/system_config.hpp"
#include "messages/codec.hpp"
#include "messages/error.hpp"
#include "messages/log.hpp"
#include "tests/fuzz/fuzz_check.hpp"

using namespace kvflow;

namespace {

// 2 layers x 1 head x 16 tokens x 8 dims of f32: 2 KiB chunks.
msg::kv_layout small_layout() {
  msg::kv_layout l;
  l.fingerprint.fill(7);
  l.layers = 2;
  l.kv_heads = 1;
  l.tokens = 16;
  l.head_dim = 8;
  l.dtype = 0;
  return l;
}

struct world {
  std::filesystem::path dir =
      std::filesystem::temp_directory_path() / ("kvflow-node-fuzz-" + std::to_string(::getpid()));
  system_config cfg;
  caf::actor_system sys{cfg};
  node_actor node;
  world() {
    init_logging("error");  // a warning per refused frame would slow the fuzzer down
    node_options o;
    o.host_gb = 2e-5;  // a few chunks: lookups and fetches reach the disk tier
    o.disk_dir = dir.string();
    o.net.tls = "tcp";
    o.net.devices = "lo";
    o.store_deadline = std::chrono::milliseconds(200);
    node = sys.spawn(kvflow::node, msg::node_inventory{"fuzz", "", 0, {}, {}}, o);
    caf::scoped_actor self{sys};
    bool ok = false;
    self->request(node, std::chrono::seconds(30), layout_atom::value, msg::encode(small_layout()))
        .receive([&](const msg::frame&) { ok = true; },
                 [&](caf::error& e) { std::fprintf(stderr, "layout: %s\n", sys.render(e).c_str()); });
    KVFLOW_FUZZ_CHECK(ok, "the node refused the fuzzer's layout");
  }
};

// Never destroyed: tearing the actor system down among the exit handlers
// crashed inside CAF 0.17.6's ~actor_system (a static's destructor runs
// after CAF's own); only the folder goes.
world& the_world() {
  static world* w = [] {
    auto* made = new world;
    std::atexit([] {
      std::error_code ec;
      std::filesystem::remove_all(the_world().dir, ec);
    });
    return made;
  }();
  return *w;
}

struct reader {
  const std::uint8_t* p;
  std::size_t n;
  std::uint64_t take(std::size_t bytes) {
    std::uint64_t v = 0;
    for (std::size_t i = 0; i < bytes && n > 0; ++i, ++p, --n) v |= std::uint64_t{*p} << (8 * i);
    return v;
  }
};

msg::chunk_key key_from(reader& r) {
  msg::chunk_key k{};
  k[0] = static_cast<std::uint8_t>(r.take(1) % 4);  // few distinct keys, so some repeat
  return k;
}

// Sends and waits for the answer (of type R); the answer when there is one.
template <class R = msg::frame, class... Ts>
std::optional<R> ask(world& w, Ts&&... xs) {
  caf::scoped_actor self{w.sys};
  std::optional<R> out;
  bool answered = false;
  self->request(w.node, std::chrono::seconds(10), std::forward<Ts>(xs)...)
      .receive(
          [&](const R& r) {
            answered = true;
            out = r;
          },
          [&](caf::error& e) {
            KVFLOW_FUZZ_CHECK(e != caf::sec::request_timeout, "the node did not answer within 10 s");
            answered = true;
          });
  KVFLOW_FUZZ_CHECK(answered, "no answer");
  return out;
}

msg::frame raw_frame(const std::uint8_t* data, std::size_t size, bool caf_serialized) {
  msg::frame f;
  if (caf_serialized) {
    caf::binary_deserializer source{nullptr, reinterpret_cast<const char*>(data), size};
    if (source(f)) f.bytes.clear();
  } else {
    f.bytes.assign(reinterpret_cast<const char*>(data), reinterpret_cast<const char*>(data) + size);
  }
  return f;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  auto& w = the_world();
  reader in{data, size};
  for (int messages = 0; in.n >= 3 && messages < 16; ++messages) {
    auto op = static_cast<std::uint8_t>(in.take(1));
    auto len = std::min<std::size_t>(in.take(2), in.n);
    reader payload{in.p, len};
    in.p += len;
    in.n -= len;
    const bool alt = (op & 8) != 0;
    switch (op & 7) {
      case 0:
        ask(w, raw_frame(payload.p, payload.n, alt));
        break;
      case 1:
        ask(w, layout_atom::value, raw_frame(payload.p, payload.n, alt));
        break;
      case 2:
        ask(w, lookup_atom::value, raw_frame(payload.p, payload.n, alt));
        break;
      case 3:
        ask(w, fetch_atom::value, raw_frame(payload.p, payload.n, alt));
        break;
      case 4:
        ask(w, store_atom::value, raw_frame(payload.p, payload.n, alt));
        break;
      case 5:
        ask<bool>(w, flush_atom::value);
        break;
      case 6: {
        msg::transfer t;
        t.transfer_id = payload.take(1);
        t.layer_begin = static_cast<std::uint32_t>(payload.take(1) % 4);
        t.layer_end = static_cast<std::uint32_t>(payload.take(1) % 4);
        auto keys = payload.take(1) % 6;
        for (std::uint64_t i = 0; i < keys; ++i) t.keys.push_back(key_from(payload));
        auto span = t.layer_end > t.layer_begin ? std::uint64_t{1024} * (t.layer_end - t.layer_begin) : 0;
        t.bytes = payload.take(1) % 2 ? span * keys : payload.take(3);
        t.checksum = payload.take(8);
        auto peer = payload.take(1) % 64;
        for (std::uint64_t i = 0; i < peer; ++i) t.peer.push_back(static_cast<std::uint8_t>(payload.take(1)));
        msg::frame f;
        try {
          f = msg::encode(t);  // checks what a well-behaved sender would (raw frames send the rest)
        } catch (const kvflow::error&) {
          break;
        }
        if (alt)
          ask(w, store_atom::value, f);
        else
          ask(w, fetch_atom::value, f);
        break;
      }
      case 7: {
        msg::lookup q;
        q.request_id = payload.take(2);
        std::set<msg::chunk_key> asked;
        auto keys = payload.take(1) % 8;
        for (std::uint64_t i = 0; i < keys; ++i) asked.insert(q.keys.emplace_back(key_from(payload)));
        auto answer = ask(w, lookup_atom::value, msg::encode(q));
        KVFLOW_FUZZ_CHECK(answer.has_value(), "a well-formed lookup was refused");
        auto d = msg::decode(*answer);
        KVFLOW_FUZZ_CHECK(d && std::holds_alternative<msg::chunk_located>(*d), "a lookup answered with another kind");
        for (auto& c : std::get<msg::chunk_located>(*d).chunks)
          KVFLOW_FUZZ_CHECK(asked.count(c.key) == 1, "a lookup answered a key it was not asked");
        break;
      }
    }
  }
  return 0;
}
