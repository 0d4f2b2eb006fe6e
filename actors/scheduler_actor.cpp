#include "actors/scheduler_actor.hpp"

#include <chrono>

#include "actors/atoms.hpp"
#include "actors/clock.hpp"
#include "actors/frame_type.hpp"
#include "messages/error.hpp"
#include "messages/log.hpp"

namespace kvflow {
namespace {

using state_t = caf::stateful_actor<scheduler_state>;

std::unique_ptr<policies::policy> make(const std::string& name, const policies::cost_model& learned,
                                       const policies::caps& caps) {
  policies::policy_options opts;
  opts.load_queue_chunks = caps.load_queue_chunks;
  // The oracle knows the rates measured in this run in advance: those the
  // cost model has learned from every earlier request.
  if (policies::policy_from_name(name) == policies::policy_kind::oracle) opts.truth = learned;
  return policies::make_policy(name, opts);
}

void refuse(state_t* self, const caf::actor& who, std::uint64_t id, const std::string& why) {
  logger("actors")->error("scheduler: request {} refused: {}", id, why);
  msg::error_report e{static_cast<std::uint16_t>(errc::invalid_argument), why, id};
  self->send(who, msg::encode(e));
}

void tick(state_t* self) {
  auto& st = self->state;
  if (!st.active) return;
  std::vector<msg::grant> grants;
  try {
    grants = st.active->decide(st.batch, st.costs);
  } catch (const error& e) {
    // A policy bug must not hang every request: fail the batch loudly.
    logger("actors")->critical("scheduler: policy {} failed: {}", st.active_name, e.what());
    for (auto& [id, who] : st.requests) refuse(self, who, id, std::string("policy failed: ") + e.what());
    return;
  }
  auto log = logger("actors");
  if (!grants.empty() && log->should_log(spdlog::level::debug)) {
    // What the plan rests on: the scheduler's learned costs (the oracle plans
    // on a snapshot taken when its batch was admitted) and each split.
    std::string splits;
    for (auto& r : st.batch.requests())
      if (auto sp = st.active->planned_split(r.id()))
        splits += fmt::format(" {}:({},{})", r.id(), sp->chunk, sp->layer);
    log->debug(
        "plan: cell {:.3f} ms + {:.4f} ms per chunk, host {:.2f} GB/s + {:.3f} ms, disk {:.2f} GB/s + {:.3f} ms, "
        "remote {:.2f} GB/s + {:.3f} ms ({} samples) per grant; splits{}",
        st.costs.cell_s(0) * 1e3, (st.costs.cell_s(1) - st.costs.cell_s(0)) * 1e3,
        st.costs.bytes_per_s(msg::tier::host) / 1e9, st.costs.latency_s(msg::tier::host) * 1e3,
        st.costs.bytes_per_s(msg::tier::disk) / 1e9, st.costs.latency_s(msg::tier::disk) * 1e3,
        st.costs.bytes_per_s(msg::tier::remote) / 1e9, st.costs.latency_s(msg::tier::remote) * 1e3,
        st.costs.rate_samples(msg::tier::remote), splits);
  }
  for (auto& g : grants) {
    auto it = st.requests.find(g.request_id);
    if (it == st.requests.end()) continue;
    ++st.grants_sent;
    if (g.act == msg::action::compute) st.computing[g.grant_id] = {g.request_id, now_ns()};
    log->debug("grant {} to request {}: {} chunks [{}, {}) layers [{}, {}) from {}", g.grant_id, g.request_id,
               msg::to_string(g.act), g.cells.chunk_begin, g.cells.chunk_end, g.cells.layer_begin, g.cells.layer_end,
               msg::to_string(g.source));
    self->send(it->second, msg::encode(g));
  }
}

void admit(state_t* self, const msg::register_request& reg, const std::string& policy, const caf::actor& who) {
  auto& st = self->state;
  try {
    if (!st.active || st.active_name != policy) {
      st.active = make(policy, st.costs, st.batch.limits());
      st.active_name = policy;
    }
    st.batch.add(reg, std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count());
    st.requests[reg.request_id] = who;
  } catch (const error& e) {
    refuse(self, who, reg.request_id, e.what());
  }
}

// Admits waiting registrations of the front policy once the batch is empty.
void drain_queue(state_t* self) {
  auto& st = self->state;
  if (!st.requests.empty() || st.queue.empty()) return;
  auto policy = st.queue.front().policy;
  while (!st.queue.empty() && st.queue.front().policy == policy) {
    auto w = std::move(st.queue.front());
    st.queue.pop_front();
    admit(self, w.reg, w.policy, w.who);
  }
}

}  // namespace

caf::behavior scheduler_actor(state_t* self, std::string default_policy, policies::caps caps,
                              policies::cost_prior prior, double admission_window_s) {
  self->state.admission_window_s = admission_window_s;
  self->state.batch.set_limits(caps);
  self->state.configured = caps;
  self->state.costs = policies::cost_model(prior);
  return {
      [=](const msg::frame& f, std::string& policy, const caf::actor& who) {
        auto& st = self->state;
        auto decoded = msg::decode(f);
        if (!decoded || !std::holds_alternative<msg::register_request>(*decoded))
          return refuse(self, who, 0, "scheduler expects a register frame");
        auto& reg = std::get<msg::register_request>(*decoded);
        if (policy.empty()) policy = default_policy;
        if (!st.requests.empty() && policy != st.active_name) {
          st.queue.push_back({reg, policy, who});
          return;
        }
        const bool was_empty = st.requests.empty();
        admit(self, reg, policy, who);
        if (was_empty && !st.requests.empty() && st.admission_window_s > 0) {
          // Requests submitted together register over a millisecond or so
          // (H200: 8 in 1.1 ms). Granted loads are never revoked: without
          // the window the first one plans alone and can take 0.1 s of the
          // link before shorter ones arrive (two_pointer's plan then counts
          // it as in flight; the window is off by default, see
          // runtime_options::admission_window_ms).
          st.batch.hold_loads(true);
          self->delayed_send(self, std::chrono::microseconds(static_cast<std::int64_t>(st.admission_window_s * 1e6)),
                             window_atom::value, ++st.windows);
        }
        tick(self);
      },
      [=](window_atom, std::uint64_t window) {
        auto& st = self->state;
        if (window != st.windows || !st.batch.loads_held()) return;
        st.batch.hold_loads(false);
        tick(self);
      },
      [=](const msg::frame& f) {
        auto& st = self->state;
        auto decoded = msg::decode(f);
        if (!decoded) {
          logger("actors")->warn("scheduler: dropped frame: {}", decoded.error().what());
          return;
        }
        // Loads in flight are capped to about `load_window_s` of the link's
        // current rate: a granted load is never revoked, so after a rate drop
        // only that much work stays committed to the slow link.
        auto retune = [&](msg::tier t) {
          auto caps = st.batch.limits();
          auto i = static_cast<std::size_t>(t);
          // A tier of several links (a remote tier's nodes) moves what its
          // links move together; their own samples are also steadier than the
          // tier's per-grant ones, whose grants share the links.
          const double rate = std::max(st.costs.bytes_per_s(t), st.costs.links_bytes_per_s(t));
          caps.load_bytes[i] =
              std::min<std::uint64_t>(st.configured.load_bytes[i],
                                      std::max<std::uint64_t>(1, static_cast<std::uint64_t>(rate * st.load_window_s)));
          st.batch.set_limits(caps);
        };
        if (auto* done = std::get_if<msg::cell_done>(&*decoded)) {
          logger("actors")->debug("done {} of request {}: {} chunks [{}, {}) layers [{}, {}) in {:.1f} ms, {} bytes",
                                  done->grant_id, done->request_id, msg::to_string(done->act), done->cells.chunk_begin,
                                  done->cells.chunk_end, done->cells.layer_begin, done->cells.layer_end,
                                  (done->finished_ns - done->started_ns) / 1e6, done->bytes);
          if (auto sample = st.batch.apply(*done)) {
            st.costs.observe(*sample);
            retune(sample->source);
          }
          if (done->act == msg::action::compute) {
            st.costs.observe(*done);
            if (auto it = st.computing.find(done->grant_id); it != st.computing.end()) {
              auto secs = [](std::uint64_t from, std::uint64_t to) { return (double(to) - double(from)) / 1e9; };
              st.costs.observe_compute_trip(secs(it->second.second, done->started_ns),
                                            done->started_ns > st.gpu_finished_ns, secs(done->finished_ns, now_ns()));
              st.gpu_finished_ns = std::max(st.gpu_finished_ns, done->finished_ns);
              st.computing.erase(it);
            }
          }
        } else if (auto* rate = std::get_if<msg::rate_sample>(&*decoded)) {
          st.costs.observe(*rate);
          logger("actors")->debug("rate {} link {}: {} bytes in {:.1f} ms, learned {:.3f} GB/s",
                                  msg::to_string(rate->source), rate->link, rate->bytes, rate->elapsed_ns / 1e6,
                                  st.costs.bytes_per_s(rate->source, rate->link) / 1e9);
          retune(rate->source);
        } else if (auto* p = std::get_if<msg::progress>(&*decoded)) {
          if (p->done) {
            st.batch.remove(p->request_id);
            st.requests.erase(p->request_id);
            if (st.requests.empty()) st.batch.hold_loads(false);  // the window's batch is gone
            for (auto it = st.computing.begin(); it != st.computing.end();)
              it = it->second.first == p->request_id ? st.computing.erase(it) : std::next(it);
            drain_queue(self);
          }
        }
        tick(self);
      },
      [=](stats_atom) { return caf::make_message(self->state.grants_sent, self->state.costs.compute_samples()); },
      [=](stats_atom, std::uint8_t tier, std::uint16_t link) {
        auto t = static_cast<msg::tier>(std::min<std::size_t>(tier, msg::tier_count - 1));
        auto& c = self->state.costs;
        return caf::make_message(c.rate_samples(t, link), c.bytes_per_s(t, link));
      },
  };
}

}  // namespace kvflow
