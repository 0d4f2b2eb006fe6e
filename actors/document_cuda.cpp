#include "actors/document_cuda.hpp"

#include "messages/error.hpp"
#include "messages/log.hpp"

#ifdef KVFLOW_HAVE_CUDA
#include <cuda_runtime_api.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <exception>
#include <future>
#include <mutex>
#include <numeric>
#include <thread>

#include "devices/document_store.hpp"
#include "devices/host/pinned_buffer.hpp"
#include "kernels/cuda/blend_rows.cuh"
#include "kernels/cuda/check.hpp"
#include "kernels/cuda/cuda_engine.hpp"
#include "kernels/cuda/rope.cuh"
#include "kernels/cuda/rope_delta.cuh"
#include "kernels/model/blend.hpp"
#include "kernels/model/engine_memory.hpp"
#include "platform/cuda_copy.hpp"
#include "platform/cuda_memory.hpp"
#endif

namespace kvflow {

#ifndef KVFLOW_HAVE_CUDA

void run_document_work_device(model::engine&, document_work&) {
  throw error(errc::unsupported, "the document path on a device needs a CUDA build");
}

std::shared_ptr<document_scratch> make_document_scratch() { return nullptr; }

#else

void* document_scratch::device_buffer::get(std::size_t need, int device) {
  if (need > bytes) {
    // Grow-only: the old block is free (the last request synchronized).
    platform::device_free(p);
    p = nullptr;
    bytes = 0;
    p = platform::device_alloc(need, device);
    bytes = need;
  }
  return p;
}

document_scratch::device_buffer::~device_buffer() { platform::device_free(p); }

document_scratch::~document_scratch() {
  if (load_stream) cudaStreamDestroy(static_cast<cudaStream_t>(load_stream));
}

std::shared_ptr<document_scratch> make_document_scratch() { return std::make_shared<document_scratch>(); }

namespace {

using clock_type = std::chrono::steady_clock;

double since(clock_type::time_point t) { return std::chrono::duration<double>(clock_type::now() - t).count(); }

// A device buffer for one request: the scratch's (kept, grown when too
// small) or one of its own (freed at the end of the request).
class dev_buf {
 public:
  dev_buf(model::engine& e, document_scratch::device_buffer* kept, std::size_t bytes, int device) {
    if (bytes == 0) return;
    if (kept) {
      p_ = kept->get(bytes, device);
    } else {
      own_ = std::make_unique<model::engine_memory>(e, bytes);
      p_ = own_->get();
    }
  }
  void* get() const { return p_; }
  template <class T>
  T* as() const {
    return static_cast<T*>(p_);
  }

 private:
  std::unique_ptr<model::engine_memory> own_;
  void* p_ = nullptr;
};

// GPU seconds of the work enqueued between start() and stop() on a stream.
class gpu_timer {
 public:
  gpu_timer() {
    KVFLOW_CUDA_CHECK(cudaEventCreate(&a_));
    KVFLOW_CUDA_CHECK(cudaEventCreate(&b_));
  }
  ~gpu_timer() {
    cudaEventDestroy(a_);
    cudaEventDestroy(b_);
  }
  gpu_timer(const gpu_timer&) = delete;
  gpu_timer& operator=(const gpu_timer&) = delete;
  void start(cudaStream_t s) { KVFLOW_CUDA_CHECK(cudaEventRecord(a_, s)); }
  void stop(cudaStream_t s) { KVFLOW_CUDA_CHECK(cudaEventRecord(b_, s)); }
  double seconds() const {  // after the stream reached stop()
    float ms = 0;
    KVFLOW_CUDA_CHECK(cudaEventElapsedTime(&ms, a_, b_));
    return ms / 1e3;
  }

 private:
  cudaEvent_t a_ = nullptr, b_ = nullptr;
};

// A document of the prompt and the rows of its entry that are reused
// (loaded): [r0, count). EPIC recomputes rows [0, r0); cacheblend loads
// every row (its selection is known only after the check layers) and
// recomputes the selected ones over them.
struct placed_doc {
  std::size_t index = 0;  // among the document segments (w.keys, w.loaded)
  int at = 0, count = 0, r0 = 0;
  bool held = false;  // every entry block in a tier when the work started
};

enum class doc_state { pending, ready, compute };

// Moves entry rows into the prompt-long block: every layer from `layer0`
// into `prompt`, and with a side block, the layer below `layer0` (the last
// check layer's cached values) into it.
struct placer {
  const model::kv_shape& ps;  // the prompt block's shape (bf16)
  void* prompt;
  void* side;  // [2][kv_heads][tokens][head_dim] or null
  int layer0;
  const float* inv_freq;  // device

