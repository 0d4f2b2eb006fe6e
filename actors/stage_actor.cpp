#include "actors/stage_actor.hpp"

#include <algorithm>
#include <chrono>

#include "actors/atoms.hpp"
#include "actors/caf_error.hpp"
#include "actors/clock.hpp"
#include "actors/frame_type.hpp"
#include "actors/gpu_actor.hpp"
#include "messages/log.hpp"

namespace kvflow {
namespace {

using state_t = caf::stateful_actor<stage_state>;

// A grant passed downstream is answered within this; the request's own
// deadline and its monitor of every stage usually end it sooner.
constexpr auto forward_timeout = std::chrono::minutes(10);

struct part {
  std::uint32_t begin, end;
  bool empty() const { return begin >= end; }
};

part part_of(const stage_layout& layout, const msg::cell_range& cells) {
  return {std::max<std::uint32_t>(cells.layer_begin, static_cast<std::uint32_t>(layout.layer_begin)),
          std::min<std::uint32_t>(cells.layer_end, static_cast<std::uint32_t>(layout.layer_end))};
}

// Writes each chunk's hidden state after this stage's last layer into the
// next stage's buffer of that chunk.
void hand_off(const stage_layout& layout, const stage_next& next, model::engine& eng, stage_entry& e) {
  auto& ws = *e.ws;
  const auto start = now_ns();
  const auto hidden = static_cast<std::size_t>(eng.cfg().hidden);
  for (auto c = e.grant.cells.chunk_begin; c < e.grant.cells.chunk_end; ++c) {
    const int ci = static_cast<int>(c);
    auto& src = ws.stage_hidden(layout.index, ci, eng);
    auto& dst = ws.stage_hidden(layout.index + 1, ci, *next.engine);
    next.link->send(src.data, dst.data, static_cast<std::size_t>(src.tokens) * hidden * sizeof(float));
  }
  ws.handoffs += e.grant.cells.chunk_end - e.grant.cells.chunk_begin;
  ws.handoff_ns += now_ns() - start;
}

void settle(state_t* self, stage_entry& e) {
  auto& st = self->state;
  settle_stage_entry(self, st.layout, st.next, *st.engine, e);
}

void drain(state_t* self) {
  auto& q = self->state.fifo;
  while (!q.empty() && q.front().finished) {
    auto e = std::move(q.front());
    q.pop_front();
    settle(self, e);
  }
}

}  // namespace

caf::expected<msg::grant> stage_grant_of(const msg::frame& f, const workspace& ws, const stage_layout& layout,
                                         int layers, const char* who) {
  auto g = compute_grant_of(f, ws, layers, who);
  if (!g) return g.error();
  if (g->cells.layer_end <= static_cast<std::uint32_t>(layout.layer_begin))
    return make_error(errc::out_of_range, "grant of request " + std::to_string(g->request_id) + " ends above stage " +
                                              std::to_string(layout.index));
  if (ws.stages() <= layout.index)
    return make_error(errc::invalid_argument, "request " + std::to_string(g->request_id) + " has no room for stage " +
                                                  std::to_string(layout.index) + "'s hidden states");
  return g;
}

stage_entry make_stage_entry(caf::event_based_actor* self, std::uint64_t id, const msg::grant& g, workspace_ptr ws,
                             const stage_layout& layout) {
  stage_entry e;
  e.id = id;
  e.grant = g;
  e.ws = std::move(ws);
  e.reply = self->make_response_promise();
  e.queued_ns = now_ns();
  e.runs_here = !part_of(layout, g.cells).empty();
  e.finished = !e.runs_here;  // nothing to run: it leaves in turn
  return e;
}

void settle_stage_entry(caf::event_based_actor* self, const stage_layout& layout, const stage_next& next,
                        model::engine& eng, stage_entry& e) {
  const auto& g = e.grant;
  const auto p = part_of(layout, g.cells);
  const bool continues = g.cells.layer_end > static_cast<std::uint32_t>(layout.layer_end);
  const bool last_layer_ran = !p.empty() && p.end == static_cast<std::uint32_t>(layout.layer_end);
  if (last_layer_ran && next.actor) {
    try {
      hand_off(layout, next, eng, e);
    } catch (const error& err) {
      return e.reply.deliver(make_error(err));
    }
  }
  if (continues) {
    if (!next.actor)
      return e.reply.deliver(make_error(
          errc::out_of_range, "grant of request " + std::to_string(g.request_id) + " reaches past the last stage"));
    auto reply = e.reply;
    const auto started = e.started_ns;
    const bool ran = e.runs_here;
    self->request(next.actor, forward_timeout, msg::encode(g), e.ws)
        .then(
            [reply, started, ran](const msg::frame& f) mutable {
              auto decoded = msg::decode(f);
              auto* done = decoded ? std::get_if<msg::cell_done>(&*decoded) : nullptr;
              if (!done || !ran) return reply.deliver(f);
              // The grant started when this stage started it.
              done->started_ns = std::min(done->started_ns, started);
              reply.deliver(msg::encode(*done));
            },
            [reply, id = g.request_id](caf::error& err) mutable {
              reply.deliver(make_error(
                  errc::peer_down, "request " + std::to_string(id) + ": next stage did not answer: " + to_string(err)));
            });
    return;
  }
  msg::cell_done done;
  done.request_id = g.request_id;
  done.grant_id = g.grant_id;
  done.act = msg::action::compute;
  done.cells = g.cells;
  done.started_ns = e.started_ns;
  done.finished_ns = e.finished_ns;
  done.device = layout.device;
  e.reply.deliver(msg::encode(done));
}

caf::behavior stage_actor(state_t* self, std::shared_ptr<model::engine> engine, stage_layout layout, stage_next next) {
  auto& st = self->state;
  st.engine = std::move(engine);
  st.layout = layout;
  st.next = std::move(next);
  if (st.next.actor && (!st.next.engine || !st.next.link))
    throw error(errc::invalid_argument,
                "stage " + std::to_string(layout.index) + ": a next stage needs its engine and a link");
  auto* eng = st.engine.get();
  return {
      [=](const msg::frame& f, workspace_ptr& ws) -> caf::result<msg::frame> {
        auto& st = self->state;
        auto g = stage_grant_of(f, *ws, st.layout, eng->cfg().layers, "stage actor");
        if (!g) return g.error();
        auto e = make_stage_entry(self, st.next_id++, *g, ws, st.layout);
        const auto p = part_of(st.layout, g->cells);
        auto reply = e.reply;
        if (e.runs_here) {
          msg::cell_range mine = g->cells;
          mine.layer_begin = p.begin;
          mine.layer_end = p.end;
          std::vector<model::chunk_job> jobs;
          try {
            const int index = st.layout.index;
            add_chunk_jobs(*ws, mine, jobs,
                           [&](int c) -> model::hidden_state& { return ws->stage_hidden(index, c, *eng); });
            eng->run_fused(jobs);
            auto me = caf::actor_cast<caf::actor>(self);
            eng->when_done([me, id = e.id] { caf::anon_send(me, finished_atom::value, id, now_ns()); });
          } catch (const error& err) {
            // Nothing of this grant was enqueued (the engine checks first).
            return make_error(err);
          }
        }
        st.fifo.push_back(std::move(e));
        drain(self);
        return reply;
      },
      [=](finished_atom, std::uint64_t id, std::uint64_t finished_ns) {
        auto& st = self->state;
        auto it = std::find_if(st.fifo.begin(), st.fifo.end(), [&](const stage_entry& e) { return e.id == id; });
        if (it == st.fifo.end()) return;
        // Forwards run back to back on the engine (see gpu_actor's finished_atom).
        it->started_ns = std::max(it->queued_ns, st.last_finished_ns);
        it->finished_ns = std::max(finished_ns, it->started_ns);
        st.last_finished_ns = it->finished_ns;
        it->finished = true;
        drain(self);
      },
      [=](first_atom, workspace_ptr& ws, const model::sampling& s) -> caf::result<std::int32_t> {
        auto& st = self->state;
        if (st.layout.layer_end != eng->cfg().layers)
          return make_error(errc::invalid_argument, "stage " + std::to_string(st.layout.index) +
                                                        " is not the last: it has no final hidden state");
        std::vector<float> logits;
        try {
          eng->logits(ws->stage_hidden(st.layout.index, ws->num_chunks() - 1, *eng), logits);
        } catch (const error& e) {
          return make_error(e);
        }
        auto token = model::sample(logits, s, 0);
        ws->generated().push_back(token);
        return token;
      },
  };
}

}  // namespace kvflow
