#include "actors/gpu_actor.hpp"

#include <algorithm>
#include <chrono>

#include "actors/atoms.hpp"
#include "actors/caf_error.hpp"
#include "actors/clock.hpp"
#include "actors/document_cuda.hpp"
#include "actors/document_request.hpp"
#include "actors/frame_type.hpp"
#include "messages/log.hpp"
#include "policies/batch_state.hpp"

namespace kvflow {

void add_chunk_jobs(workspace& ws, const msg::cell_range& cells, std::vector<model::chunk_job>& jobs,
                    const std::function<model::hidden_state&(int)>& hidden) {
  for (auto c = cells.chunk_begin; c < cells.chunk_end; ++c) {
    model::chunk_job job;
    int ci = static_cast<int>(c);
    job.tokens = ws.tokens().data() + static_cast<std::size_t>(ci) * ws.chunk_tokens();
    job.count = ws.chunk_count(ci);
    job.pos0 = ci * ws.chunk_tokens();
    job.layer_begin = static_cast<int>(cells.layer_begin);
    job.layer_end = static_cast<int>(cells.layer_end);
    job.past = {ws.blocks().data(), ci};
    job.out = ws.block(ci);
    job.hidden = hidden ? hidden(ci) : ws.hidden(ci);
    jobs.push_back(job);
  }
}

caf::expected<msg::grant> compute_grant_of(const msg::frame& f, const workspace& ws, int layers, const char* who) {
  auto decoded = msg::decode(f);
  if (!decoded) return make_error(decoded.error());
  auto* g = std::get_if<msg::grant>(&*decoded);
  if (!g || g->act != msg::action::compute)
    return make_error(errc::invalid_argument, std::string(who) + " takes compute grants only");
  if (g->cells.chunk_end > static_cast<std::uint32_t>(ws.num_chunks()) ||
      g->cells.layer_end > static_cast<std::uint32_t>(layers))
    return make_error(errc::out_of_range, "grant cells outside request " + std::to_string(g->request_id));
  return *g;
}

namespace {

int grant_rows(workspace& ws, const msg::cell_range& cells) {
  int rows = 0;
  for (auto c = cells.chunk_begin; c < cells.chunk_end; ++c) rows += ws.chunk_count(static_cast<int>(c));
  return rows;
}

}  // namespace

double grant_tokens(workspace& ws, const msg::cell_range& cells, int layers) {
  return double(grant_rows(ws, cells)) * double(cells.layer_end - cells.layer_begin) / double(std::max(1, layers));
}

namespace {

// One decode step for every job in `jobs` (each feeds its last token and
// samples the next) as one forward: the products read each weight once for
// all the requests decoding now (continuous batching), attention runs per
// request over its own KV. run_fused keeps every row's bits equal to a step
// run alone, so a reply does not depend on what it was batched with.
void decode_steps(model::engine& eng, std::vector<decode_job*>& jobs) {
  const std::size_t n = jobs.size();
  std::vector<std::int32_t> tokens(n);
  std::vector<std::vector<model::kv_block>> pasts(n);
  std::vector<model::chunk_job> steps(n);
  const std::size_t hidden_bytes = static_cast<std::size_t>(eng.cfg().hidden) * sizeof(float);
  for (std::size_t i = 0; i < n; ++i) {
    auto& ws = *jobs[i]->ws;
    auto& gen = ws.generated();
    tokens[i] = gen.back();
    pasts[i] = ws.all_blocks();
    auto& step = steps[i];
    step.tokens = &tokens[i];
    step.count = 1;
    step.pos0 = static_cast<int>(ws.tokens().size() + gen.size() - 1);
    step.layer_begin = 0;
    step.layer_end = eng.cfg().layers;
    step.past = {pasts[i].data(), static_cast<int>(pasts[i].size())};
    step.out = ws.append_decode_block();
    step.hidden.tokens = 1;
    step.hidden.data = eng.allocate(hidden_bytes);
  }
  struct release_all {
    model::engine& eng;
    std::vector<model::chunk_job>& steps;
    ~release_all() {
      for (auto& s : steps) eng.release(s.hidden.data);
    }
  } guard{eng, steps};
  eng.run_fused(steps);
  std::vector<float> logits;
  for (std::size_t i = 0; i < n; ++i) {
    auto& job = *jobs[i];
    auto& gen = job.ws->generated();
    eng.logits(steps[i].hidden, logits);
    auto next = model::sample(logits, job.sampling, gen.size());
    gen.push_back(next);
    --job.remaining;
    if (job.hooks.on_token) job.hooks.on_token(next);
    if (std::find(job.stop_tokens.begin(), job.stop_tokens.end(), next) != job.stop_tokens.end()) job.remaining = 0;
  }
}

// Answers a grant (or a part of one) with `e`; the rest of a split grant
// is dropped when its turn comes.
void fail_grant(caf::response_promise& reply, const std::shared_ptr<grant_split>& split, const caf::error& e) {
  if (split) {
    if (split->failed) return;
    split->failed = true;
  }
  reply.deliver(e);
}

// Takes from the front of st.queued what a step's budget allows (`budget`
// token-equivalents; <= 0: everything): whole grants while they fit, then
// the leading chunks of the next one that fit (at least one chunk when
// nothing was taken yet, so that every step makes progress). A grant split
// here keeps its other chunks at the front of the queue, sharing a
// grant_split with the part taken. Returns the tokens taken in `tokens`.
std::vector<queued_grant> take_queued(gpu_state& st, double budget, double& tokens) {
  tokens = 0;
  std::vector<queued_grant> out;
  const int layers = st.engine->cfg().layers;
  std::size_t i = 0;
  for (; i < st.queued.size(); ++i) {
    auto& q = st.queued[i];
    if (q.split && q.split->failed) continue;  // an earlier part failed and answered
    auto& cells = q.grant.cells;
    auto end = cells.chunk_begin;
    double used = tokens;
    while (end < cells.chunk_end) {
      const double t = grant_tokens(*q.ws, {end, end + 1, cells.layer_begin, cells.layer_end}, layers);
      if (budget > 0 && used + t > budget && !(out.empty() && end == cells.chunk_begin)) break;
      used += t;
      ++end;
    }
    if (end == cells.chunk_begin) break;
    tokens = used;
    if (end == cells.chunk_end) {
      out.push_back(std::move(q));
      continue;
    }
    if (!q.split) q.split = std::make_shared<grant_split>(grant_split{cells});
    queued_grant part{q.grant, q.ws, q.reply, q.split, false};
    part.grant.cells.chunk_end = end;
    cells.chunk_begin = end;
    out.push_back(std::move(part));
    break;
  }
  st.queued.erase(st.queued.begin(), st.queued.begin() + static_cast<std::ptrdiff_t>(i));
  return out;
}

// Enqueues the compute grants that arrived since the last call as fused
// forwards: all of them, or with `budget` > 0 (a decode step follows) the
// part take_queued allows. Called on the fuse message and before each
// decode step, so a grant that arrived during a step is on the device
// before the next step rather than behind it (a step blocks the actor
// until its logits are back).
void enqueue_queued(caf::stateful_actor<gpu_state>* self, double budget) {
  auto& st = self->state;
  auto* eng = st.engine.get();
  double taken_tokens = 0;
  auto queued = take_queued(st, budget, taken_tokens);
  const int layers = eng->cfg().layers;
  // Consecutive grants of one layer range form a group (a request's
  // grants stay in arrival order: a group never jumps over a grant of
  // another layer range).
  // Past gpu_fuse_rows_free rows, at most half of what arrived a forward
  // (gpu_actor.hpp): the device has the next forward while one's
  // completions travel.
  int arrived = 0;
  for (const auto& q : queued) arrived += grant_rows(*q.ws, q.grant.cells);
  const int fuse_rows = std::max(gpu_fuse_rows_free, std::min(gpu_fuse_rows, arrived / 2));
  for (std::size_t i = 0; i < queued.size();) {
    const auto& first = queued[i].grant.cells;
    std::size_t j = i + 1;
    int rows = grant_rows(*queued[i].ws, first);
    while (j < queued.size() && queued[j].grant.cells.layer_begin == first.layer_begin &&
           queued[j].grant.cells.layer_end == first.layer_end &&
           rows + grant_rows(*queued[j].ws, queued[j].grant.cells) <= fuse_rows) {
      rows += grant_rows(*queued[j].ws, queued[j].grant.cells);
      ++j;
    }
    // A group that fails its checks (nothing was enqueued: the engine
    // checks every job first) runs again one grant at a time, so that
    // one request's bad grant fails only that request.
    std::vector<model::chunk_job> jobs;
    auto enqueue = [&](std::size_t from, std::size_t to) {
      jobs.clear();
      for (std::size_t k = from; k < to; ++k) add_chunk_jobs(*queued[k].ws, queued[k].grant.cells, jobs);
      eng->run_fused(jobs);
    };
    // Taken before enqueuing: the CPU engine computes inside run_fused.
    const std::uint64_t queued_ns = now_ns();
    std::size_t to = j;
    try {
      enqueue(i, to);
    } catch (const error& e) {
      if (j - i == 1) {
        fail_grant(queued[i].reply, queued[i].split, make_error(e));
        i = j;
        continue;
      }
      to = i + 1;
      try {
        enqueue(i, to);
      } catch (const error& e1) {
        fail_grant(queued[i].reply, queued[i].split, make_error(e1));
        ++i;
        continue;
      }
    }
    pending_group group;
    group.queued_ns = queued_ns;
    double group_tokens = 0;
    for (std::size_t k = i; k < to; ++k) {
      auto& q = queued[k];
      pending_grant p{q.reply, {}, q.split, q.last};
      p.done.request_id = q.grant.request_id;
      p.done.grant_id = q.grant.grant_id;
      p.done.act = msg::action::compute;
      p.done.cells = q.grant.cells;
      p.done.device = st.device;
      group.grants.push_back(std::move(p));
      group_tokens += grant_tokens(*q.ws, q.grant.cells, layers);
    }
    if (budget > 0) group.budget_share = group_tokens / budget;
    i = to;
    auto id = st.next_job++;
    auto it = st.pending.emplace(id, std::move(group)).first;
    if (budget > 0) st.step_group = id;
    // The engine calls back from its driver thread when the device has
    // finished this group: hand that over as a message to this actor.
    auto me = caf::actor_cast<caf::actor>(self);
    try {
      eng->when_done([me, id] { caf::anon_send(me, finished_atom::value, id, now_ns()); });
    } catch (const error& e) {
      for (auto& p : it->second.grants) fail_grant(p.reply, p.split, make_error(e));
      st.pending.erase(it);
    }
  }
}

// Whether a request is decoding: compute grants then wait for a step's budget.
bool budget_applies(const gpu_state& st) {
  if (st.step_tokens <= 0) return false;
  for (auto& job : st.decoding)
    if (job.remaining > 0 && !(job.hooks.cancel && job.hooks.cancel->load())) return true;
  return false;
}

// Adds a sample of a decode step's own time to the decayed mean.
void observe_step(gpu_state& st, double ns) {
  if (ns <= 0) return;
  st.decode_step_ns = st.decode_step_ns > 0 ? 0.8 * st.decode_step_ns + 0.2 * ns : ns;
}

}  // namespace

caf::behavior gpu_actor(caf::stateful_actor<gpu_state>* self, std::shared_ptr<model::engine> engine,
                        std::uint32_t device) {
  return budgeted_gpu_actor(self, std::move(engine), device, default_step_prefill_tokens);
}

caf::behavior budgeted_gpu_actor(caf::stateful_actor<gpu_state>* self, std::shared_ptr<model::engine> engine,
                                 std::uint32_t device, int step_tokens) {
  // The actor is the engine's only driver from now on.
  self->state.engine = std::move(engine);
  self->state.device = device;
  self->state.step_tokens = std::max(0, step_tokens);
  auto* eng = self->state.engine.get();
  // The device document path's buffers, kept between its requests.
  auto doc_scratch = make_document_scratch();
  return {
      [=](const msg::frame& f, workspace_ptr& ws) -> caf::result<msg::frame> {
        auto g = compute_grant_of(f, *ws, eng->cfg().layers, "gpu actor");
        if (!g) return g.error();
        // Queued until the fuse message this sends itself comes back: grants
        // already in the mailbox behind this one join the same forward.
        auto reply = self->make_response_promise();
        self->state.queued.push_back({*g, ws, reply});
        if (!self->state.fuse_scheduled) {
          self->state.fuse_scheduled = true;
          self->send(self, fuse_atom::value);
        }
        return reply;
      },
      [=](fuse_atom) {
        self->state.fuse_scheduled = false;
        // While requests decode, the next step takes grants by its budget.
        if (!budget_applies(self->state)) enqueue_queued(self, 0);
      },
      [=](finished_atom, std::uint64_t id, std::uint64_t finished_ns) {
        auto& st = self->state;
        auto it = st.pending.find(id);
        if (it == st.pending.end()) return;
        auto& group = it->second;
        // Groups run back to back on the device: this one started when it
        // was enqueued or when the one before it finished, whichever is
        // later. Its grants share that time in proportion to their cells
        // (the cost model learns compute seconds per cell from these times).
        const std::uint64_t start = std::max(group.queued_ns, st.last_finished_ns);
        std::uint64_t end = std::max(finished_ns, start);
        // The last group before a step: the step ran right after it.
        if (id == st.step_group && st.step_end_ns > end) observe_step(st, double(st.step_end_ns - end));
        // A budgeted group pays its share of the step it rode with (never
        // past now: the step is over when this message is handled).
        if (group.budget_share > 0 && st.decode_step_ns > 0)
          end = std::max(end,
                         std::min(now_ns(), end + static_cast<std::uint64_t>(group.budget_share * st.decode_step_ns)));
        st.last_finished_ns = end;
        std::uint64_t cells = 0, before = 0;
        for (auto& p : group.grants) cells += policies::cell_count(p.done.cells);
        for (auto& p : group.grants) {
          const std::uint64_t n = policies::cell_count(p.done.cells);
          p.done.started_ns = start + (end - start) * before / std::max<std::uint64_t>(cells, 1);
          before += n;
          p.done.finished_ns = start + (end - start) * before / std::max<std::uint64_t>(cells, 1);
          if (p.split) {
            // A part of a split grant: the last answers for the whole grant,
            // timed by its parts' device time (not the steps between them).
            p.split->busy_ns += p.done.finished_ns - p.done.started_ns;
            if (!p.last || p.split->failed) continue;
            p.done.cells = p.split->cells;
            p.done.started_ns = p.done.finished_ns - std::min(p.split->busy_ns, p.done.finished_ns);
          }
          p.reply.deliver(msg::encode(p.done));
        }
        st.pending.erase(it);
      },
      // Document path (actors/document_request.hpp): placement and selective recompute.
      [=](blend_atom, document_work_ptr& w) -> caf::result<bool> {
        try {
          if (!w->scratch) w->scratch = doc_scratch;
          run_document_work(*eng, *w);
        } catch (const error& e) {
          return make_error(e);
        }
        return true;
      },
      [=](first_atom, workspace_ptr& ws, const model::sampling& s) -> caf::result<std::int32_t> {
        std::vector<float> logits;
        try {
          eng->logits(ws->hidden(ws->num_chunks() - 1), logits);
        } catch (const error& e) {
          return make_error(e);
        }
        auto token = model::sample(logits, s, 0);
        ws->generated().push_back(token);
        return token;
      },
      [=](decode_atom, workspace_ptr& ws, int n, const model::sampling& s, std::vector<std::int32_t>& stop,
          const caf::actor& reply_to, decode_hooks& hooks) {
        self->state.decoding.push_back({ws, n, s, std::move(stop), reply_to, std::move(hooks)});
        if (!self->state.step_scheduled) {
          self->state.step_scheduled = true;
          self->send(self, step_atom::value);
        }
      },
      [=](step_atom) {
        auto& st = self->state;
        st.step_scheduled = false;
        auto& active = st.decoding;
        std::vector<decode_job*> stepping;
        for (auto& job : active) {
          // A cancelled job (its client went away) frees its slot now.
          if (job.hooks.cancel && job.hooks.cancel->load()) job.remaining = 0;
          if (job.remaining > 0) stepping.push_back(&job);
        }
        // Restore compute rides with the step, at most the budget of it.
        const bool budgeted = !stepping.empty() && st.step_tokens > 0;
        st.step_group = ~std::uint64_t{0};
        if (!st.queued.empty()) enqueue_queued(self, budgeted ? st.step_tokens : 0);
        // Nothing left on the device before the step: its time is its own.
        const bool alone = st.pending.empty();
        if (!stepping.empty()) {
          const std::uint64_t step_start = now_ns();
          try {
            decode_steps(*eng, stepping);
          } catch (const error& e) {
            // A batch fails as a whole (run_fused checks every job before
            // running any); the requests end here rather than retrying a
            // step whose KV block may be half written.
            for (auto* job : stepping) {
              logger("actors")->error("decode of request {} failed: {}", job->ws->request_id(), e.what());
              job->remaining = 0;
            }
          }
          st.step_end_ns = now_ns();
          if (alone) observe_step(st, double(st.step_end_ns - step_start));
        }
        // Finished jobs report; the rest take another step after whatever
        // compute cells arrived meanwhile (continuous batching).
        for (auto it = active.begin(); it != active.end();) {
          if (it->remaining <= 0) {
            self->send(it->reply_to, done_atom::value, it->ws->request_id());
            it = active.erase(it);
          } else {
            ++it;
          }
        }
        if (!active.empty()) {
          st.step_scheduled = true;
          self->send(self, step_atom::value);
        } else if (!st.queued.empty()) {
          enqueue_queued(self, 0);  // the last request finished: full speed again
        }
      },
  };
}

}  // namespace kvflow