  std::size_t row_bytes() const { return static_cast<std::size_t>(ps.head_dim) * model::dtype_size(ps.type); }
  // Bytes a reused row moves.
  std::size_t moved_per_row() const { return row_bytes() * 2 * ps.kv_heads * (ps.layers - layer0 + (side ? 1 : 0)); }

  // Entry rows [r0, r1) of document d, held in `src`: a block of
  // `src_tokens` rows whose row 0 is entry row `src_first`.
  void put(const placed_doc& d, const std::uint8_t* src, int src_tokens, int src_first, int r0, int r1,
           cudaMemcpyKind kind, cudaStream_t s) const {
    if (r1 <= r0) return;
    const std::size_t row = row_bytes(), lane = static_cast<std::size_t>(2) * ps.kv_heads;
    auto copy = [&](std::uint8_t* dst, int dst_tokens, int first_layer, int layers) {
      const std::uint8_t* from =
          src + (static_cast<std::size_t>(first_layer) * lane * src_tokens + (r0 - src_first)) * row;
      std::uint8_t* to = dst + (d.at + static_cast<std::size_t>(r0)) * row;
      platform::enqueue_copy_2d(to, dst_tokens * row, from, src_tokens * row, (r1 - r0) * row,
                                static_cast<std::size_t>(layers) * lane, kind, s);
    };
    auto* base = static_cast<std::uint8_t*>(prompt) + static_cast<std::size_t>(layer0) * lane * ps.tokens * row;
    copy(base, ps.tokens, layer0, ps.layers - layer0);
    if (side) copy(static_cast<std::uint8_t*>(side), ps.tokens, layer0 - 1, 1);
  }

