#include "actors/remote_tier_actor.hpp"

#include <algorithm>
#include <fstream>
#include <iterator>
#include <limits>
#include <random>
#include <set>
#include <sstream>

#include <caf/io/middleman.hpp>
#include <caf/io/middleman_actor.hpp>

#include "actors/caf_error.hpp"
#include "actors/clock.hpp"
#include "actors/node_tls.hpp"
#include "actors/tier_actor.hpp"
#include "devices/keys.hpp"
#include "messages/kv_shape.hpp"
#include "messages/log.hpp"
#include "policies/placement.hpp"

namespace kvflow {

using landed_atom = caf::atom_constant<caf::atom("landed")>;
using sent_atom = caf::atom_constant<caf::atom("sent")>;
using expire_atom = caf::atom_constant<caf::atom("expire")>;

cluster_member parse_member(const std::string& line) {
  std::istringstream in(line);
  std::string a, b, rest;
  in >> a >> b >> rest;
  if (a.empty() || !rest.empty())
    throw error(errc::invalid_argument, "cluster member '" + line + "': want [name] host:port");
  cluster_member m;
  auto addr = b.empty() ? a : b;
  auto colon = addr.rfind(':');
  if (colon == std::string::npos || colon == 0)
    throw error(errc::invalid_argument, "cluster member '" + line + "': no host:port");
  m.host = addr.substr(0, colon);
  unsigned long port = 0;
  try {
    std::size_t used = 0;
    port = std::stoul(addr.substr(colon + 1), &used);
    if (used != addr.size() - colon - 1) throw std::invalid_argument("trailing");
  } catch (const std::exception&) {
    port = 0;
  }
  if (port == 0 || port > 65535) throw error(errc::invalid_argument, "cluster member '" + line + "': bad port");
  m.port = static_cast<std::uint16_t>(port);
  m.name = b.empty() ? addr : a;
  return m;
}

std::vector<cluster_member> read_cluster_file(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw error(errc::io_failure, "cannot read cluster file " + path);
  std::vector<cluster_member> out;
  std::string line;
  for (int n = 1; std::getline(in, line); ++n) {
    auto start = line.find_first_not_of(" \t\r");
    if (start == std::string::npos || line[start] == '#') continue;
    // "cert = PATH" and the like: settings (read_cluster_tls), not members.
    if (line.find('=') != std::string::npos) continue;
    try {
      out.push_back(parse_member(line.substr(start)));
    } catch (const error& e) {
      throw error(errc::invalid_argument, path + ":" + std::to_string(n) + ": " + e.what());
    }
  }
  std::set<std::string> names;
  for (auto& m : out)
    if (!names.insert(m.name).second) throw error(errc::invalid_argument, path + ": member " + m.name + " twice");
  if (out.empty()) throw error(errc::invalid_argument, "cluster file " + path + " names no node");
  return out;
}

namespace {

using state_t = caf::stateful_actor<remote_tier_state>;

std::vector<bool> up_mask(const remote_tier_state& st) {
  std::vector<bool> up;
  for (auto& n : st.nodes) up.push_back(n.up);
  return up;
}

void answer_ready(state_t* self);
void start_waiting(state_t* self);

// The scheduler's name of a node's link (0 is the tier as a whole).
std::uint16_t link_of(std::size_t node) {
  return static_cast<std::uint16_t>(std::min<std::size_t>(node + 1, std::numeric_limits<std::uint16_t>::max()));
}

// Rate samples per node, from its grants in grant order: a node's time
// starts where its previous grant's ended, as the tier's does. Grants in
// flight together share the lanes, so one grant's time holds part of the
// next ones' bytes and one may land in no time of its own: one grant alone
// is a poor sample (on the CPU loopback at 0.3 Gbit/s, 5.9 MB took 726 ms
// and the next 13 MB 35 ms). A sample therefore spans grants until it holds
// opts.rate_sample_min of the node's time, or the node has nothing more in
// flight (then nothing is left half-moved).
void sample_nodes(state_t* self, const remote_grant& gr) {
  auto& st = self->state;
  for (auto& [node, landed] : gr.by_node) {
    auto& acc = st.node_acc[node];
    auto start = std::max(gr.issued_ns, acc.last_finished_ns);
    auto finish = std::max(landed.second, start);
    acc.last_finished_ns = finish;
    acc.bytes += landed.first;
    acc.ns += finish - start;
    auto to = caf::actor_cast<caf::actor>(st.opts.rates);
    if (!to || acc.bytes == 0 || acc.ns == 0) continue;
    auto busy = std::any_of(st.fetches.begin(), st.fetches.end(), [n = node](auto& f) { return f.second.node == n; });
    if (busy && acc.ns < static_cast<std::uint64_t>(st.opts.rate_sample_min.count()) * 1000000ull) continue;
    msg::rate_sample s{msg::tier::remote, acc.bytes, acc.ns, link_of(node)};
    acc.bytes = acc.ns = 0;
    self->send(to, msg::encode(s));
  }
}

void fail_grant(state_t* self, std::uint64_t grant, const std::string& why) {
  auto& st = self->state;
  auto g = st.grants.find(grant);
  if (g == st.grants.end()) return;
  for (auto it = st.fetches.begin(); it != st.fetches.end();) {
    if (it->second.grant == grant) {
      // A waiting fetch was never announced; a started one's lease stays
      // with the transport's callback while pieces may still land in it.
      if (it->second.staging) st.net->cancel(it->first);
      it = st.fetches.erase(it);
    } else {
      ++it;
    }
  }
  // not_found: the chunks are lost to this restore; the runtime retries and
  // the new lookup finds them missing (the node is down) and computes them.
  g->second.reply.deliver(make_error(errc::not_found, why));
  st.grants.erase(g);
  answer_ready(self);   // grants behind it wait no more
  start_waiting(self);  // nor fetches waiting for its landing room
}

// A node that died or went silent: its chunks are misses from now on and
// its fetches in flight are lost.
void mark_down(state_t* self, std::size_t node, const std::string& why) {
  auto& st = self->state;
  auto& n = st.nodes[node];
  if (n.up) logger("actors")->warn("remote tier: node {} down: {}", n.member.name, why);
  n.up = false;
  std::set<std::uint64_t> lost;
  for (auto& [id, f] : st.fetches)
    if (f.node == node) lost.insert(f.grant);
  for (auto g : lost) fail_grant(self, g, "node " + n.member.name + " lost: " + why);
}

// Tells a connected node the layout; up once it accepts.
void bring_up(state_t* self, std::size_t node) {
  auto& st = self->state;
  auto& n = st.nodes[node];
  if (!n.handle || n.asking) return;
  n.asking = true;
  self->request(n.handle, st.opts.lookup_timeout, layout_atom::value, msg::encode(st.opts.layout))
      .then(
          [=](const msg::frame&) {
            auto& n = self->state.nodes[node];
            n.asking = false;
            if (!n.up) logger("actors")->info("remote tier: node {} up", n.member.name);
            n.up = true;
          },
          [=](caf::error& e) {
            auto& n = self->state.nodes[node];
            n.asking = false;
            mark_down(self, node, self->system().render(e));
          });
}

void connect(state_t* self, std::size_t node) {
  auto& n = self->state.nodes[node];
  if (n.asking) return;
  n.asking = true;
  auto mm = node_connector(self->system());
  self->request(mm, self->state.opts.retry_interval * 2, caf::connect_atom::value, n.member.host, n.member.port)
      .then(
          [=](const caf::node_id&, caf::strong_actor_ptr& ptr, const std::set<std::string>&) {
            auto& n = self->state.nodes[node];
            n.asking = false;
            if (!ptr) return;
            n.handle = caf::actor_cast<node_actor>(ptr);
            self->monitor(n.handle);
            bring_up(self, node);
          },
          [=](caf::error&) { self->state.nodes[node].asking = false; });
}

void retry_down(state_t* self) {
  auto& st = self->state;
  for (std::size_t i = 0; i < st.nodes.size(); ++i) {
    if (st.nodes[i].up) continue;
    if (st.nodes[i].handle)
      bring_up(self, i);
    else
      connect(self, i);
  }
}

caf::result<msg::frame> lookup(state_t* self, const msg::lookup& q) {
  auto& st = self->state;
  auto owner = policies::first_owners(q.keys, st.names, up_mask(st));
  // One lookup per node, for the keys it owns.
  std::map<std::size_t, std::vector<std::uint32_t>> asked;
  for (std::size_t i = 0; i < owner.size(); ++i)
    if (owner[i] < st.nodes.size()) asked[owner[i]].push_back(static_cast<std::uint32_t>(i));
  auto out = std::make_shared<msg::chunk_located>();
  out->request_id = q.request_id;
  auto reply = self->make_response_promise();
  if (asked.empty()) {
    reply.deliver(msg::encode(*out));
    return reply;
  }
  auto left = std::make_shared<std::size_t>(asked.size());
  for (auto& [node, indices] : asked) {
    msg::lookup sub{q.request_id, {}};
    for (auto i : indices) sub.keys.push_back(q.keys[i]);
    auto finish_one = [=]() mutable {
      if (--*left == 0) {
        std::sort(out->chunks.begin(), out->chunks.end(), [](auto& a, auto& b) { return a.chunk < b.chunk; });
        reply.deliver(msg::encode(*out));
      }
    };
    auto idx = indices;
    auto n = node;
    self->request(st.nodes[node].handle, st.opts.lookup_timeout, lookup_atom::value, msg::encode(sub))
        .then(
            [=](const msg::frame& f) mutable {
              auto decoded = msg::decode(f);
              if (decoded && std::holds_alternative<msg::chunk_located>(*decoded)) {
                for (auto& loc : std::get<msg::chunk_located>(*decoded).chunks) {
                  if (loc.chunk >= idx.size()) continue;
                  loc.chunk = idx[loc.chunk];
                  loc.where = msg::tier::remote;
                  loc.link = link_of(n);
                  out->chunks.push_back(loc);
                }
              }
              finish_one();
            },
            [=](caf::error& e) mutable {
              // A silent or dead node: its chunks are misses.
              mark_down(self, n, "lookup: " + self->system().render(e));
              finish_one();
            });
  }
  return reply;
}

// Answers the grants whose fetches are all in, in the order they came. Over
// several lanes a small grant can land before a large one granted earlier;
// timed as it landed, the link's time would go to the one and its bytes to
// the other, and the scheduler would learn a rate several times the link's
// (at 25 Gbit/s two_pointer then loaded 416 of 512 cells, slower than
// compute alone). In order, a grant's time starts where the previous one's
// ended, as on the disk tier; one that landed meanwhile takes no time and
// gives no rate sample.
void answer_ready(state_t* self) {
  auto& st = self->state;
  while (!st.grants.empty() && st.grants.begin()->second.ready) {
    auto& gr = st.grants.begin()->second;
    gr.done.started_ns = std::max(gr.done.started_ns, st.last_finished_ns);
    gr.done.finished_ns = std::max(gr.done.finished_ns, gr.done.started_ns);
    st.last_finished_ns = gr.done.finished_ns;
    sample_nodes(self, gr);
    gr.reply.deliver(msg::encode(gr.done));
    st.grants.erase(st.grants.begin());
  }
}

// Where a fetch's time went (debug): what a slow first fetch of a restore
// is made of shows here, per stage, on one clock.
void log_fetch(std::uint64_t id, const remote_fetch& f, const std::string& node) {
  auto log = logger("actors");
  if (!log->should_log(spdlog::level::debug)) return;
  auto ms = [](std::uint64_t from, std::uint64_t to) { return from && to >= from ? (to - from) / 1e6 : -1.0; };
  const auto copied = now_ns();
  log->debug(
      "remote fetch {} ({} B, chunks {}-{}, node {}): waited {:.2f} ms for landing room, first piece {:.2f} ms "
      "after asking, last {:.2f} ms after the first, answer {:+.2f} ms from the last, copied in {:.2f} ms",
      id, f.bytes, f.chunk_begin, f.chunk_end, node, ms(f.queued_ns, f.started_ns), ms(f.started_ns, f.first_ns),
      ms(f.first_ns, f.finished_ns), (double(f.answered_ns) - double(f.finished_ns)) / 1e6,
      ms(std::max(f.finished_ns, f.answered_ns), copied));
}

// Copies a checked fetch into the workspace; marks its grant ready when it
// was the last.
void copy_fetch(state_t* self, std::uint64_t id) {
  auto& st = self->state;
  auto it = st.fetches.find(id);
  if (it == st.fetches.end() || !it->second.landed || !it->second.answered) return;
  auto f = std::move(it->second);
  st.fetches.erase(it);
  auto g = st.grants.find(f.grant);
  if (g == st.grants.end()) return;
  if (f.landed_checksum != f.checksum)
    return fail_grant(self, f.grant,
                      "transfer " + std::to_string(id) + " from node " + st.nodes[f.node].member.name +
                          ": checksum differs from its announcement");
  auto& gr = g->second;
  auto& ws = *gr.ws;
  auto lb = static_cast<int>(gr.done.cells.layer_begin), le = static_cast<int>(gr.done.cells.layer_end);
  try {
    std::size_t at = 0;
    for (auto c = f.chunk_begin; c < f.chunk_end; ++c) {
      auto& block = ws.block(static_cast<int>(c));
      auto span = block.shape.span_bytes(lb, le);
      ws.engine().to_backend(static_cast<std::uint8_t*>(block.data) + block.shape.span_offset_bytes(lb),
                             f.staging->data() + at, span);
      at += span;
    }
  } catch (const std::exception& e) {
    return fail_grant(self, f.grant, std::string("copy of a remote fetch: ") + e.what());
  }
  f.staging.reset();  // its slots may take the next fetch (start_waiting, in complete_fetch)
  log_fetch(id, f, st.nodes[f.node].member.name);
  auto& mine = gr.by_node[f.node];
  mine.first += f.bytes;
  mine.second = std::max(mine.second, f.finished_ns);
  gr.done.bytes += f.bytes;
  gr.done.finished_ns = std::max(gr.done.finished_ns, f.finished_ns);
  if (--gr.left > 0) return;
  gr.ready = true;
  gr.done.finished_ns = std::max(gr.done.finished_ns, now_ns());
  answer_ready(self);
}

// copy_fetch, then the fetches waiting for the room it gave back.
void complete_fetch(state_t* self, std::uint64_t id) {
  copy_fetch(self, id);
  start_waiting(self);
}

caf::result<msg::frame> load(state_t* self, const msg::grant& g, workspace_ptr ws) {
  auto& st = self->state;
  if (g.cells.chunk_end > ws->keys().size() || g.cells.chunk_begin >= g.cells.chunk_end)
    return make_error(errc::out_of_range,
                      "remote load grant beyond the cached chunks of request " + std::to_string(g.request_id));
  auto lb = static_cast<int>(g.cells.layer_begin), le = static_cast<int>(g.cells.layer_end);
  std::vector<msg::chunk_key> keys(ws->keys().begin() + g.cells.chunk_begin, ws->keys().begin() + g.cells.chunk_end);
  auto owner = policies::first_owners(keys, st.names, up_mask(st));
  auto grant_id = st.next_id++;
  auto& gr = st.grants[grant_id];
  gr.reply = self->make_response_promise();
  gr.ws = ws;
  gr.done.request_id = g.request_id;
  gr.done.grant_id = g.grant_id;
  gr.done.act = msg::action::load;
  gr.done.cells = g.cells;
  gr.done.started_ns = now_ns();
  gr.issued_ns = gr.done.started_ns;
  auto reply = gr.reply;
  if (!st.landing) {
    fail_grant(self, grant_id, "remote tier has no landing memory (its start failed to make it: see the log)");
    return reply;
  }
  // Consecutive chunks of one owner travel as one transfer, of at most a
  // quarter of the landing slab (one chunk at least): several stay in flight.
  const auto chunk_span = ws->block(static_cast<int>(g.cells.chunk_begin)).shape.span_bytes(lb, le);
  const auto per_fetch =
      std::max<std::size_t>(1, std::max<std::uint64_t>(chunk_span, st.landing->capacity() / 4) / chunk_span);
  for (std::size_t i = 0; i < keys.size();) {
    auto node = owner[i];
    auto j = i + 1;
    while (j < keys.size() && j - i < per_fetch && owner[j] == node) ++j;
    if (node >= st.nodes.size()) {
      fail_grant(self, grant_id, "no node of the cluster is up for chunk " + std::to_string(g.cells.chunk_begin + i));
      return reply;
    }
    remote_fetch f;
    f.grant = grant_id;
    f.node = node;
    f.chunk_begin = g.cells.chunk_begin + static_cast<std::uint32_t>(i);
    f.chunk_end = g.cells.chunk_begin + static_cast<std::uint32_t>(j);
    f.bytes = chunk_span * (j - i);
    f.keys.assign(keys.begin() + static_cast<std::ptrdiff_t>(i), keys.begin() + static_cast<std::ptrdiff_t>(j));
    f.queued_ns = gr.issued_ns;
    const auto id = st.next_id++;
    st.fetches[id] = std::move(f);
    st.waiting.push_back(id);
    ++gr.left;
    i = j;
  }
  start_waiting(self);
  return reply;
}

// Announces fetch `id` (its landing room taken) and asks its node for it.
void start_fetch(state_t* self, std::uint64_t id) {
  auto& st = self->state;
  auto& f = st.fetches.at(id);
  const auto& cells = st.grants.at(f.grant).done.cells;
  msg::transfer t;
  t.transfer_id = id;
  t.keys = f.keys;
  t.layer_begin = cells.layer_begin;
  t.layer_end = cells.layer_end;
  t.bytes = f.bytes;
  t.peer = st.net->address();
  auto me = caf::actor_cast<caf::actor>(self);
  f.started_ns = now_ns();
  try {
    auto staging = f.staging;
    // The callback holds the lease while pieces may land in it, and lets
    // go before it reports, so its slots may serve the next fetch at once.
    st.net->expect(
        id, t.bytes, staging->data(),
        [me, id, staging](devices::net::landed l) mutable {
          staging.reset();
          caf::anon_send(me, landed_atom::value, id, l.ok, l.why, l.finished_ns, l.checksum, l.first_ns);
        },
        // Pieces of one layer's bytes (or less), as the node sends them:
        // the node may send each as a wire_codec frame of it, decoded into
        // its place on the transport's decoding threads.
        devices::net::piece_bytes_for(t.bytes / t.keys.size() / (t.layer_end - t.layer_begin)), true);
  } catch (const std::exception& e) {
    f.staging.reset();
    return fail_grant(self, f.grant, std::string("remote fetch not started: ") + e.what());
  }
  const auto node = f.node;
  auto deadline = st.opts.transfer_timeout +
                  std::chrono::milliseconds(static_cast<long>(t.bytes * 8 / (st.opts.deadline_gbps * 1e6)));
  self->delayed_send(self, deadline, expire_atom::value, id);
  self->request(st.nodes[node].handle, deadline, fetch_atom::value, msg::encode(t))
      .then(
          [=](const msg::frame& answer) {
            auto& st = self->state;
            auto it = st.fetches.find(id);
            if (it == st.fetches.end()) return;
            auto decoded = msg::decode(answer);
            if (!decoded || !std::holds_alternative<msg::transfer>(*decoded) ||
                std::get<msg::transfer>(*decoded).transfer_id != id ||
                std::get<msg::transfer>(*decoded).bytes != it->second.bytes)
              return fail_grant(self, it->second.grant,
                                "node answered fetch " + std::to_string(id) + " with something else");
            it->second.answered = true;
            it->second.answered_ns = now_ns();
            it->second.checksum = std::get<msg::transfer>(*decoded).checksum;
            complete_fetch(self, id);
          },
          [=](caf::error& e) {
            auto& st = self->state;
            auto it = st.fetches.find(id);
            if (it == st.fetches.end()) return;
            auto why = self->system().render(e);
            if (e == caf::sec::request_timeout) mark_down(self, it->second.node, "fetch deadline passed");
            fail_grant(self, it->second.grant, "fetch from node " + st.nodes[it->second.node].member.name + ": " + why);
          });
}

// Starts the waiting fetches, in order, while the landing slab has room for
// the first; the rest wait for slots to return (room_atom, or a fetch
// completed or failed here). The deadline of a fetch runs from its start.
void start_waiting(state_t* self) {
  auto& st = self->state;
  while (!st.waiting.empty()) {
    const auto id = st.waiting.front();
    auto it = st.fetches.find(id);
    if (it == st.fetches.end() || it->second.staging) {  // failed meanwhile
      st.waiting.pop_front();
      continue;
    }
    std::shared_ptr<devices::pinned_slab::lease> room;
    try {
      room = st.landing->take(it->second.bytes);
    } catch (const std::exception& e) {
      st.waiting.pop_front();
      fail_grant(self, it->second.grant, std::string("remote fetch has no landing room: ") + e.what());
      continue;
    }
    if (!room) return;  // the slab tells (room_atom) when slots return
    st.waiting.pop_front();
    it->second.staging = std::move(room);
    start_fetch(self, id);
  }
}

void release_flushes(state_t* self);

void store(state_t* self, const workspace_ptr& ws, std::uint32_t first, std::uint32_t end) {
  auto& st = self->state;
  end = std::min<std::uint32_t>(end, static_cast<std::uint32_t>(ws->keys().size()));
  if (first >= end) return;
  auto up = up_mask(st);
  std::map<std::size_t, std::vector<std::uint32_t>> by_node;
  for (auto c = first; c < end; ++c)
    for (auto n : policies::owners(ws->keys()[c], st.names, 1 + st.opts.replicas, up)) by_node[n].push_back(c);
  auto me = caf::actor_cast<caf::actor>(self);
  for (auto& [node, chunks] : by_node) {
    msg::transfer t;
    t.transfer_id = st.next_id++;
    t.layer_begin = 0;
    t.layer_end = st.opts.layout.layers;
    auto chunk_bytes = ws->block(0).shape.bytes();
    auto buffer = std::make_shared<std::vector<std::uint8_t>>(chunk_bytes * chunks.size());
    for (std::size_t i = 0; i < chunks.size(); ++i) {
      t.keys.push_back(ws->keys()[chunks[i]]);
      ws->engine().to_host(buffer->data() + i * chunk_bytes, ws->block(static_cast<int>(chunks[i])).data, chunk_bytes);
    }
    t.bytes = buffer->size();
    const auto piece = devices::net::piece_bytes_for(chunk_bytes);
    t.checksum = devices::net::checksum(buffer->data(), buffer->size(), piece);
    t.peer = st.net->address();
    auto id = t.transfer_id;
    st.stores[id] = buffer;
    auto name = st.nodes[node].member.name;
    self->request(st.nodes[node].handle, st.opts.transfer_timeout, store_atom::value, msg::encode(t))
        .then(
            [=](const msg::frame& go) {
              auto decoded = msg::decode(go);
              if (!decoded || !std::holds_alternative<msg::transfer>(*decoded) ||
                  std::get<msg::transfer>(*decoded).peer.empty()) {
                logger("actors")->warn("remote tier: node {} answered store {} with something else", name, id);
                self->state.stores.erase(id);
                return release_flushes(self);
              }
              self->state.net->send(std::get<msg::transfer>(*decoded).peer, id, {{buffer->data(), buffer->size()}},
                                    piece, [me, id, buffer](devices::net::sent s) {
                                      caf::anon_send(me, sent_atom::value, id, s.ok, std::move(s.why));
                                    });
            },
            [=](caf::error& e) {
              logger("actors")->warn("remote tier: store {} to node {}: {}", id, name, self->system().render(e));
              self->state.stores.erase(id);
              release_flushes(self);
            });
  }
}

void release_flushes(state_t* self) {
  auto& st = self->state;
  if (!st.stores.empty() || st.flushes.empty()) return;
  auto waiting = std::move(st.flushes);
  st.flushes.clear();
  std::vector<std::size_t> up;
  for (std::size_t i = 0; i < st.nodes.size(); ++i)
    if (st.nodes[i].up) up.push_back(i);
  if (up.empty()) {
    for (auto& p : waiting) p.deliver(true);
    return;
  }
  auto left = std::make_shared<std::size_t>(up.size());
  auto promises = std::make_shared<std::vector<caf::response_promise>>(std::move(waiting));
  auto one = [=]() {
    if (--*left == 0)
      for (auto& p : *promises) p.deliver(true);
  };
  for (auto i : up)
    self->request(st.nodes[i].handle, st.opts.transfer_timeout * 5, flush_atom::value)
        .then([=](bool) { one(); }, [=](caf::error&) { one(); });
}

}  // namespace

caf::behavior remote_tier_proxy(state_t* self, remote_tier_options opts, std::vector<node_actor> nodes,
                                std::shared_ptr<devices::net::transport> net) {
  auto& st = self->state;
  st.opts = std::move(opts);
  st.net = std::move(net);
  std::random_device rd;
  // Below 2^40, so a session's ids stay inside the transport's tag bits.
  st.next_id = ((static_cast<std::uint64_t>(rd()) << 32) | rd()) & ((std::uint64_t{1} << 40) - 1);
  for (std::size_t i = 0; i < st.opts.members.size(); ++i) {
    remote_node n;
    n.member = st.opts.members[i];
    if (i < nodes.size()) n.handle = nodes[i];
    st.names.push_back(n.member.name);
    st.nodes.push_back(std::move(n));
  }
  st.node_acc.assign(st.nodes.size(), {});
  const model::kv_shape shape{static_cast<int>(st.opts.layout.layers), static_cast<int>(st.opts.layout.kv_heads),
                              static_cast<int>(st.opts.layout.tokens), static_cast<int>(st.opts.layout.head_dim),
                              static_cast<model::dtype>(st.opts.layout.dtype)};
  if (const auto cell = shape.layer_bytes(); cell > 0) {
    const auto slots = std::max<std::uint64_t>(st.opts.landing_bytes / devices::align_up(cell), shape.layers);
    const auto t0 = now_ns();
    try {
      st.landing = std::make_unique<devices::pinned_slab>(cell, slots);
      // Slots returned on a lane's thread (a withdrawn fetch's last piece)
      // wake the fetches waiting here. Weak: the slab must not keep the
      // actor alive.
      st.landing->set_on_free([addr = self->address()] {
        if (auto me = caf::actor_cast<caf::actor>(addr)) caf::anon_send(me, room_atom::value);
      });
      logger("actors")->info("remote tier: landing slab of {} slots of {} bytes{} ready in {:.1f} ms", slots,
                             st.landing->slot_bytes(), st.landing->pinned() ? ", page-locked," : "",
                             (now_ns() - t0) / 1e6);
    } catch (const std::exception& e) {
      // Loads fail with this reason; lookups and stores still work.
      logger("actors")->error("remote tier: no landing slab of {} x {} bytes: {}", slots, cell, e.what());
    }
  }
  for (std::size_t i = 0; i < st.nodes.size(); ++i) {
    if (!st.nodes[i].handle) continue;
    self->monitor(st.nodes[i].handle);
    st.nodes[i].up = true;
  }
  self->set_down_handler([=](caf::down_msg& dm) {
    auto& st = self->state;
    for (std::size_t i = 0; i < st.nodes.size(); ++i) {
      if (!st.nodes[i].handle || st.nodes[i].handle.address() != dm.source) continue;
      st.nodes[i].handle = nullptr;
      st.nodes[i].asking = false;
      mark_down(self, i, "connection lost: " + to_string(dm.reason));
    }
  });
  self->delayed_send(self, st.opts.retry_interval, tick_atom::value);
  return {
      [=](const msg::frame& f) -> caf::result<msg::frame> {
        auto decoded = msg::decode(f);
        if (!decoded) return make_error(decoded.error());
        auto* q = std::get_if<msg::lookup>(&*decoded);
        if (!q) return make_error(errc::invalid_argument, "remote tier expects a lookup frame");
        return lookup(self, *q);
      },
      [=](const msg::frame& f, workspace_ptr& ws) -> caf::result<msg::frame> {
        auto decoded = msg::decode(f);
        if (!decoded) return make_error(decoded.error());
        auto* g = std::get_if<msg::grant>(&*decoded);
        if (!g || g->act != msg::action::load || g->source != msg::tier::remote)
          return make_error(errc::invalid_argument, "the remote tier takes remote load grants only");
        return load(self, *g, ws);
      },
      [=](landed_atom, std::uint64_t id, bool ok, const std::string& why, std::uint64_t finished_ns,
          std::uint64_t checksum, std::uint64_t first_ns) {
        auto& st = self->state;
        auto it = st.fetches.find(id);
        if (it == st.fetches.end()) return;
        if (!ok) return fail_grant(self, it->second.grant, why);
        it->second.landed = true;
        it->second.finished_ns = finished_ns;
        it->second.landed_checksum = checksum;
        it->second.first_ns = first_ns;
        complete_fetch(self, id);
      },
      [=](expire_atom, std::uint64_t id) {
        auto& st = self->state;
        auto it = st.fetches.find(id);
        if (it == st.fetches.end()) return;
        // mark_down fails the node's grants and erases their fetches, this
        // one's too: keep what is needed before the entry goes.
        const auto node = it->second.node;
        const auto grant = it->second.grant;
        const auto why = "transfer " + std::to_string(id) + " missed its deadline";
        mark_down(self, node, why);
        fail_grant(self, grant, why);
      },
      [=](room_atom) { start_waiting(self); },
      [=](store_atom, workspace_ptr& ws, std::uint32_t first, std::uint32_t end) { store(self, ws, first, end); },
      [=](sent_atom, std::uint64_t id, bool ok, const std::string& why) {
        if (!ok) logger("actors")->warn("remote tier: store {} not sent: {}", id, why);
        self->state.stores.erase(id);
        release_flushes(self);
      },
      [=](flush_atom) -> caf::result<bool> {
        auto p = self->make_response_promise();
        self->state.flushes.push_back(p);
        release_flushes(self);
        return p;
      },
      [=](tick_atom) {
        retry_down(self);
        self->delayed_send(self, self->state.opts.retry_interval, tick_atom::value);
      },
  };
}

}  // namespace kvflow
