#include "actors/document_request.hpp"

#include <algorithm>
#include <cstring>

#include "actors/atoms.hpp"
#include "actors/caf_error.hpp"
#include "actors/document_cuda.hpp"
#include "actors/gpu_actor.hpp"
#include "devices/document_store.hpp"
#include "kernels/cpu/rope.hpp"
#include "messages/error.hpp"
#include "messages/log.hpp"
#include "policies/recompute_ratio.hpp"

namespace kvflow {
namespace {

using clock_type = std::chrono::steady_clock;

double seconds_since(clock_type::time_point t) { return std::chrono::duration<double>(clock_type::now() - t).count(); }

}  // namespace

policies::recompute_plan choose_document_plan(const document_params& p, const model::config& c, model::dtype kv,
                                              int device_groups) {
  policies::recompute_plan plan;
  if (p.blend.ratio >= 0) {
    plan.ratio = std::min(1.0, p.blend.ratio);
    return plan;
  }
  policies::recompute_inputs in;
  for (const auto& s : p.segments) (s.document ? in.document_tokens : in.other_tokens) += s.count;
  in.layers = c.layers;
  in.check_layers = p.blend.selection == model::token_selection::cacheblend ? p.blend.check_layers : 0;
  in.token_layer_s = p.rates ? p.rates->token_layer_s() : 0;
  in.load_bytes_per_s = p.rates ? p.rates->load_bytes_per_s() : 0;
  in.kv_bytes_per_token_layer = 2.0 * c.kv_heads * c.head_dim * static_cast<double>(model::dtype_size(kv));
  in.split_front = true;
  if (device_groups > 0) {
    // The device path: EPIC's rows run in device_groups forwards as their
    // loads land; cacheblend's check layers overlap the loads, the layers
    // above them wait for the last one.
    in.tail_share = in.check_layers > 0 ? 1.0 - static_cast<double>(std::min(in.check_layers, c.layers)) / c.layers
                                        : 1.0 / device_groups;
  }
  const double tokens = in.document_tokens + in.other_tokens;
  in.fixed_s = p.rates ? p.rates->overhead_s() : 0;
  in.full_recompute_s = p.rates ? p.rates->full_s(tokens) : 0;
  if (in.token_layer_s <= 0 || in.load_bytes_per_s <= 0) {
    plan.ratio = in.min_ratio;
    return plan;
  }
  return policies::choose_recompute_ratio(in);
}

policies::recompute_plan choose_document_plan(const document_params& p, const model::engine& e) {
  const bool device = e.kv_type() != model::dtype::f32;
  return choose_document_plan(p, e.cfg(), e.kv_type(), device ? p.device_groups : 0);
}

std::vector<bool> documents_in_full(const document_params& p, const policies::recompute_plan& plan) {
  int total = 0;
  for (const auto& s : p.segments)
    if (s.document) total += s.count;
  const double front = plan.full_recompute ? total : plan.front_share * total;
  std::vector<bool> out;
  int upto = 0;
  std::size_t d = 0;
  for (const auto& s : p.segments) {
    if (!s.document) continue;
    upto += s.count;
    out.push_back(upto <= front + 0.5 && p.store && devices::has_document(*p.store, p.keys[d]));
    ++d;
  }
  return out;
}

void run_document_work(model::engine& e, document_work& w) {
  if (e.kv_type() != model::dtype::f32) return run_document_work_device(e, w);
  const model::config& c = e.cfg();
  workspace& ws = *w.ws;
  const auto& tokens = ws.tokens();
  const int n = static_cast<int>(tokens.size());
  const auto ps = model::kv_shape_of(c, n, model::dtype::f32);
  std::vector<float> prompt(ps.bytes() / sizeof(float), 0.0f);
  const auto inv = cpu::rope_inv_freq(c.head_dim, c.rope_theta, c.scaling);
  std::size_t d = 0;
  for (const auto& s : w.segments) {
    if (!s.document) continue;
    const auto ds = model::kv_shape_of(c, s.count, model::dtype::f32);
    if (!w.loaded[d])
      model::document_kv(e, std::vector<std::int32_t>(tokens.begin() + s.begin, tokens.begin() + s.begin + s.count),
                         {w.documents[d].data(), ds});
    model::place_document({w.documents[d].data(), ds}, s.begin, {prompt.data(), ps}, inv);
    ++d;
  }
  const auto t0 = clock_type::now();
  w.result = model::blend_prefill(e, tokens, w.segments, {prompt.data(), ps}, w.blend);
  w.compute_s = seconds_since(t0);
  // The prompt's rows into the workspace's chunk blocks, then the last
  // position's hidden state where first_atom reads it.
  for (int ci = 0; ci < ws.num_chunks(); ++ci) {
    model::kv_block& b = ws.block(ci);
    const int t0c = ci * ws.chunk_tokens();
    for (int l = 0; l < c.layers; ++l)
      for (int k = 0; k < 2; ++k)
        for (int h = 0; h < c.kv_heads; ++h)
          e.to_backend(static_cast<float*>(b.data) + b.shape.offset(l, k, h, 0, 0),
                       prompt.data() + ps.offset(l, k, h, t0c, 0),
                       sizeof(float) * static_cast<std::size_t>(b.shape.tokens) * c.head_dim);
  }
  model::hidden_state& last = ws.hidden(ws.num_chunks() - 1);
  e.to_backend(static_cast<float*>(last.data) + static_cast<std::size_t>(last.tokens - 1) * c.hidden,
               w.result.last_hidden.data(), sizeof(float) * c.hidden);
}

void document_rates::observe_compute(double token_layers, double seconds) {
  if (token_layers <= 0 || seconds <= 0) return;
  std::lock_guard<std::mutex> lock(mutex_);
  const double sample = seconds / token_layers;
  token_layer_s_ = token_layer_s_ > 0 ? 0.7 * token_layer_s_ + 0.3 * sample : sample;
}

void document_rates::observe_load(double bytes, double seconds) {
  if (bytes <= 0 || seconds <= 0) return;
  std::lock_guard<std::mutex> lock(mutex_);
  const double sample = bytes / seconds;
  load_bytes_per_s_ = load_bytes_per_s_ > 0 ? 0.7 * load_bytes_per_s_ + 0.3 * sample : sample;
}

void document_rates::observe_full(double tokens, double ttft_s) {
  if (tokens < min_full_tokens || ttft_s <= 0) return;
  std::lock_guard<std::mutex> lock(mutex_);
  const double sample = ttft_s / tokens;
  full_token_s_ = full_token_s_ > 0 ? 0.7 * full_token_s_ + 0.3 * sample : sample;
}

void document_rates::observe_overhead(double seconds) {
  std::lock_guard<std::mutex> lock(mutex_);
  overhead_s_ = overhead_seen_ ? 0.7 * overhead_s_ + 0.3 * seconds : seconds;
  overhead_seen_ = true;
}

double document_rates::full_s(double tokens) const {
  std::lock_guard<std::mutex> lock(mutex_);
  return full_token_s_ * tokens;
}

double document_rates::overhead_s() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return std::max(0.0, overhead_s_);
}

