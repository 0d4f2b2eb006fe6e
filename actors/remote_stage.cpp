#include "actors/remote_stage.hpp"

#include <algorithm>

#include "actors/atoms.hpp"
#include "actors/caf_error.hpp"
#include "actors/clock.hpp"
#include "actors/stage_wire.hpp"
#include "messages/log.hpp"

namespace kvflow {
namespace {

using state_t = caf::stateful_actor<remote_stage_state>;

// Tells the host to drop the sessions of requests that have ended here.
void close_ended(state_t* self) {
  auto& st = self->state;
  for (auto it = st.sessions.begin(); it != st.sessions.end();) {
    if (it->second.ws.expired()) {
      self->send(st.host, close_atom::value, it->first);
      it = st.sessions.erase(it);
    } else {
      ++it;
    }
  }
}

void drain(state_t* self);

void answered(state_t* self, std::uint64_t id, remote_stage_answer a) {
  auto& st = self->state;
  auto it = std::find_if(st.fifo.begin(), st.fifo.end(), [&](const stage_entry& e) { return e.id == id; });
  if (it == st.fifo.end()) return;  // failed already (the host went down)
  it->finished = true;
  it->finished_ns = now_ns();
  st.answers[id] = std::move(a);
  drain(self);
}

// Sends the host the KV of earlier chunks' cells of layers [pb, pe) that it
// has neither computed nor been sent (loaded here from the tiers): per
// layer the runs of missing chunks, runs equal on adjacent layers merged
// into one rectangle, each as one store. Only missing cells go: a cell the
// host computed may not have landed here yet.
void store_missing(state_t* self, const stage_entry& e, remote_stage_session& sess, std::uint32_t pb,
                   std::uint32_t pe) {
  auto& st = self->state;
  auto& ws = *e.ws;
  const auto lb = static_cast<std::uint32_t>(st.layout.layer_begin);
  const auto cb = e.grant.cells.chunk_begin;
  std::vector<msg::cell_range> rects;
  std::vector<std::size_t> open;  // rectangles ending at the previous layer
  for (auto l = pb; l < pe; ++l) {
    std::vector<std::size_t> now;
    auto& row = sess.at_host[l - lb];
    for (std::uint32_t c = 0; c < cb;) {
      if (row[c]) {
        ++c;
        continue;
      }
      auto end = c;
      while (end < cb && !row[end]) row[end++] = true;
      auto same = std::find_if(open.begin(), open.end(),
                               [&](std::size_t r) { return rects[r].chunk_begin == c && rects[r].chunk_end == end; });
      if (same != open.end()) {
        rects[*same].layer_end = l + 1;
        now.push_back(*same);
      } else {
        rects.push_back({c, end, l, l + 1});
        now.push_back(rects.size() - 1);
      }
      c = end;
    }
    open = std::move(now);
  }
  for (const auto& r : rects) {
    msg::grant cells;
    cells.request_id = ws.request_id();
    cells.grant_id = e.grant.grant_id;
    cells.act = msg::action::load;
    cells.cells = r;
    msg::bulk out;
    stage_wire::writer w(out);
    for (auto c = r.chunk_begin; c < r.chunk_end; ++c) w.put_span(ws, static_cast<int>(c), r.layer_begin, r.layer_end);
    st.bytes_sent += out.bytes.size();
    auto announced = stage_wire::announce(e.grant.grant_id, out);
    // Ordered before the grant that attends to it; a refused store drops the
    // session at the host, so that grant fails.
    self->request(st.host, st.deadline, store_atom::value, msg::encode(cells), msg::encode(announced), std::move(out))
        .then([](bool) {},
              [id = ws.request_id()](caf::error& err) {
                logger("actors")->warn("remote stage: a store of request {} was refused: {}", id, to_string(err));
              });
  }
}

// Sends the stage's part [p_begin, p_end) of entry e's grant to the host.
void send_part(state_t* self, stage_entry& e, std::uint32_t pb, std::uint32_t pe) {
  auto& st = self->state;
  auto& ws = *e.ws;
  const auto& g = e.grant;
  const auto id = ws.request_id();
  const auto lb = static_cast<std::uint32_t>(st.layout.layer_begin);
  close_ended(self);
  auto& sess = st.sessions[id];
  if (sess.ws.lock() != e.ws) {
    sess.ws = e.ws;
    sess.at_host.assign(static_cast<std::size_t>(st.layout.layer_end - st.layout.layer_begin),
                        std::vector<bool>(static_cast<std::size_t>(ws.num_chunks()), false));
    msg::register_request reg;
    reg.request_id = id;
    reg.chunk_tokens = static_cast<std::uint32_t>(ws.chunk_tokens());
    reg.num_chunks = static_cast<std::uint32_t>(ws.num_chunks());
    reg.num_layers = static_cast<std::uint32_t>(ws.engine().cfg().layers);
    msg::submit sub;
    sub.request_id = id;
    sub.tokens = ws.tokens();
    // Ordered before the grant that follows (one sender, one receiver); a
    // refused open shows as that grant's error (no session).
    self->request(st.host, st.deadline, open_atom::value, msg::encode(reg), msg::encode(sub))
        .then([](const msg::frame&) {},
              [id](caf::error& err) {
                logger("actors")->warn("remote stage: open of request {} refused: {}", id, to_string(err));
              });
  }
  store_missing(self, e, sess, pb, pe);
  msg::bulk out;
  if (pb == lb && lb > 0) {
    stage_wire::writer w(out);
    for (auto c = g.cells.chunk_begin; c < g.cells.chunk_end; ++c) {
      const int ci = static_cast<int>(c);
      w.put(*st.engine, ws.stage_hidden(st.layout.index, ci, *st.engine).data, stage_wire::hidden_bytes(ws, ci));
    }
  }
  for (auto l = pb; l < pe; ++l)
    for (auto c = g.cells.chunk_begin; c < g.cells.chunk_end; ++c) sess.at_host[l - lb][c] = true;
  st.bytes_sent += out.bytes.size();
  auto announced = stage_wire::announce(g.grant_id, out);
  e.started_ns = now_ns();
  self->request(st.host, st.deadline, stage_atom::value, msg::encode(g), msg::encode(announced), std::move(out))
      .then(
          [self, entry = e.id](msg::frame& done, msg::frame& t, msg::bulk& bytes) {
            remote_stage_answer a;
            a.done = std::move(done);
            a.announced = std::move(t);
            a.bytes = std::move(bytes);
            answered(self, entry, std::move(a));
          },
          [self, entry = e.id](caf::error& err) {
            remote_stage_answer a;
            a.failed = std::move(err);
            answered(self, entry, std::move(a));
          });
}

// Lands the host's answer to e's part: the part's KV in the workspace's
// blocks, its output hidden states in this stage's buffers.
void land(state_t* self, stage_entry& e, const remote_stage_answer& a) {
  auto& st = self->state;
  auto& ws = *e.ws;
  auto done = stage_wire::decode_as<msg::cell_done>(a.done, "cellDone");
  auto t = stage_wire::decode_as<msg::transfer>(a.announced, "transfer");
  stage_wire::check(t, a.bytes, "remote stage " + std::to_string(st.layout.index));
  const auto& c = done.cells;
  const auto layers = static_cast<std::uint32_t>(ws.engine().cfg().layers);
  const auto le = static_cast<std::uint32_t>(st.layout.layer_end);
  const bool hidden = c.layer_end == le && le < layers;
  if (c.chunk_begin != e.grant.cells.chunk_begin || c.chunk_end != e.grant.cells.chunk_end ||
      a.bytes.bytes.size() != stage_wire::bytes_of(ws, c.chunk_begin, c.chunk_end, c.layer_begin, c.layer_end, hidden))
    throw error(errc::malformed_frame, "remote stage " + std::to_string(st.layout.index) +
                                           ": the host answered grant " + std::to_string(e.grant.grant_id) +
                                           " with other cells or bytes than it asked for");
  stage_wire::reader r(a.bytes);
  for (auto ch = c.chunk_begin; ch < c.chunk_end; ++ch)
    r.take_span(ws, static_cast<int>(ch), c.layer_begin, c.layer_end);
  if (hidden)
    for (auto ch = c.chunk_begin; ch < c.chunk_end; ++ch) {
      const int ci = static_cast<int>(ch);
      r.take(*st.engine, ws.stage_hidden(st.layout.index, ci, *st.engine).data, stage_wire::hidden_bytes(ws, ci));
    }
  st.bytes_received += a.bytes.bytes.size();
}

void drain(state_t* self) {
  auto& st = self->state;
  while (!st.fifo.empty() && st.fifo.front().finished) {
    auto e = std::move(st.fifo.front());
    st.fifo.pop_front();
    auto it = st.answers.find(e.id);
    if (it != st.answers.end()) {
      auto a = std::move(it->second);
      st.answers.erase(it);
      if (a.failed) {
        e.reply.deliver(make_error(errc::peer_down, "request " + std::to_string(e.grant.request_id) +
                                                        ": remote stage " + std::to_string(st.layout.index) +
                                                        " failed: " + to_string(a.failed)));
        continue;
      }
      try {
        land(self, e, a);
      } catch (const error& err) {
        e.reply.deliver(make_error(err));
        continue;
      }
    }
    settle_stage_entry(self, st.layout, st.next, *st.engine, e);
  }
}

}  // namespace

caf::behavior remote_stage(state_t* self, stage_host_actor host, std::shared_ptr<model::engine> engine,
                           stage_layout layout, stage_next next, std::chrono::milliseconds deadline) {
  auto& st = self->state;
  st.host = std::move(host);
  st.engine = std::move(engine);
  st.layout = layout;
  st.next = std::move(next);
  st.deadline = deadline;
  if (st.next.actor && (!st.next.engine || !st.next.link))
    throw error(errc::invalid_argument,
                "remote stage " + std::to_string(layout.index) + ": a next stage needs its engine and a link");
  self->monitor(st.host);
  self->set_down_handler([=](const caf::down_msg& dm) {
    auto& st = self->state;
    logger("actors")->warn("remote stage {}: its host went down: {}", st.layout.index, to_string(dm.reason));
    for (auto& e : st.fifo)
      if (!e.finished) {
        e.finished = true;
        st.answers[e.id].failed = make_error(errc::peer_down, "the stage's host went down: " + to_string(dm.reason));
      }
    drain(self);
    self->quit(make_error(errc::peer_down, "remote stage " + std::to_string(st.layout.index) + ": host down"));
  });
  return {
      [=](const msg::frame& f, workspace_ptr& ws) -> caf::result<msg::frame> {
        auto& st = self->state;
        auto g = stage_grant_of(f, *ws, st.layout, ws->engine().cfg().layers, "remote stage");
        if (!g) return g.error();
        auto e = make_stage_entry(self, st.next_id++, *g, ws, st.layout);
        auto reply = e.reply;
        if (e.runs_here) {
          try {
            send_part(self, e, std::max(g->cells.layer_begin, static_cast<std::uint32_t>(st.layout.layer_begin)),
                      std::min(g->cells.layer_end, static_cast<std::uint32_t>(st.layout.layer_end)));
          } catch (const error& err) {
            return make_error(err);
          }
        }
        st.fifo.push_back(std::move(e));
        drain(self);
        return reply;
      },
      [=](first_atom, workspace_ptr& ws, const model::sampling& s) -> caf::result<std::int32_t> {
        auto& st = self->state;
        if (st.layout.layer_end != ws->engine().cfg().layers)
          return make_error(errc::invalid_argument, "stage " + std::to_string(st.layout.index) +
                                                        " is not the last: it has no final hidden state");
        auto rp = self->make_response_promise<std::int32_t>();
        self->request(st.host, st.deadline, first_atom::value, ws->request_id(), s.temperature, s.top_p, s.seed)
            .then(
                [rp, ws](std::int32_t token) mutable {
                  ws->generated().push_back(token);
                  rp.deliver(token);
                },
                [rp, index = st.layout.index](caf::error& err) mutable {
                  rp.deliver(make_error(errc::peer_down, "remote stage " + std::to_string(index) +
                                                             ": no first token: " + to_string(err)));
                });
        return rp;
      },
  };
}

}  // namespace kvflow
