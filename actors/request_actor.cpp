#include "actors/request_actor.hpp"

#include <algorithm>
#include <atomic>
#include <memory>
#include <tuple>

#include "actors/atoms.hpp"
#include "actors/caf_error.hpp"
#include "actors/frame_type.hpp"
#include "actors/gpu_actor.hpp"
#include "messages/digest.hpp"
#include "messages/log.hpp"

namespace kvflow {
namespace {

using state_t = caf::stateful_actor<request_state>;

double seconds_since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

bool cancelled(const state_t* self) {
  auto& c = self->state.params.opts.cancel;
  return c && c->load();
}

void finish(state_t* self, std::exception_ptr failure) {
  auto& st = self->state;
  if (st.finished) return;
  st.finished = true;
  st.report.total_s = seconds_since(st.params.submitted);
  msg::progress gone{st.ws->request_id(), 0, 0, true};
  self->send(st.env.scheduler, msg::encode(gone));
  if (st.params.done) st.params.done(failure, failure ? restore_report{} : st.report);
  if (st.env.watchdog) self->send(st.env.watchdog, done_atom::value, self->id());
  // CAF 0.17 keeps a monitor (and with it this actor's memory, through a
  // weak reference) on the monitored actor until it is removed: the
  // scheduler, gpu and tiers live as long as the runtime.
  self->demonitor(st.env.scheduler);
  self->demonitor(st.env.gpu);
  for (auto& t : st.env.tiers) self->demonitor(t.second);
  for (auto& s : st.env.stages) {
    self->demonitor(s.actor);
    for (auto& t : s.tiers) self->demonitor(t.second);
  }
  self->quit();
}

// Ends the request with an error. not_found means a chunk left its tier
// after the lookup (evicted, corrupt, deleted): the runtime restores again
// without it, so it is a warning; anything else is peer_down.
void fail(state_t* self, const std::string& what, errc code = errc::peer_down) {
  auto id = self->state.ws->request_id();
  if (code == errc::not_found)
    logger("actors")->warn("request {}: {}", id, what);
  else
    logger("actors")->error("request {}: {}", id, what);
  finish(self, std::make_exception_ptr(error(code, "request " + std::to_string(id) + ": " + what)));
}

void fail(state_t* self, const caf::error& e) {
  bool lost = e.category() == error_category::value && static_cast<errc>(e.code()) == errc::not_found;
  if (e == caf::sec::request_timeout)
    return fail(self,
                "a step (grant, transfer or first token) ran past its deadline of " +
                    std::to_string(self->state.env.step_timeout.count()) + " ms: " + self->system().render(e),
                errc::deadline_exceeded);
  fail(self, self->system().render(e), lost ? errc::not_found : errc::peer_down);
}

// The request's own deadline: whatever it waits for, it ends here.
void on_deadline(state_t* self) {
  auto& st = self->state;
  if (st.finished) return;
  // Decoding stops at its next step instead of running on for nobody.
  if (st.params.opts.cancel) st.params.opts.cancel->store(true);
  fail(self,
       "past its deadline of " + std::to_string(st.params.deadline.count()) + " ms with " +
           std::to_string(st.cells_done) + " of " + std::to_string(st.cells_total) + " cells restored and " +
           std::to_string(st.ws->generated().size()) + " tokens generated",
       errc::deadline_exceeded);
}

// After the first token: store the prompt's new chunks, and decode.
void decode_and_store(state_t* self) {
  auto& st = self->state;
  auto finish_up = [self] {
    auto& st = self->state;
    st.report.tokens = st.ws->generated();
    auto& stops = st.params.stop_tokens;
    bool stopped =
        !st.report.tokens.empty() && std::find(stops.begin(), stops.end(), st.report.tokens.back()) != stops.end();
    st.report.finish_reason = stopped ? "stop" : cancelled(self) ? "cancelled" : "length";
    if (st.params.detokenize) {
      // The text leaves out the end-of-turn token that stopped decoding.
      auto shown = st.report.tokens;
      if (stopped) shown.pop_back();
      st.report.text = st.params.detokenize(shown);
    }
    finish(self, nullptr);
  };
  if (st.params.opts.store && !st.env.tiers.empty()) {
    // The prompt's KV is final once the first token is out: new full chunks
    // go to the fastest tier now, so that requests sharing the prefix hit
    // it while this one decodes. The tier writes them behind (and demotes
    // to slower tiers) without holding this request up; decoding touches
    // only the decode blocks.
    auto first_new = static_cast<std::uint32_t>(st.report.cached_chunks);
    auto full = static_cast<std::uint32_t>(st.ws->keys().size());
    if (first_new < full) {
      self->send(st.env.tiers.front().second, store_atom::value, st.ws, first_new, full);
      // A cluster's remote tier gets them too: other processes look there.
      for (std::size_t i = 1; i < st.env.tiers.size(); ++i)
        if (st.env.tiers[i].first == msg::tier::remote)
          self->send(st.env.tiers[i].second, store_atom::value, st.ws, first_new, full);
    }
  }
  auto first = st.ws->generated().front();
  bool stop =
      std::find(st.params.stop_tokens.begin(), st.params.stop_tokens.end(), first) != st.params.stop_tokens.end();
  int more = static_cast<int>(st.params.opts.max_new_tokens) - 1;
  if (stop || more <= 0 || cancelled(self)) return finish_up();
  model::sampling s{st.params.opts.temperature, st.params.opts.top_p, st.params.opts.seed};
  // A flag of its own when the caller gave none: the deadline stops decoding with it.
  if (!st.params.opts.cancel) st.params.opts.cancel = std::make_shared<std::atomic<bool>>(false);
  decode_hooks hooks{st.params.opts.on_token, st.params.opts.cancel};
  self->send(st.env.gpu, decode_atom::value, st.ws, more, s, st.params.stop_tokens, caf::actor_cast<caf::actor>(self),
             std::move(hooks));
  self->become(
      caf::keep_behavior, [=](done_atom, std::uint64_t) { finish_up(); }, [=](deadline_atom) { on_deadline(self); });
}

void first_token(state_t* self) {
  auto& st = self->state;
  model::sampling s{st.params.opts.temperature, st.params.opts.top_p, st.params.opts.seed};
  st.report.stage_handoffs = static_cast<std::uint32_t>(st.ws->handoffs.load());
  st.report.handoff_s = static_cast<double>(st.ws->handoff_ns.load()) / 1e9;
  auto last = st.env.stages.empty() ? st.env.gpu : st.env.stages.back().actor;
  self->request(last, st.env.step_timeout, first_atom::value, st.ws, s)
      .then(
          [=](std::int32_t token) {
            auto& st = self->state;
            st.report.first_token = token;
            st.report.ttft_s = seconds_since(st.params.submitted);
            if (st.params.opts.on_token) st.params.opts.on_token(token);
            // Every cell is computed or loaded (a load counts once its copy is
            // done) and decoding has not appended yet: the prompt's KV, hashed
            // outside the TTFT.
            if (st.params.opts.digest_kv) st.report.kv_sha256 = digest_kv(*st.ws);
            decode_and_store(self);
          },
          [=](caf::error& e) { fail(self, e); });
}

void on_cell_done(state_t* self, const msg::frame& f, msg::tier source) {
  auto& st = self->state;
  auto decoded = msg::decode(f);
  if (!decoded) return fail(self, make_error(decoded.error()));
  auto* done = std::get_if<msg::cell_done>(&*decoded);
  if (!done) return fail(self, "expected cellDone, got " + std::string(msg::kind_name(*decoded)));
  auto cells = static_cast<std::uint64_t>(done->cells.chunk_end - done->cells.chunk_begin) *
               (done->cells.layer_end - done->cells.layer_begin);
  st.cells_done += cells;
  if (st.params.opts.trace) {
    auto submitted = static_cast<std::int64_t>(
        std::chrono::duration_cast<std::chrono::nanoseconds>(st.params.submitted.time_since_epoch()).count());
    auto rel = [&](std::uint64_t ns) { return (static_cast<std::int64_t>(ns) - submitted) / 1e9; };
    const auto& c = done->cells;
    st.report.spans.push_back({done->act == msg::action::compute, msg::to_string(source), c.chunk_begin, c.chunk_end,
                               c.layer_begin, c.layer_end, rel(done->started_ns), rel(done->finished_ns)});
  }
  if (done->act == msg::action::compute) {
    st.report.cells_computed += static_cast<std::uint32_t>(cells);
    ++st.report.grants_compute;
  } else {
    st.report.cells_loaded += static_cast<std::uint32_t>(cells);
    ++st.report.grants_load;
  }
  self->send(st.env.scheduler, f);
  // Injected: the same completion again, after later ones (the scheduler
  // must count each grant once).
  if (st.env.faults && st.env.faults->roll(devices::fault::duplicate_completion))
    self->delayed_send(st.env.scheduler, std::chrono::milliseconds(2), f);
  // A cancelled restore ends here; the scheduler drops its other grants.
  if (cancelled(self)) {
    st.report.finish_reason = "cancelled";
    return finish(self, nullptr);
  }
  if (st.cells_done == st.cells_total) first_token(self);
}

caf::actor tier_actor_of(const std::vector<std::pair<msg::tier, caf::actor>>& tiers, msg::tier t) {
  auto it = std::find_if(tiers.begin(), tiers.end(), [&](auto& x) { return x.first == t; });
  return it == tiers.end() ? caf::actor{} : it->second;
}

void count_load(state_t* self, const msg::grant& g, std::uint64_t bytes) {
  auto& r = self->state.report;
  (g.source == msg::tier::disk     ? r.bytes_from_disk
   : g.source == msg::tier::remote ? r.bytes_from_remote
                                   : r.bytes_from_host) += bytes;
  for (auto& t : self->state.report.tiers)
    if (t.tier == msg::to_string(g.source)) t.bytes_loaded += bytes;
}

// A load grant over several stages' layers: each stage loads its own layer
// span of the chunks over its own links, at once; the grant is done when
// every part is (its bytes summed, from the first start to the last finish).
void run_staged_load(state_t* self, const msg::grant& g) {
  auto& st = self->state;
  struct gather {
    std::size_t left = 0;
    msg::cell_done sum;
  };
  auto acc = std::make_shared<gather>();
  acc->sum.request_id = g.request_id;
  acc->sum.grant_id = g.grant_id;
  acc->sum.act = msg::action::load;
  acc->sum.cells = g.cells;
  acc->sum.started_ns = ~std::uint64_t{0};
  std::vector<std::pair<caf::actor, msg::grant>> parts;
  for (auto& s : st.env.stages) {
    msg::grant part = g;
    part.cells.layer_begin = std::max(g.cells.layer_begin, s.layer_begin);
    part.cells.layer_end = std::min(g.cells.layer_end, s.layer_end);
    if (part.cells.layer_begin >= part.cells.layer_end) continue;
    auto target = tier_actor_of(s.tiers.empty() ? st.env.tiers : s.tiers, g.source);
    if (!target) return fail(self, std::string("grant to load from absent tier ") + msg::to_string(g.source));
    parts.emplace_back(target, part);
  }
  acc->left = parts.size();
  for (auto& [target, part] : parts)
    self->request(target, st.env.step_timeout, msg::encode(part), st.ws)
        .then(
            [=](const msg::frame& done) {
              auto decoded = msg::decode(done);
              auto* d = decoded ? std::get_if<msg::cell_done>(&*decoded) : nullptr;
              if (!d) return fail(self, "a stage's tier answered a load with something else");
              acc->sum.bytes += d->bytes;
              acc->sum.started_ns = std::min(acc->sum.started_ns, d->started_ns);
              acc->sum.finished_ns = std::max(acc->sum.finished_ns, d->finished_ns);
              if (--acc->left > 0) return;
              count_load(self, g, acc->sum.bytes);
              on_cell_done(self, msg::encode(acc->sum), g.source);
            },
            [=](caf::error& e) { fail(self, e); });
}

void run_grant(state_t* self, const msg::grant& g, const msg::frame& f) {
  auto& st = self->state;
  caf::actor target = st.env.stages.empty() ? st.env.gpu : st.env.stages.front().actor;
  if (g.act == msg::action::load) {
    if (!st.env.stages.empty()) return run_staged_load(self, g);
    target = tier_actor_of(st.env.tiers, g.source);
    if (!target) return fail(self, std::string("grant to load from absent tier ") + msg::to_string(g.source));
  }
  self->request(target, st.env.step_timeout, f, st.ws)
      .then(
          [=](const msg::frame& done) {
            auto decoded = msg::decode(done);
            if (decoded && std::holds_alternative<msg::cell_done>(*decoded) && g.act == msg::action::load)
              count_load(self, g, std::get<msg::cell_done>(*decoded).bytes);
            on_cell_done(self, done, g.act == msg::action::load ? g.source : msg::tier::gpu);
          },
          [=](caf::error& e) { fail(self, e); });
}

// Asks each tier which chunks it holds, fastest first, then registers.
void lookup_then_register(state_t* self, std::size_t tier_index) {
  auto& st = self->state;
  auto full = st.ws->keys().size();
  if (tier_index == st.env.tiers.size()) {
    // The cached prefix: chunks found somewhere, up to the first gap. The last
    // chunk is always computed: its last row gives the first token.
    std::size_t prefix = 0;
    while (prefix < st.chunk_tier.size() && prefix < full && st.chunk_tier[prefix]) ++prefix;
    prefix = std::min<std::size_t>(prefix, static_cast<std::size_t>(st.ws->num_chunks() - 1));
    st.report.cached_chunks = static_cast<std::uint32_t>(prefix);
    msg::register_request reg;
    reg.request_id = st.ws->request_id();
    reg.chunk_tokens = static_cast<std::uint32_t>(st.ws->chunk_tokens());
    reg.num_chunks = static_cast<std::uint32_t>(st.ws->num_chunks());
    reg.num_layers = static_cast<std::uint32_t>(st.ws->engine().cfg().layers);
    for (std::size_t c = 0; c < prefix; ++c) reg.chunk_tiers.push_back(*st.chunk_tier[c]);
    if (std::any_of(st.chunk_link.begin(), st.chunk_link.begin() + static_cast<std::ptrdiff_t>(prefix),
                    [](std::uint16_t l) { return l != 0; }))
      reg.chunk_links.assign(st.chunk_link.begin(), st.chunk_link.begin() + static_cast<std::ptrdiff_t>(prefix));
    reg.chunk_bytes = st.ws->block(0).shape.bytes();
    st.cells_total = static_cast<std::uint64_t>(reg.num_chunks) * reg.num_layers;
    self->send(st.env.scheduler, msg::encode(reg), st.params.policy, caf::actor_cast<caf::actor>(self));
    return;
  }
  msg::lookup q{st.ws->request_id(), st.ws->keys()};
  self->request(st.env.tiers[tier_index].second, st.env.step_timeout, msg::encode(q))
      .then(
          [=](const msg::frame& f) {
            auto& st = self->state;
            auto decoded = msg::decode(f);
            if (!decoded || !std::holds_alternative<msg::chunk_located>(*decoded))
              return fail(self, "tier answered a lookup with something else");
            auto& found = std::get<msg::chunk_located>(*decoded).chunks;
            st.report.tiers.push_back({msg::to_string(st.env.tiers[tier_index].first),
                                       static_cast<std::uint32_t>(st.ws->keys().size()),
                                       static_cast<std::uint32_t>(found.size()), 0});
            for (auto& loc : found)
              if (loc.chunk < st.chunk_tier.size() && !st.chunk_tier[loc.chunk]) {
                st.chunk_tier[loc.chunk] = loc.where;
                st.chunk_link[loc.chunk] = loc.link;
              }
            lookup_then_register(self, tier_index + 1);
          },
          [=](caf::error& e) { fail(self, e); });
}

}  // namespace

namespace {

using watchdog_actor = caf::stateful_actor<watchdog_state>;

// Arms a CAF timer for `when` unless one in flight fires no later.
void arm(watchdog_actor* self, watchdog_state::clock_type::time_point when) {
  auto& st = self->state;
  if (!st.armed.empty() && *st.armed.begin() <= when) return;
  st.armed.insert(when);
  const auto delay = std::max(when - watchdog_state::clock_type::now(), watchdog_state::clock_type::duration::zero());
  self->delayed_send(self, std::chrono::duration_cast<std::chrono::microseconds>(delay), tick_atom::value,
                     static_cast<std::int64_t>(when.time_since_epoch().count()));
}

}  // namespace

caf::behavior deadline_watchdog(watchdog_actor* self, std::size_t expected_requests) {
  using clock_type = watchdog_state::clock_type;
  self->state.waiting.reserve(expected_requests);
  return {
      [=](deadline_atom, std::uint64_t id, caf::actor& request, std::int64_t ms) {
        auto& st = self->state;
        const auto when = clock_type::now() + std::chrono::milliseconds(ms);
        auto old = st.waiting.find(id);
        if (old != st.waiting.end()) {
          st.due.erase(old->second.at);
          st.waiting.erase(old);
        }
        st.waiting.emplace(id, watchdog_state::entry{std::move(request), st.due.emplace(when, id)});
        arm(self, when);
      },
      [=](tick_atom, std::int64_t armed_for) {
        auto& st = self->state;
        auto fired = st.armed.find(clock_type::time_point(clock_type::duration(armed_for)));
        if (fired != st.armed.end()) st.armed.erase(fired);
        const auto now = clock_type::now();
        while (!st.due.empty() && st.due.begin()->first <= now) {
          auto it = st.waiting.find(st.due.begin()->second);
          st.due.erase(st.due.begin());
          if (it == st.waiting.end()) continue;
          self->send(it->second.request, deadline_atom::value);
          st.waiting.erase(it);
        }
        if (!st.due.empty()) arm(self, st.due.begin()->first);
      },
      [=](done_atom, std::uint64_t id) {
        auto& st = self->state;
        auto it = st.waiting.find(id);
        if (it == st.waiting.end()) return;
        st.due.erase(it->second.at);
        st.waiting.erase(it);
      },
      [=](stats_atom) {
        return std::make_tuple(static_cast<std::uint64_t>(self->state.waiting.size()),
                               static_cast<std::uint64_t>(self->state.armed.size()));
      },
  };
}

caf::behavior request_actor(state_t* self, request_env env, workspace_ptr ws, request_params params) {
  auto& st = self->state;
  st.env = std::move(env);
  st.ws = std::move(ws);
  st.params = std::move(params);
  st.report.request_id = st.ws->request_id();
  st.report.policy = st.params.policy;
  st.report.prompt_tokens = static_cast<std::uint32_t>(st.ws->tokens().size());
  st.report.chunks = static_cast<std::uint32_t>(st.ws->num_chunks());
  st.chunk_tier.assign(st.ws->keys().size(), std::nullopt);
  st.chunk_link.assign(st.ws->keys().size(), 0);
  self->set_down_handler([=](const caf::down_msg& dm) {
    // A tier that went down took its chunks with it: not_found, so that the
    // runtime restores again from the tiers it has now (computing the rest).
    auto& st = self->state;
    for (auto& t : st.env.tiers)
      if (t.second.address() == dm.source)
        return fail(self,
                    std::string("tier ") + msg::to_string(t.first) + " went down mid-restore: " + to_string(dm.reason),
                    errc::not_found);
    fail(self, "a runtime actor went down: " + to_string(dm.reason));
  });
  {
    auto left = std::max(st.params.deadline - std::chrono::duration_cast<std::chrono::milliseconds>(
                                                  std::chrono::steady_clock::now() - st.params.submitted),
                         std::chrono::milliseconds(0));
    if (st.env.watchdog)
      self->send(st.env.watchdog, deadline_atom::value, self->id(), caf::actor_cast<caf::actor>(self),
                 static_cast<std::int64_t>(left.count()));
    else
      self->delayed_send(self, left, deadline_atom::value);
  }
  self->monitor(st.env.scheduler);
  self->monitor(st.env.gpu);
  for (auto& t : st.env.tiers) self->monitor(t.second);
  for (auto& s : st.env.stages) {
    self->monitor(s.actor);
    for (auto& t : s.tiers) self->monitor(t.second);
  }
  lookup_then_register(self, 0);
  return {
      [=](const msg::frame& f) {
        auto decoded = msg::decode(f);
        if (!decoded) return fail(self, make_error(decoded.error()));
        if (auto* g = std::get_if<msg::grant>(&*decoded)) return run_grant(self, *g, f);
        if (auto* e = std::get_if<msg::error_report>(&*decoded)) return fail(self, "scheduler: " + e->context);
        fail(self, std::string("unexpected ") + msg::kind_name(*decoded));
      },
      [=](deadline_atom) { on_deadline(self); },
  };
}

}  // namespace kvflow