double document_rates::token_layer_s() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return token_layer_s_;
}

double document_rates::load_bytes_per_s() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return load_bytes_per_s_;
}

caf::behavior document_request_actor(caf::stateful_actor<document_request_state>* self, caf::actor gpu,
                                     workspace_ptr ws, document_params params) {
  auto p = std::make_shared<document_params>(std::move(params));
  auto report = std::make_shared<restore_report>();
  auto finished = std::make_shared<bool>(false);
  // The estimate (seconds) of a reuse plan the cost model chose, whose TTFT
  // teaches the path's fixed cost; 0: nothing to learn (a fixed ratio, a
  // full recompute, documents computed alone).
  auto planned_s = std::make_shared<double>(0);
  auto finish = [=](std::exception_ptr failure) {
    if (*finished) return;
    *finished = true;
    report->total_s = seconds_since(p->base.submitted);
    if (p->base.done) p->base.done(failure, failure ? restore_report{} : *report);
    self->quit();
  };
  auto fail = [=](const std::string& what) {
    logger("actors")->error("request {} (documents): {}", ws->request_id(), what);
    finish(
        std::make_exception_ptr(error(errc::peer_down, "request " + std::to_string(ws->request_id()) + ": " + what)));
  };
  auto end_decode = [=] {
    report->tokens = ws->generated();
    if (p->base.detokenize) {
      auto shown = report->tokens;
      const auto& stops = p->base.stop_tokens;
      if (!shown.empty() && std::find(stops.begin(), stops.end(), shown.back()) != stops.end()) shown.pop_back();
      report->text = p->base.detokenize(shown);
    }
    finish(nullptr);
  };
  auto first_token = [=] {
    const auto& o = p->base.opts;
    model::sampling s{o.temperature, o.top_p, o.seed};
    self->request(gpu, p->timeout, first_atom::value, ws, s)
        .then(
            [=](std::int32_t token) {
              report->first_token = token;
              report->ttft_s = seconds_since(p->base.submitted);
              if (*planned_s > 0 && p->rates) p->rates->observe_overhead(report->ttft_s - *planned_s);
              if (p->base.opts.on_token) p->base.opts.on_token(token);
              if (p->base.opts.digest_kv) report->kv_sha256 = digest_kv(*ws);
              const auto& stops = p->base.stop_tokens;
              const int more = static_cast<int>(p->base.opts.max_new_tokens) - 1;
              if (more <= 0 || std::find(stops.begin(), stops.end(), token) != stops.end()) return end_decode();
              self->send(gpu, decode_atom::value, ws, more, s, stops, caf::actor_cast<caf::actor>(self),
                         decode_hooks{p->base.opts.on_token, p->base.opts.cancel});
            },
            [=](caf::error& e) { fail(self->system().render(e)); });
  };
  // The reads block: they run in this (detached) actor's first message, not in its construction.
  self->send(self, tick_atom::value);
  return {
      [=](tick_atom) {
        const model::config& c = ws->engine().cfg();
        auto work = std::make_shared<document_work>();
        work->ws = ws;
        report->request_id = ws->request_id();
        report->prompt_tokens = static_cast<std::uint32_t>(ws->tokens().size());
        report->chunks = static_cast<std::uint32_t>(ws->num_chunks());
        report->policy = std::string("documents/") + model::to_string(p->blend.selection);
        policies::recompute_plan plan;
        std::vector<bool> in_full;
        try {
          plan = choose_document_plan(*p, ws->engine());
          in_full = documents_in_full(*p, plan);
        } catch (const error& e) {
          return fail(e.what());
        }
        // Documents computed in full become plain segments of the blend.
        work->segments.clear();
        std::vector<std::size_t> blended;  // document index (p->keys) of each blended document
        {
          std::size_t d = 0;
          for (const auto& s : p->segments) {
            if (!s.document) {
              work->segments.push_back(s);
              continue;
            }
            if (in_full[d]) {
              work->segments.push_back({s.begin, s.count, false});
              ++report->documents_computed;
            } else {
              work->segments.push_back(s);
              blended.push_back(d);
            }
            ++d;
          }
        }
        const bool device = ws->engine().kv_type() != model::dtype::f32;
        const auto t0 = clock_type::now();
        double bytes = 0;
        std::size_t d = 0;
        for (const auto& s : work->segments) {
          if (!s.document) continue;
          if (device) {
            // The device path reads the entries itself, overlapped with the recompute.
            work->keys.push_back(p->keys[blended[d++]]);
            continue;
          }
          const auto shape = model::kv_shape_of(c, s.count, model::dtype::f32);
          std::vector<std::uint8_t> kv(shape.bytes());
          bool ok = false;
          try {
            ok = p->store && devices::load_document(*p->store, p->keys[blended[d]], kv.data(), shape);
          } catch (const error& e) {
            logger("actors")->warn("request {}: document entry unreadable, computing it: {}", ws->request_id(),
                                   e.what());
          }
          if (ok) bytes += static_cast<double>(shape.bytes());
          work->documents.push_back(std::move(kv));
          work->loaded.push_back(ok);
          ++d;
        }
        if (bytes > 0 && p->rates) p->rates->observe_load(bytes, seconds_since(t0));
        report->bytes_from_host = static_cast<std::uint64_t>(bytes);
        work->store = p->store;
        work->groups = p->device_groups;
        work->blend = p->blend;
        work->blend.ratio = plan.ratio;
        report->recompute_ratio = work->blend.ratio;
        const auto sent = clock_type::now();
        self->request(gpu, p->timeout, blend_atom::value, work)
            .then(
                [=](bool) {
                  const auto& r = work->result;
                  if (device)
                    // What a TTFT beyond max(loads, compute) is made of: the rest of
                    // the round trip (allocation, waits, copies into the chunks).
                    logger("actors")->debug(
                        "request {} (documents): plan {:.3f} (front {:.3f}, estimate {:.4f} s + fixed {:.4f} s, "
                        "full {:.4f} s); submit to send {:.4f} s, round trip {:.4f} s (in the gpu actor {:.4f} s: "
                        "buffers {:.4f} s, waiting for loads {:.4f} s, for the GPU {:.4f} s, copies out {:.4f} s), GPU "
                        "compute {:.4f} s, "
                        "loads {:.4f} s ({:.3f} GB)",
                        ws->request_id(), plan.ratio, plan.front_share, plan.estimate_s, plan.fixed_s,
                        plan.full_recompute_s, std::chrono::duration<double>(sent - p->base.submitted).count(),
                        seconds_since(sent), work->wall_s, work->setup_s, work->wait_s, work->drain_s, work->finish_s,
                        work->compute_s, work->load_s, work->load_bytes / 1e9);
                  const int check = work->blend.selection == model::token_selection::cacheblend
                                        ? std::min(work->blend.check_layers, c.layers)
                                        : 0;
                  if (device) {
                    if (p->rates) {
                      p->rates->observe_compute(work->token_layers, work->compute_s);
                      p->rates->observe_load(work->load_bytes, work->load_s);
                    }
                    report->bytes_from_host = static_cast<std::uint64_t>(work->load_bytes);
                  } else if (p->rates) {
                    p->rates->observe_compute(static_cast<double>(ws->tokens().size()) * check +
                                                  static_cast<double>(r.recomputed.size()) * (c.layers - check),
                                              work->compute_s);
                  }
                  report->document_tokens_recomputed = static_cast<std::uint32_t>(r.selected_document_tokens);
                  for (bool l : work->loaded) ++(l ? report->documents_reused : report->documents_computed);
                  if (plan.estimate_s > 0 && !plan.full_recompute &&
                      std::all_of(work->loaded.begin(), work->loaded.end(), [](bool l) { return l; }))
                    *planned_s = plan.estimate_s;
                  first_token();
                  // The entries computed here are stored while the first token is
                  // sampled (this actor handles its reply only after this handler,
                  // so they are stored before the request is answered).
                  if (!p->store || !p->base.opts.store) return;
                  std::size_t d = 0;
                  for (const auto& s : work->segments) {
                    if (!s.document) continue;
                    if (!work->loaded[d])
                      devices::store_document(*p->store, p->keys[blended[d]], work->documents[d].data(),
                                              model::kv_shape_of(c, s.count, ws->engine().kv_type()));
                    ++d;
                  }
                },
                [=](caf::error& e) { fail(self->system().render(e)); });
      },
      [=](done_atom, std::uint64_t) { end_decode(); },
  };
}

}  // namespace kvflow
