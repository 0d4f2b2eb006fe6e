#include "actors/node.hpp"

#include <cstring>
#include <iterator>
#include <mutex>

#include <caf/stateful_actor.hpp>

#include "actors/atoms.hpp"
#include "actors/caf_error.hpp"
#include "actors/frame_type.hpp"
#include "devices/keys.hpp"
#include "devices/net/wire_codec.hpp"
#include "messages/log.hpp"

namespace kvflow {

using landed_atom = caf::atom_constant<caf::atom("landed")>;
using sent_atom = caf::atom_constant<caf::atom("sent")>;
using expire_atom = caf::atom_constant<caf::atom("expire")>;
using packed_atom = caf::atom_constant<caf::atom("packed")>;

wire_compression parse_wire_compression(const std::string& s) {
  if (s == "off") return wire_compression::off;
  if (s == "on") return wire_compression::on;
  if (s == "auto") return wire_compression::automatic;
  throw error(errc::invalid_argument, "wire compression '" + s + "': want auto, on or off");
}

void packed_cache::put(const msg::chunk_key& key, std::shared_ptr<const packed_chunk> c) {
  std::lock_guard<std::mutex> lock(m_);
  auto it = chunks_.find(key);
  if (it != chunks_.end()) {
    bytes_ -= it->second.chunk->bytes;
    it->second.chunk = std::move(c);
    use_.splice(use_.end(), use_, it->second.use);
  } else {
    it = chunks_.emplace(key, entry{std::move(c), use_.insert(use_.end(), key)}).first;
  }
  bytes_ += it->second.chunk->bytes;
  while (bytes_ > capacity_ && !use_.empty()) {
    auto old = chunks_.find(use_.front());
    use_.pop_front();
    bytes_ -= old->second.chunk->bytes;
    chunks_.erase(old);
  }
}

std::shared_ptr<const packed_chunk> packed_cache::get(const msg::chunk_key& key) {
  std::lock_guard<std::mutex> lock(m_);
  auto it = chunks_.find(key);
  if (it == chunks_.end()) return nullptr;
  use_.splice(use_.end(), use_, it->second.use);
  return it->second.chunk;
}

std::uint64_t packed_cache::bytes() const {
  std::lock_guard<std::mutex> lock(m_);
  return bytes_;
}

/// One fetch: its spans sent straight from where they lie, host leases
/// (held until sent) or disk reads' staging buffers (filled on the I/O
/// thread), as one transfer in pieces of devices::net::piece_bytes_for(span).
struct node_fetch {
  caf::response_promise reply;
  msg::transfer t;
  std::mutex m;
  std::size_t left = 0;
  std::string failed;
  std::vector<devices::host_block> leases;
  std::vector<devices::net::region> regions;                // one per key
  std::vector<devices::pinned_buffer> staging;              // disk reads, one per chunk read
  std::vector<std::shared_ptr<const packed_chunk>> packed;  // per key; null: its pieces go raw
};

namespace {

using tier_t = caf::stateful_actor<node_tier_state>;

model::kv_shape shape_of(const msg::kv_layout& l) {
  return {static_cast<int>(l.layers), static_cast<int>(l.kv_heads), static_cast<int>(l.tokens),
          static_cast<int>(l.head_dim), static_cast<model::dtype>(l.dtype)};
}

bool same_layout(const msg::kv_layout& a, const msg::kv_layout& b) {
  return msg::encode(a).bytes == msg::encode(b).bytes;
}

template <class T>
caf::expected<T> decode_as(const msg::frame& f, const char* what) {
  auto decoded = msg::decode(f);
  if (!decoded) return make_error(decoded.error());
  if (auto* m = std::get_if<T>(&*decoded)) return std::move(*m);
  return make_error(errc::invalid_argument, std::string("expected ") + what + ", got " + msg::kind_name(*decoded));
}

caf::result<msg::frame> set_layout(tier_t* self, const msg::frame& f) {
  auto l = decode_as<msg::kv_layout>(f, "kvLayout");
  if (!l) return l.error();
  auto& st = self->state;
  if (st.layout) {
    if (!same_layout(*st.layout, *l))
      return make_error(errc::invalid_argument, "node " + st.node_id + " holds another model's KV layout");
    return msg::encode(*st.layout);
  }
  if (l->dtype > static_cast<std::uint8_t>(model::dtype::bf16))
    return make_error(errc::invalid_argument, "kvLayout.dtype " + std::to_string(l->dtype));
  if (st.opts.disk_dir.empty())
    return make_error(errc::invalid_argument, "node " + st.node_id + " has no chunk folder");
  try {
    devices::chunk_store_options so;
    so.disk.directory = st.opts.disk_dir;
    so.disk.shape = shape_of(*l);
    so.disk.fingerprint = l->fingerprint;
    so.disk.capacity_bytes = st.opts.disk_gb > 0 ? static_cast<std::uint64_t>(st.opts.disk_gb * 1e9) : 0;
    so.disk.write_queue_cap = 256;
    so.host_capacity_bytes =
        std::max<std::size_t>(static_cast<std::size_t>(st.opts.host_gb * 1e9), so.disk.shape.bytes());
    st.store = std::make_shared<devices::chunk_store>(so);
    if (!st.net) st.net = std::make_shared<devices::net::transport>(st.opts.net);
    if (st.opts.compression != wire_compression::off && st.opts.pack_threads > 0) {
      // Frames are about 0.7 of the chunks: as many as the host tier holds.
      st.packed = std::make_shared<packed_cache>(so.host_capacity_bytes);
      st.packers = std::make_unique<devices::net::work_pool>(st.opts.pack_threads);
    }
  } catch (const error& e) {
    st.store.reset();
    return make_error(e);
  }
  st.layout = *l;
  logger("actors")->info("node {}: serving chunks of {} layers x {} tokens in {}", st.node_id, l->layers, l->tokens,
                         st.opts.disk_dir);
  return msg::encode(*st.layout);
}

caf::result<msg::frame> lookup(tier_t* self, const msg::frame& f) {
  auto q = decode_as<msg::lookup>(f, "lookup");
  if (!q) return q.error();
  auto& st = self->state;
  msg::chunk_located out;
  out.request_id = q->request_id;
  if (!st.store) return msg::encode(out);
  auto found = st.store->lookup(q->keys);
  devices::layer_range all{0, st.layout->layers};
  for (std::size_t i = 0; i < q->keys.size(); ++i) {
    bool host = i < found.host.chunks.size() && found.host.chunks[i].covers(all);
    bool disk = i < found.disk.chunks.size() && found.disk.chunks[i].covers(all);
    if (host || disk)
      out.chunks.push_back(
          {q->keys[i], static_cast<std::uint32_t>(i), msg::tier::remote, st.store->host().block_bytes()});
  }
  return msg::encode(out);
}

// Checks a transfer's layer range and size against the layout; the bytes of
// one span.
caf::expected<std::size_t> span_of(tier_t* self, const msg::transfer& t) {
  auto& st = self->state;
  if (!st.store) return make_error(errc::not_found, "node " + st.node_id + " holds no chunks yet");
  if (t.layer_begin >= t.layer_end || t.layer_end > st.layout->layers)
    return make_error(errc::out_of_range, "transfer " + std::to_string(t.transfer_id) + ": layers [" +
                                              std::to_string(t.layer_begin) + ", " + std::to_string(t.layer_end) +
                                              ") outside the layout");
  auto span = shape_of(*st.layout).span_bytes(static_cast<int>(t.layer_begin), static_cast<int>(t.layer_end));
  if (t.keys.empty() || t.bytes != span * t.keys.size())
    return make_error(errc::invalid_argument, "transfer " + std::to_string(t.transfer_id) + " of " +
                                                  std::to_string(t.bytes) + " bytes for " +
                                                  std::to_string(t.keys.size()) + " spans of " + std::to_string(span));
  if (t.peer.empty()) return make_error(errc::invalid_argument, "transfer without a peer address");
  return span;
}

// Sends a fetch whose spans are all in place (or answers its failure).
void send_fetch(tier_t* self, std::uint64_t job) {
  auto& st = self->state;
  auto it = st.fetches.find(job);
  if (it == st.fetches.end()) return;
  auto fx = it->second;
  std::string failed;
  {
    std::lock_guard<std::mutex> lock(fx->m);
    failed = fx->failed;
  }
  if (!failed.empty()) {
    fx->reply.deliver(make_error(errc::not_found, failed));
    st.fetches.erase(it);
    return;
  }
  auto me = caf::actor_cast<caf::actor>(self);
  // Pieces of a layer's bytes, so that a layer range is whole pieces of
  // the packed chunks; a piece goes as its frame where there is one.
  const auto layer = shape_of(*st.layout).layer_bytes();
  const auto piece = devices::net::piece_bytes_for(layer);
  const auto first = layer * fx->t.layer_begin / piece;
  std::vector<devices::net::outgoing_piece> out;
  std::uint64_t wire = 0;
  for (std::size_t i = 0; i < fx->regions.size(); ++i) {
    const auto& r = fx->regions[i];
    const auto* pk = i < fx->packed.size() ? fx->packed[i].get() : nullptr;
    for (std::size_t at = 0; at < r.bytes; at += piece) {
      const auto p = first + at / piece;
      devices::net::outgoing_piece o{static_cast<const std::uint8_t*>(r.data) + at, piece};
      if (pk && p < pk->frames.size() && !pk->frames[p].empty())
        o = {pk->frames[p].data(), pk->frames[p].size(), true, pk->checksums[p]};
      wire += o.bytes;
      out.push_back(o);
    }
  }
  st.fetched_wire_bytes += wire;
  // The callback holds the fetch: its leases, buffers and frames outlive
  // the send even when this actor goes first.
  st.net->send_pieces(fx->t.peer, fx->t.transfer_id, std::move(out), [me, job, fx](devices::net::sent s) {
    caf::anon_send(me, sent_atom::value, job, s.ok, std::move(s.why), s.checksum);
  });
}

caf::result<msg::frame> fetch(tier_t* self, const msg::frame& f) {
  auto t = decode_as<msg::transfer>(f, "transfer");
  if (!t) return t.error();
  auto span = span_of(self, *t);
  if (!span) return span.error();
  auto& st = self->state;
  auto fx = std::make_shared<node_fetch>();
  fx->t = std::move(*t);
  fx->reply = self->make_response_promise();
  auto job = st.next_job++;
  st.fetches[job] = fx;
  devices::layer_range layers{fx->t.layer_begin, fx->t.layer_end};
  auto offset = shape_of(*st.layout).span_offset_bytes(static_cast<int>(layers.begin));
  std::vector<std::size_t> from_disk;
  fx->regions.resize(fx->t.keys.size());
  if (st.packed) {
    const auto want = shape_of(*st.layout).bytes() / devices::net::piece_bytes_for(shape_of(*st.layout).layer_bytes());
    for (auto& k : fx->t.keys) {
      auto pk = st.packed->get(k);
      fx->packed.push_back(pk && pk->frames.size() == want ? pk : nullptr);
    }
  }
  for (std::size_t i = 0; i < fx->t.keys.size(); ++i) {
    auto lease = st.store->acquire(fx->t.keys[i]);
    if (lease && lease.layers().covers(layers)) {
      fx->regions[i] = {lease.data() + offset, *span};
      fx->leases.push_back(std::move(lease));
    } else {
      from_disk.push_back(i);
    }
  }
  auto reply = fx->reply;
  if (from_disk.empty()) {
    send_fetch(self, job);
    return reply;
  }
  auto& disk = st.store->disk();
  auto me = caf::actor_cast<caf::actor>(self);
  auto slice = devices::align_up(disk.staging_bytes(layers));
  try {
    for (std::size_t n = 0; n < from_disk.size(); ++n) fx->staging.emplace_back(slice, false);
  } catch (const error& e) {
    st.fetches.erase(job);
    return make_error(e);
  }
  fx->left = from_disk.size();
  for (std::size_t n = 0; n < from_disk.size(); ++n) {
    auto i = from_disk[n];
    auto landed = [fx, me, job, i, span = *span](bool ok, const std::uint8_t* data, std::size_t bytes) {
      std::lock_guard<std::mutex> lock(fx->m);
      if (ok && bytes == span)
        fx->regions[i] = {data, span};
      else if (fx->failed.empty())
        fx->failed = "node lacks chunk " + devices::key_hex(fx->t.keys[i]);
      if (--fx->left == 0) caf::anon_send(me, finished_atom::value, job);
    };
    disk.read_async(fx->t.keys[i], layers, fx->staging[n].data(), landed);
  }
  return reply;
}

void answer_sent(tier_t* self, std::uint64_t job, bool ok, const std::string& why, std::uint64_t checksum) {
  auto& st = self->state;
  auto it = st.fetches.find(job);
  if (it == st.fetches.end()) return;
  auto fx = it->second;
  st.fetches.erase(it);
  if (!ok) {
    fx->reply.deliver(make_error(errc::peer_down, "node " + st.node_id + ": " + why));
    return;
  }
  st.fetched_bytes += fx->t.bytes;
  msg::transfer out = fx->t;
  out.checksum = checksum;
  out.peer = st.net->address();
  fx->reply.deliver(msg::encode(out));
}

void release_flushes(tier_t* self) {
  auto& st = self->state;
  if (!st.stores.empty() || st.packing > 0 || st.flushes.empty()) return;
  if (st.store) st.store->flush();
  for (auto& p : st.flushes) p.deliver(true);
  st.flushes.clear();
}

caf::result<msg::frame> announce_store(tier_t* self, const msg::frame& f) {
  auto t = decode_as<msg::transfer>(f, "transfer");
  if (!t) return t.error();
  auto span = span_of(self, *t);
  if (!span) return span.error();
  auto& st = self->state;
  if (t->layer_begin != 0 || t->layer_end != st.layout->layers)
    return make_error(errc::invalid_argument, "a store carries whole chunks (every layer)");
  std::shared_ptr<devices::pinned_buffer> buffer;
  try {
    buffer = std::make_shared<devices::pinned_buffer>(t->bytes, false);
  } catch (const error& e) {
    return make_error(e);
  }
  auto me = caf::actor_cast<caf::actor>(self);
  auto id = t->transfer_id;
  try {
    st.net->expect(
        id, t->bytes, buffer->data(),
        [me, id, buffer](devices::net::landed l) {
          caf::anon_send(me, landed_atom::value, id, l.ok, l.why, l.checksum);
        },
        devices::net::piece_bytes_for(*span));
  } catch (const error& e) {
    return make_error(e);
  }
  self->delayed_send(self, st.opts.store_deadline, expire_atom::value, id);
  msg::transfer go = *t;
  go.peer = st.net->address();
  st.stores[id] = node_store{std::move(buffer), std::move(*t)};
  return msg::encode(go);
}

// Compresses the chunks of a store that landed, once, on the packers:
// fetches then send their frames (none is made in a fetch's time).
void pack(tier_t* self, const msg::transfer& t, const std::shared_ptr<devices::pinned_buffer>& buffer) {
  auto& st = self->state;
  if (!st.packed) return;
  const auto shape = shape_of(*st.layout);
  const auto span = t.bytes / t.keys.size();
  const auto piece = devices::net::piece_bytes_for(shape.layer_bytes());
  const auto elem = model::dtype_size(shape.type);
  const double keep = st.opts.compression == wire_compression::automatic ? 0.9 : 1.0;
  // Weak: a job must not hold the last reference to this actor, whose
  // state (and the pool running the job) would then go on the pool's thread.
  auto me = self->address();
  for (std::size_t i = 0; i < t.keys.size(); ++i) {
    ++st.packing;
    st.packers->post([me, cache = st.packed, key = t.keys[i], buffer, at = i * span, span, piece, elem, keep] {
      auto pk = std::make_shared<packed_chunk>();
      pk->piece_bytes = piece;
      const auto* data = buffer->data() + at;
      for (std::size_t off = 0; off < span; off += piece) {
        auto frame = devices::net::wire_encode(data + off, piece, elem);
        if (frame.size() > static_cast<std::size_t>(keep * static_cast<double>(piece)) || frame.size() >= piece)
          frame.clear();
        pk->bytes += frame.size();
        pk->frames.push_back(std::move(frame));
        pk->checksums.push_back(devices::net::checksum(data + off, piece));
      }
      cache->put(key, std::move(pk));
      if (auto to = caf::actor_cast<caf::actor>(me)) caf::anon_send(to, packed_atom::value);
    });
  }
}

// Bytes of store `id` landed: check them against the announcement, store.
void land_store(tier_t* self, std::uint64_t id, bool ok, const std::string& why, std::uint64_t checksum) {
  auto& st = self->state;
  auto it = st.stores.find(id);
  if (it == st.stores.end()) return;
  auto buffer = std::move(it->second.buffer);
  auto t = std::move(it->second.t);
  st.stores.erase(it);
  if (!ok) {
    logger("actors")->warn("node {}: store {} failed: {}", st.node_id, id, why);
  } else if (checksum != t.checksum) {
    logger("actors")->warn("node {}: store {} refused: checksum differs from its announcement", st.node_id, id);
  } else {
    auto span = t.bytes / t.keys.size();
    devices::layer_range all{0, st.layout->layers};
    for (std::size_t i = 0; i < t.keys.size(); ++i) {
      try {
        st.store->store(t.keys[i], all, buffer->data() + i * span);
      } catch (const error& e) {
        logger("actors")->warn("node {}: store of {} failed: {}", st.node_id, devices::key_hex(t.keys[i]), e.what());
      }
    }
    st.stored_bytes += t.bytes;
    pack(self, t, buffer);
  }
  release_flushes(self);
}

}  // namespace

caf::behavior node_tier(tier_t* self, node_options opts, std::string node_id) {
  self->state.opts = std::move(opts);
  self->state.node_id = std::move(node_id);
  return {
      [=](layout_atom, const msg::frame& f) { return set_layout(self, f); },
      [=](lookup_atom, const msg::frame& f) { return lookup(self, f); },
      [=](fetch_atom, const msg::frame& f) { return fetch(self, f); },
      [=](store_atom, const msg::frame& f) { return announce_store(self, f); },
      [=](landed_atom, std::uint64_t id, bool ok, const std::string& why, std::uint64_t checksum) {
        land_store(self, id, ok, why, checksum);
      },
      [=](expire_atom, std::uint64_t id) {
        auto& st = self->state;
        if (!st.stores.count(id) || !st.net->cancel(id)) return;
        logger("actors")->warn("node {}: store {} expired before its bytes landed", st.node_id, id);
        st.stores.erase(id);
        release_flushes(self);
      },
      [=](finished_atom, std::uint64_t job) { send_fetch(self, job); },
      [=](sent_atom, std::uint64_t job, bool ok, const std::string& why, std::uint64_t checksum) {
        answer_sent(self, job, ok, why, checksum);
      },
      [=](packed_atom) {
        --self->state.packing;
        release_flushes(self);
      },
      [=](flush_atom) -> caf::result<bool> {
        auto& st = self->state;
        if (st.stores.empty() && st.packing == 0) {
          if (st.store) st.store->flush();
          return true;
        }
        auto p = self->make_response_promise();
        st.flushes.push_back(p);
        return p;
      },
  };
}

node_actor::behavior_type node(node_actor::stateful_pointer<node_state> self, msg::node_inventory inventory,
                               node_options opts) {
  self->state.inventory = std::move(inventory);
  self->state.tiers =
      self->spawn<caf::detached + caf::linked>(node_tier, std::move(opts), self->state.inventory.node_id);
  auto tiers = caf::actor_cast<node_actor>(self->state.tiers);
  return {
      [=](inventory_atom) -> msg::frame { return msg::encode(self->state.inventory); },
      [=](const msg::frame& in) -> caf::result<msg::frame> {
        auto decoded = msg::decode(in);
        if (!decoded) {
          logger("actors")->warn("node {}: refused frame of {} bytes: {}", self->state.inventory.node_id,
                                 in.bytes.size(), decoded.error().what());
          return make_error(decoded.error());
        }
        return msg::encode(*decoded);
      },
      [=](layout_atom a, const msg::frame& f) { return self->delegate(tiers, a, f); },
      [=](lookup_atom a, const msg::frame& f) { return self->delegate(tiers, a, f); },
      [=](fetch_atom a, const msg::frame& f) { return self->delegate(tiers, a, f); },
      [=](store_atom a, const msg::frame& f) { return self->delegate(tiers, a, f); },
      [=](flush_atom a) { return self->delegate(tiers, a); },
  };
}

}  // namespace kvflow