  // K of the reused rows rotated from positions [0, count) to [at, at + count).
  void rotate(const placed_doc& d, cudaStream_t s) const {
    const int count = d.count - d.r0;
    if (count <= 0) return;
    const std::size_t layer_elems = ps.layer_elems();
    auto* base = static_cast<__nv_bfloat16*>(prompt) + layer_elems * layer0;
    KVFLOW_LAUNCH_CHECK(cuda::launch_rope_delta(base, ps.layers - layer0, ps.kv_heads, ps.tokens, ps.head_dim,
                                                d.at + d.r0, count, d.at, inv_freq, s));
    if (side)
      KVFLOW_LAUNCH_CHECK(cuda::launch_rope_delta(static_cast<__nv_bfloat16*>(side), 1, ps.kv_heads, ps.tokens,
                                                  ps.head_dim, d.at + d.r0, count, d.at, inv_freq, s));
  }
};

}  // namespace

void run_document_work_device(model::engine& eng, document_work& w) {
  const auto t_entry = clock_type::now();
  auto* e = dynamic_cast<model::cuda_engine*>(&eng);
  if (!e) throw error(errc::unsupported, "the document path on a device runs on a CUDA engine");
  // The kept buffers, unless another request holds them.
  document_scratch* sc = nullptr;
  std::unique_lock<std::mutex> hold_scratch;
  if (w.scratch) {
    hold_scratch = std::unique_lock<std::mutex>(w.scratch->busy, std::try_to_lock);
    if (hold_scratch.owns_lock()) sc = w.scratch.get();
  }
  auto kept = [&](document_scratch::device_buffer document_scratch::*b) { return sc ? &(sc->*b) : nullptr; };
  const int device = e->device();
  const model::config& c = e->cfg();
  workspace& ws = *w.ws;
  const auto& tokens = ws.tokens();
  const int n = static_cast<int>(tokens.size());
  model::check_segments(w.segments, n);
  const double ratio = w.blend.ratio;
  if (!(ratio >= 0 && ratio <= 1))
    throw error(errc::invalid_argument, "document path: ratio " + std::to_string(ratio) + " outside [0, 1]");
  const bool full = ratio >= 1;  // every row computed: nothing is reused, nothing moves
  const bool blend = !full && w.blend.selection == model::token_selection::cacheblend && c.layers > 1;
  // cacheblend: at least one check layer (its deviation ranks the rows), and one layer above them.
  const int check = blend ? std::clamp(w.blend.check_layers, 1, c.layers - 1) : 0;
  const int L = c.layers;
  const cudaStream_t cs = e->stream();

  std::vector<placed_doc> docs;
  for (const auto& s : w.segments) {
    if (!s.document) continue;
    placed_doc d;
    d.index = docs.size();
    d.at = s.begin;
    d.count = s.count;
    d.r0 = full ? s.count : blend ? 0 : model::recomputed_share(ratio, s.count);
    docs.push_back(d);
  }
  if (w.keys.size() != docs.size())
    throw error(errc::invalid_argument, "document path: " + std::to_string(w.keys.size()) + " key lists for " +
                                            std::to_string(docs.size()) + " documents");
  for (auto& d : docs) d.held = w.store && devices::has_document(*w.store, w.keys[d.index]);
  w.loaded.assign(docs.size(), false);
  w.documents.assign(docs.size(), {});
  w.load_bytes = w.load_s = w.token_layers = w.compute_s = 0;
  w.wall_s = w.setup_s = w.wait_s = w.drain_s = w.finish_s = 0;

  const model::kv_shape ps = model::kv_shape_of(c, n, e->kv_type());
  dev_buf prompt(*e, kept(&document_scratch::prompt), ps.bytes(), device);
  dev_buf side(*e, kept(&document_scratch::side), blend ? ps.layer_elems() * model::dtype_size(ps.type) : 0, device);
  const auto inv = cuda::rope_inv_freq(c);
  dev_buf inv_dev(*e, kept(&document_scratch::inv_freq), inv.size() * sizeof(float), device);
  e->to_backend(inv_dev.get(), inv.data(), inv.size() * sizeof(float));
  const placer put{ps, prompt.get(), side.get(), check, inv_dev.as<float>()};

  // Documents no tier holds (and held ones whose load failed) are computed
  // alone, kept for the caller to store, and placed like a loaded entry.
  auto compute_alone = [&](const placed_doc& d) {
    const model::kv_shape ds = model::kv_shape_of(c, d.count, e->kv_type());
    model::engine_memory kv(*e, ds.bytes());
    model::document_kv(*e, std::vector<std::int32_t>(tokens.begin() + d.at, tokens.begin() + d.at + d.count),
                       {kv.get(), ds});
    w.documents[d.index].resize(ds.bytes());
    e->to_host(w.documents[d.index].data(), kv.get(), ds.bytes());
    put.put(d, kv.as<std::uint8_t>(), d.count, 0, d.r0, d.count, cudaMemcpyDeviceToDevice, cs);
    put.rotate(d, cs);
    e->synchronize();  // before `kv` goes
  };

  // The loader: held documents with reused rows, in prompt order.
  std::mutex m;
  std::condition_variable cv;
  std::vector<doc_state> state(docs.size(), doc_state::ready);
  bool stop = false;
  std::exception_ptr load_error;
  for (const auto& d : docs)
    if (!d.held)
      state[d.index] = doc_state::compute;
    else if (d.r0 < d.count)
      state[d.index] = doc_state::pending;
  std::vector<devices::pinned_buffer> own_staging;
  std::vector<devices::pinned_buffer>& staging = sc ? sc->staging : own_staging;
  const auto t_load = clock_type::now();
  w.setup_s = std::chrono::duration<double>(t_load - t_entry).count();
  std::thread loader([&] {
    try {
      if (!w.store) return;  // nothing is held, nothing loads
      KVFLOW_CUDA_CHECK(cudaSetDevice(device));
      cudaStream_t ls = sc ? static_cast<cudaStream_t>(sc->load_stream) : nullptr;
      std::unique_ptr<CUstream_st, void (*)(cudaStream_t)> own(nullptr, [](cudaStream_t s) { cudaStreamDestroy(s); });
      if (!ls) {
        KVFLOW_CUDA_CHECK(cudaStreamCreateWithFlags(&ls, cudaStreamNonBlocking));
        if (sc)
          sc->load_stream = ls;  // kept with the scratch
        else
          own.reset(ls);
      }
      devices::chunk_store& store = *w.store;
      const int C = store.disk().options().shape.tokens;
      const devices::layer_range all{0, static_cast<std::uint32_t>(L)};
      for (const auto& d : docs) {
        {
          std::lock_guard<std::mutex> lock(m);
          if (stop) return;
          if (state[d.index] != doc_state::pending) continue;
        }
        const auto& keys = w.keys[d.index];
        const std::size_t blocks = keys.size();
        // Only the entry blocks holding reused rows are read: from the host
        // tier's pinned lease, else from disk, every read at once.
        std::vector<devices::host_block> leases;
        std::vector<const std::uint8_t*> src(blocks, nullptr);
        std::vector<std::promise<const std::uint8_t*> > got(blocks);
        std::vector<bool> reading(blocks, false);
        const std::size_t staging_bytes = store.disk().staging_bytes(all);
        for (auto& b : staging)
          if (b.size() < staging_bytes) b = devices::pinned_buffer(staging_bytes, true);
        while (staging.size() < blocks) staging.emplace_back(staging_bytes, true);
        for (std::size_t b = 0; b < blocks; ++b) {
          const int t0 = static_cast<int>(b) * C;
          if (std::min(d.count, t0 + C) <= d.r0) continue;
          devices::host_block lease = store.host().acquire(keys[b]);
          if (lease && lease.layers().covers(all)) {
            src[b] = lease.data();
            leases.push_back(std::move(lease));
            continue;
          }
          reading[b] = true;
          store.disk().read_async(
              keys[b], all, staging[b].data(),
              [p = &got[b]](bool ok, const std::uint8_t* data, std::size_t) { p->set_value(ok ? data : nullptr); });
        }
        bool ok = true;
        for (std::size_t b = 0; b < blocks; ++b)
          if (reading[b]) {
            src[b] = got[b].get_future().get();
            ok = ok && src[b] != nullptr;
          }
        double bytes = 0;
        if (ok) {
          for (std::size_t b = 0; b < blocks; ++b) {
            if (!src[b]) continue;
            const int t0 = static_cast<int>(b) * C, r0 = std::max(d.r0, t0), r1 = std::min(d.count, t0 + C);
            put.put(d, src[b], C, t0, r0, r1, cudaMemcpyHostToDevice, ls);
            bytes += static_cast<double>(r1 - r0) * put.moved_per_row();
          }
          put.rotate(d, ls);
        }
        KVFLOW_CUDA_CHECK(cudaStreamSynchronize(ls));  // the leases and staging are free again
        leases.clear();
        std::lock_guard<std::mutex> lock(m);
        state[d.index] = ok ? doc_state::ready : doc_state::compute;
        if (ok) w.load_bytes += bytes;
        w.load_s = since(t_load);
        cv.notify_all();
      }
    } catch (...) {
      std::lock_guard<std::mutex> lock(m);
      load_error = std::current_exception();
      for (auto& s : state)
        if (s == doc_state::pending) s = doc_state::compute;
      cv.notify_all();
    }
  });
  struct joiner {
    std::thread& t;
    std::mutex& m;
    bool& stop;
    ~joiner() {
      {
        std::lock_guard<std::mutex> lock(m);
        stop = true;
      }
      if (t.joinable()) t.join();
    }
  } join_loader{loader, m, stop};

  // Waits until documents [0, upto) are placed, computing alone those that
  // need it (on the engine's stream, before the rows that attend to them).
  auto wait_for = [&](std::size_t upto) {
    for (std::size_t i = 0; i < upto; ++i) {
      {
        std::unique_lock<std::mutex> lock(m);
        const auto t_wait = clock_type::now();
        cv.wait(lock, [&] { return state[i] != doc_state::pending; });
        w.wait_s += since(t_wait);
        if (state[i] == doc_state::ready) continue;
        state[i] = doc_state::ready;
      }
      compute_alone(docs[i]);
    }
  };
  // Tokens outside documents have no cached KV; the last one's hidden state
  // gives the next token, so it is computed even inside a document.
  std::vector<char> is_document(static_cast<std::size_t>(n), 0);
  w.result = {};
  for (const auto& d : docs) {
    std::fill(is_document.begin() + d.at, is_document.begin() + d.at + d.count, 1);
    w.result.document_tokens += d.count;
  }
  auto with_others = [&](std::vector<std::int32_t> rows) {
    for (int t = 0; t < n; ++t)
      if (!is_document[t] || t == n - 1) rows.push_back(t);
    std::sort(rows.begin(), rows.end());
    rows.erase(std::unique(rows.begin(), rows.end()), rows.end());
    return rows;
  };
  const std::size_t hidden_row = static_cast<std::size_t>(c.hidden) * sizeof(float);
  std::vector<std::unique_ptr<gpu_timer> > timers;
  auto run_rows = [&](const std::vector<std::int32_t>& rows, int layer_begin, int layer_end, void* hidden) {
    std::vector<std::int32_t> toks(rows.size());
    for (std::size_t i = 0; i < rows.size(); ++i) toks[i] = tokens[rows[i]];
    model::selected_job job;
    job.tokens = toks.data();
    job.positions = rows.data();
    job.count = static_cast<int>(rows.size());
    job.layer_begin = layer_begin;
    job.layer_end = layer_end;
    job.kv = {prompt.get(), ps};
    job.hidden = {hidden, job.count};
    timers.push_back(std::make_unique<gpu_timer>());
    timers.back()->start(cs);
    e->run_selected(job);
    timers.back()->stop(cs);
    w.token_layers += static_cast<double>(job.count) * (layer_end - layer_begin);
  };

  std::vector<std::int32_t> last_rows;  // rows of the last forward; its last row is position n - 1
  dev_buf last_hidden(*e, kept(&document_scratch::last_hidden), hidden_row, device);
  if (!blend) {
    // EPIC (or every row): the first r0 rows of each document, plus the
    // rest of the prompt, in forwards that wait only for the documents
    // before their last row.
    const std::vector<std::int32_t> chosen = model::select_leading(w.segments, ratio);  // each document's first r0
    w.result.selected_document_tokens = static_cast<int>(chosen.size());
    const std::vector<std::int32_t> rows = with_others(chosen);
    w.result.recomputed = rows;
    // Forwards: the front (rows before the first document that loads), then
    // `groups` spans of the loading documents. A front much smaller than the
    // first group (the system text alone) joins it: as a forward of its own
    // it reads every weight for a few rows, an extra forward the plan's
    // estimate (tail_share = 1/groups) does not count; joined, it adds a
    // few rows to a forward that waits for the first group's loads.
    std::vector<std::size_t> loading;  // what the loader reads (its state may have moved on already)
    for (const auto& d : docs)
      if (d.held && d.r0 < d.count) loading.push_back(d.index);
    std::vector<std::pair<int, std::size_t> > cuts;  // (first position, documents to wait for)
    cuts.push_back({0, 0});
    const std::size_t groups = std::min<std::size_t>(std::max(1, w.groups), loading.size());
    for (std::size_t g = 0; g < groups; ++g) {
      const std::size_t first = loading[g * loading.size() / groups];
      cuts.push_back({docs[first].at, 0});
    }
    if (cuts.size() > 1) {
      const int second = cuts.size() > 2 ? cuts[2].first : n;
      const auto in_span = [&](int b, int end) {
        return std::count_if(rows.begin(), rows.end(), [&](std::int32_t r) { return r >= b && r < end; });
      };
      if (4 * in_span(0, cuts[1].first) <= in_span(cuts[1].first, second)) cuts.erase(cuts.begin() + 1);
    }
    for (std::size_t k = 0; k < cuts.size(); ++k) {
      // A forward waits for every document before its last row's end.
      const int end = k + 1 < cuts.size() ? cuts[k + 1].first : n;
      std::size_t upto = 0;
      while (upto < docs.size() && docs[upto].at < end) ++upto;
      cuts[k].second = upto;
    }
    std::size_t most = 1;
    std::vector<std::vector<std::int32_t> > spans(cuts.size());
    for (std::size_t k = 0, i = 0; k < cuts.size(); ++k) {
      const int end = k + 1 < cuts.size() ? cuts[k + 1].first : n;
      while (i < rows.size() && rows[i] < end) spans[k].push_back(rows[i++]);
      most = std::max(most, spans[k].size());
    }
    dev_buf hidden(*e, kept(&document_scratch::hidden), most * hidden_row, device);
    for (std::size_t k = 0; k < cuts.size(); ++k) {
      if (spans[k].empty()) continue;
      wait_for(cuts[k].second);
      run_rows(spans[k], 0, L, hidden.get());
      last_rows = spans[k];
    }
    wait_for(docs.size());  // documents after the last row (none: the last row is n - 1)
    KVFLOW_CUDA_CHECK(cudaMemcpyAsync(last_hidden.get(),
                                      hidden.as<std::uint8_t>() + (last_rows.size() - 1) * hidden_row, hidden_row,
                                      cudaMemcpyDeviceToDevice, cs));
  } else {
    // CacheBlend: the check layers for every row while the loads land
    // (they write only the layers above, and the side block).
    std::vector<std::int32_t> every(static_cast<std::size_t>(n));
    std::iota(every.begin(), every.end(), 0);
    dev_buf all_hidden(*e, kept(&document_scratch::all_hidden), static_cast<std::size_t>(n) * hidden_row, device);
    for (const auto& d : docs)
      if (!d.held) {  // the loader never touches these
        {
          std::lock_guard<std::mutex> lock(m);
          state[d.index] = doc_state::ready;
        }
        compute_alone(d);
      }
    run_rows(every, 0, check, all_hidden.get());
    wait_for(docs.size());
    // Each document row's deviation in the last check layer, recomputed
    // against the loaded (rotated) values.
    dev_buf dev(*e, kept(&document_scratch::deviation), static_cast<std::size_t>(n) * sizeof(float), device);
    const std::size_t layer_elems = ps.layer_elems();
    KVFLOW_LAUNCH_CHECK(cuda::launch_kv_deviation(prompt.as<__nv_bfloat16>() + layer_elems * (check - 1),
                                                  side.as<__nv_bfloat16>(), ps.kv_heads, n, ps.head_dim,
                                                  dev.as<float>(), cs));
    std::vector<float> deviation(static_cast<std::size_t>(n));
    e->to_host(deviation.data(), dev.get(), deviation.size() * sizeof(float));
    std::vector<std::int32_t> chosen = model::select_deviating(w.segments, deviation, ratio);
    w.result.selected_document_tokens = static_cast<int>(chosen.size());
    const std::vector<std::int32_t> rows = with_others(chosen);
    w.result.recomputed = rows;
    dev_buf index(*e, kept(&document_scratch::index), rows.size() * sizeof(std::int32_t), device);
    e->to_backend(index.get(), rows.data(), rows.size() * sizeof(std::int32_t));
    dev_buf hidden(*e, kept(&document_scratch::hidden), rows.size() * hidden_row, device);
    KVFLOW_LAUNCH_CHECK(cuda::launch_gather_rows(all_hidden.as<float>(), index.as<int>(), static_cast<int>(rows.size()),
                                                 c.hidden, hidden.as<float>(), cs));
    run_rows(rows, check, L, hidden.get());
    last_rows = rows;
    KVFLOW_CUDA_CHECK(cudaMemcpyAsync(last_hidden.get(), hidden.as<std::uint8_t>() + (rows.size() - 1) * hidden_row,
                                      hidden_row, cudaMemcpyDeviceToDevice, cs));
    e->synchronize();  // before `index`, `hidden` and `all_hidden` go
  }
  {
    std::lock_guard<std::mutex> lock(m);
    stop = true;
  }
  loader.join();
  if (load_error) {
    // Every document it had not placed was computed alone: the restore is whole.
    try {
      std::rethrow_exception(load_error);
    } catch (const std::exception& ex) {
      logger("actors")->warn("request {}: document loads failed, computed instead: {}", ws.request_id(), ex.what());
    }
  }
  for (const auto& d : docs) w.loaded[d.index] = d.held && w.documents[d.index].empty();

  // Where the time goes: the compute still queued, then the copies out.
  auto t_drain = clock_type::now();
  e->synchronize();
  w.drain_s = since(t_drain);
  const auto t_finish = clock_type::now();
  // The prompt's rows into the workspace's chunk blocks, then the last
  // position's hidden state where first_atom reads it.
  const std::size_t row = static_cast<std::size_t>(ps.head_dim) * model::dtype_size(ps.type);
  for (int ci = 0; ci < ws.num_chunks(); ++ci) {
    model::kv_block& b = ws.block(ci);
    const std::size_t t0 = static_cast<std::size_t>(ci) * ws.chunk_tokens();
    platform::enqueue_copy_2d(b.data, b.shape.tokens * row, prompt.as<std::uint8_t>() + t0 * row, ps.tokens * row,
                              b.shape.tokens * row, static_cast<std::size_t>(L) * 2 * ps.kv_heads,
                              cudaMemcpyDeviceToDevice, cs);
  }
  model::hidden_state& last = ws.hidden(ws.num_chunks() - 1);
  KVFLOW_CUDA_CHECK(cudaMemcpyAsync(static_cast<std::uint8_t*>(last.data) + (last.tokens - 1) * hidden_row,
                                    last_hidden.get(), hidden_row, cudaMemcpyDeviceToDevice, cs));
  w.result.last_hidden.resize(static_cast<std::size_t>(c.hidden));
  e->to_host(w.result.last_hidden.data(), last_hidden.get(), hidden_row);
  e->synchronize();
  for (const auto& t : timers) w.compute_s += t->seconds();
  w.finish_s = since(t_finish);
  w.wall_s = since(t_entry);
}

#endif

}  // namespace kvflow
