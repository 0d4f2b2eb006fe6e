// kvflow_nonprefix_bench: TTFT of a prompt of stitched cached documents
// restored by non-prefix reuse against a full recompute, per tier. Each
// document's KV was computed alone (positions from 0) and kept in the tier;
// a restore moves only the reused rows of each document (one strided copy,
// the recomputed leading rows are not read into place), rotates their K to
// the new position (RoPE delta), and recomputes the first share of each
// document's tokens (EPIC's selection) plus the system text and question
// with engine::run_selected over one prompt-long block (one forward per
// group of documents, --groups), overlapped with the loads of later
// documents. The adaptive ratio's compute rate is run_selected's, measured
// at the quality floor's ratio. Where loads are slower than compute, the
// adaptive plan (policies/recompute_ratio, split_front) computes the first
// documents in full as a forward that waits for no load while the others
// load and are reused at the floor. --check compares the restore's first token and last
// hidden state with blend_prefill's EPIC restore (CPU backend).
// Writes JSON records (model, context_tokens, tier, ratio, ratio_source,
// ttft_s, full_recompute_s, speedup, device, ...).

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <future>
#include <mutex>
#include <nlohmann/json.hpp>
#include <random>
#include <thread>

#include <unistd.h>

#include "devices/disk/disk_store.hpp"
#include "devices/host/pinned_buffer.hpp"
#include "devices/keys.hpp"
#include "devices/rate_limiter.hpp"
#include "kernels/cpu/rope.hpp"
#include "kernels/cpu/rope_delta.hpp"
#include "kernels/model/blend.hpp"
#include "kernels/model/cpu_engine.hpp"
#include "messages/error.hpp"
#include "policies/recompute_ratio.hpp"
#ifdef KVFLOW_HAVE_CUDA
#include <cuda_runtime_api.h>

#include "kernels/cuda/check.hpp"
#include "kernels/cuda/cuda_engine.hpp"
#include "kernels/cuda/rope.cuh"
#include "kernels/cuda/rope_delta.cuh"
#include "platform/cuda_copy.hpp"
#include "platform/cuda_memory.hpp"
#endif

namespace {

using namespace kvflow;
using namespace kvflow::model;
using clock_type = std::chrono::steady_clock;

double since(clock_type::time_point t) { return std::chrono::duration<double>(clock_type::now() - t).count(); }

// Backend-specific moves: the strided copy of a document's reused rows
// into a block of their own, and the RoPE delta.
struct backend_ops {
  engine* e = nullptr;
  bool cuda = false;
  std::vector<float> inv_freq;  // host
#ifdef KVFLOW_HAVE_CUDA
  platform::device_buffer inv_freq_dev;
  cudaStream_t stream = nullptr;  // the loader's
#endif

  // Rows [r0, r1) of a block of `src_tokens` tokens (host, doc layout) to
  // rows [d0, d0 + r1 - r0) of `dst`, a block of `dst_tokens`: one strided copy.
  void copy_rows(void* dst, int dst_tokens, int d0, const std::uint8_t* src, int src_tokens, int r0, int r1,
                 const kv_shape& like) {
    const std::size_t elem = dtype_size(like.type), row = static_cast<std::size_t>(like.head_dim) * elem;
    const std::size_t height = static_cast<std::size_t>(like.layers) * 2 * like.kv_heads;
    const std::size_t src_pitch = src_tokens * row, dst_pitch = dst_tokens * row, width = (r1 - r0) * row;
    const std::uint8_t* from = src + r0 * row;
    std::uint8_t* to = static_cast<std::uint8_t*>(dst) + d0 * row;
    if (width == 0) return;
#ifdef KVFLOW_HAVE_CUDA
    if (cuda) {
      platform::enqueue_copy_2d(to, dst_pitch, from, src_pitch, width, height, cudaMemcpyHostToDevice, stream);
      return;
    }
#endif
    for (std::size_t r = 0; r < height; ++r) std::memcpy(to + r * dst_pitch, from + r * src_pitch, width);
  }
  // K of rows [r0, r0 + count) of a block rotated by `delta` positions.
  void rotate(void* block, const kv_shape& s, int r0, int count, int delta) {
    if (count <= 0) return;
#ifdef KVFLOW_HAVE_CUDA
    if (cuda) {
      KVFLOW_CUDA_CHECK(cuda::launch_rope_delta(static_cast<__nv_bfloat16*>(block), s.layers, s.kv_heads, s.tokens,
                                                s.head_dim, r0, count, delta, inv_freq_dev.as<float>(), stream));
      return;
    }
#endif
    cpu::rope_delta_block(block, s, r0, count, delta, inv_freq.data());
  }
  void finish_loads() {
#ifdef KVFLOW_HAVE_CUDA
    if (cuda) KVFLOW_CUDA_CHECK(cudaStreamSynchronize(stream));
#endif
  }
};

struct device_block {
  engine* e;
  kv_block b;
  device_block(engine& eng, const kv_shape& s) : e(&eng) {
    b.shape = s;
    b.data = eng.allocate(std::max<std::size_t>(s.bytes(), 1));
  }
  ~device_block() { e->release(b.data); }
  device_block(const device_block&) = delete;
  device_block& operator=(const device_block&) = delete;
};

struct setup {
  int docs = 32, doc_tokens = 512, system_tokens = 64, question_tokens = 64;
  std::vector<std::int32_t> prompt;
  std::vector<prompt_segment> segments;  // system, documents..., question
};

// A document tier: where each document's block (doc_tokens, positions from 0) is read from.
struct tier_source {
  std::string name;
  std::vector<devices::pinned_buffer>* host = nullptr;  // "host": pinned memory
  devices::disk_store* disk = nullptr;                  // else the disk tier (paced or not)
  std::vector<std::vector<msg::chunk_key>> keys;        // per document: its sub-blocks of `sub` tokens
  int sub = 64;
  double gbps = 0;
};

class bench {
 public:
  bench(engine& e, backend_ops& ops, const setup& s) : e_(e), ops_(ops), s_(s) {}

  // Chunked prefill of the whole prompt (chunks of `chunk` tokens): the baseline.
  double full_recompute(int chunk, std::int32_t* first_token) {
    const config& c = e_.cfg();
    const int n = static_cast<int>(s_.prompt.size());
    std::vector<std::unique_ptr<device_block>> blocks;
    std::vector<kv_block> past;
    device_block hidden(e_, kv_shape{1, 1, 1, 1, dtype::f32});
    void* h = e_.allocate(static_cast<std::size_t>(chunk) * c.hidden * sizeof(float));
    e_.synchronize();
    const auto t0 = clock_type::now();
    int last = 0;
    for (int p = 0; p < n; p += chunk) {
      const int count = std::min(chunk, n - p);
      blocks.push_back(std::make_unique<device_block>(e_, kv_shape_of(c, count, e_.kv_type())));
      chunk_job job;
      job.tokens = s_.prompt.data() + p;
      job.count = count;
      job.pos0 = p;
      job.layer_end = c.layers;
      job.past = {past.data(), static_cast<int>(past.size())};
      job.out = blocks.back()->b;
      job.hidden = {h, count};
      e_.run(job);
      past.push_back(blocks.back()->b);
      last = count;
    }
    std::vector<float> logits;
    e_.logits({h, last}, logits);
    const double s = since(t0);
    *first_token = sample(logits, {}, 0);
    e_.release(h);
    return s;
  }

  // Restore with the first round(ratio * doc_tokens) tokens of each
  // document recomputed (EPIC) and the rest loaded from `src` into one
  // prompt-long block, loads on a thread of their own ahead of the compute.
  // The recomputed rows (system text, each document's leading tokens, the
  // question) run through engine::run_selected, one forward per group of
  // documents once the group's loads are in (a row attends only to earlier
  // positions, so later groups' loads overlap this one's compute). Returns
  // the TTFT; fills the first token and (when asked) the last hidden state
  // on the host; *compute_s: seconds of the run_selected calls alone
  // (measured after the loads, for the policy's rate).
  //
  // With front_docs > 0 (the split plan of policies/recompute_ratio), the
  // first front_docs documents are computed in full as the first forward,
  // with no loads, while the later documents load (the two-pointer split:
  // compute from the front, load from the back).
  double reuse(const tier_source& src, double ratio, std::int32_t* first_token, std::vector<float>* last_hidden,
               double* load_s, int* selected_rows = nullptr, int front_docs = 0) {
    const config& c = e_.cfg();
    const int docs = s_.docs, n = s_.doc_tokens, total = static_cast<int>(s_.prompt.size());
    const int k = std::clamp(static_cast<int>(std::lround(ratio * n)), 0, n);
    const int front = std::clamp(front_docs, 0, docs);
    const kv_shape doc_shape = kv_shape_of(c, n, e_.kv_type());
    device_block whole(e_, kv_shape_of(c, total, e_.kv_type()));
    // Document spans of the forwards: the front (if any), then the reused
    // documents in `groups_` groups.
    std::vector<std::pair<int, int>> spans;
    if (front > 0) spans.push_back({0, front});
    const int back_groups = front < docs ? std::clamp(groups_, 1, docs - front) : 0;
    for (int g = 0; g < back_groups; ++g)
      spans.push_back({front + g * (docs - front) / back_groups, front + (g + 1) * (docs - front) / back_groups});
    const int groups = static_cast<int>(spans.size());
    // Rows of each group: positions ascending.
    std::vector<std::vector<std::int32_t>> rows(static_cast<std::size_t>(groups));
    std::vector<int> group_last_doc(static_cast<std::size_t>(groups));
    for (int g = 0; g < groups; ++g) {
      auto& r = rows[g];
      if (g == 0)
        for (int p = 0; p < s_.system_tokens; ++p) r.push_back(p);
      for (int d = spans[g].first; d < spans[g].second; ++d)
        for (int p = 0; p < (d < front ? n : k); ++p) r.push_back(s_.segments[1 + d].begin + p);
      if (g == groups - 1)
        for (int p = 0; p < s_.question_tokens; ++p) r.push_back(s_.segments.back().begin + p);
      group_last_doc[g] = spans[g].second;
    }
    std::size_t most = 1;
    int all_rows = 0;
    for (const auto& r : rows) {
      most = std::max(most, r.size());
      all_rows += static_cast<int>(r.size());
    }
    if (selected_rows) *selected_rows = all_rows;
    void* h = e_.allocate(most * c.hidden * sizeof(float));
    std::vector<devices::pinned_buffer> stagings;  // one per sub-block of a document
    if (!src.host)
      for (int j = 0; j < (n + src.sub - 1) / src.sub; ++j)
        stagings.emplace_back(src.disk->staging_bytes({0, static_cast<std::uint32_t>(c.layers)}), ops_.cuda);
    e_.synchronize();

    std::mutex m;
    std::condition_variable cv;
    int ready = front;  // documents whose reused rows are in place and rotated (the front needs none)
    double loads_done_s = 0;
    const auto t0 = clock_type::now();
    std::thread loader([&] {
      for (int d = front; d < docs; ++d) {
        const int at = s_.segments[1 + d].begin;
        if (k < n && src.host) {
          ops_.copy_rows(whole.b.data, total, at + k, (*src.host)[d].data(), n, k, n, doc_shape);
        } else if (k < n) {
          // Only the sub-blocks holding reused rows are read, all at once.
          const int g = src.sub, first = k / g, last = (n + g - 1) / g;
          std::vector<std::promise<const std::uint8_t*>> got(static_cast<std::size_t>(last - first));
          std::vector<std::future<const std::uint8_t*>> futures;
          for (auto& p : got) futures.push_back(p.get_future());
          for (int j = first; j < last; ++j)
            src.disk->read_async(src.keys[d][j], {0, static_cast<std::uint32_t>(c.layers)},
                                 stagings[static_cast<std::size_t>(j - first)].data(),
                                 [&got, j, first](bool ok, const std::uint8_t* data, std::size_t) {
                                   got[static_cast<std::size_t>(j - first)].set_value(ok ? data : nullptr);
                                 });
          for (int j = first; j < last; ++j) {
            const std::uint8_t* data = futures[static_cast<std::size_t>(j - first)].get();
            if (!data)
              throw error(errc::io_failure,
                          "document " + std::to_string(d) + " block " + std::to_string(j) + " missing");
            const int r0 = std::max(k, j * g), r1 = std::min(n, (j + 1) * g);
            ops_.copy_rows(whole.b.data, total, at + r0, data, g, r0 - j * g, r1 - j * g, doc_shape);
          }
        }
        ops_.rotate(whole.b.data, whole.b.shape, at + k, n - k, at);
        ops_.finish_loads();  // also frees the staging for the next read
        std::lock_guard<std::mutex> lock(m);
        ready = d + 1;
        cv.notify_all();
      }
      std::lock_guard<std::mutex> lock(m);
      loads_done_s = since(t0);
    });
    int last_count = 0;
    for (int g = 0; g < groups; ++g) {
      {
        std::unique_lock<std::mutex> lock(m);
        cv.wait(lock, [&] { return ready >= group_last_doc[g]; });
      }
      if (rows[g].empty()) continue;
      std::vector<std::int32_t> tokens;
      for (int p : rows[g]) tokens.push_back(s_.prompt[p]);
      selected_job job;
      job.tokens = tokens.data();
      job.positions = rows[g].data();
      job.count = static_cast<int>(rows[g].size());
      job.layer_end = c.layers;
      job.kv = whole.b;
      job.hidden = {h, job.count};
      e_.run_selected(job);
      last_count = job.count;
    }
    loader.join();
    std::vector<float> logits;
    e_.logits({h, last_count}, logits);
    const double ttft = since(t0);
    *first_token = sample(logits, {}, 0);
    if (last_hidden) {
      last_hidden->resize(c.hidden);
      e_.to_host(last_hidden->data(), static_cast<float*>(h) + static_cast<std::size_t>(last_count - 1) * c.hidden,
                 sizeof(float) * c.hidden);
    }
    *load_s = loads_done_s;
    e_.release(h);
    return ttft;
  }

  // Seconds of run_selected over the rows of a restore at `ratio` (one
  // call, every layer, over a prompt-long block already in place): the
  // policy's compute rate for selected rows, rather than a full prefill's.
  double selected_compute(double ratio, int* rows_out, int front_docs = 0) {
    const config& c = e_.cfg();
    const int n = s_.doc_tokens, total = static_cast<int>(s_.prompt.size());
    const int k = std::clamp(static_cast<int>(std::lround(ratio * n)), 0, n);
    device_block whole(e_, kv_shape_of(c, total, e_.kv_type()));
    std::vector<std::int32_t> rows, tokens;
    for (int p = 0; p < s_.system_tokens; ++p) rows.push_back(p);
    for (int d = 0; d < s_.docs; ++d)
      for (int p = 0; p < (d < front_docs ? n : k); ++p) rows.push_back(s_.segments[1 + d].begin + p);
    for (int p = 0; p < s_.question_tokens; ++p) rows.push_back(s_.segments.back().begin + p);
    for (int p : rows) tokens.push_back(s_.prompt[p]);
    void* h = e_.allocate(rows.size() * c.hidden * sizeof(float));
    selected_job job;
    job.tokens = tokens.data();
    job.positions = rows.data();
    job.count = static_cast<int>(rows.size());
    job.layer_end = c.layers;
    job.kv = whole.b;
    job.hidden = {h, job.count};
    e_.run_selected(job);  // warm-up (scratch sized)
    e_.synchronize();
    const auto t0 = clock_type::now();
    e_.run_selected(job);
    e_.synchronize();
    const double s = since(t0);
    e_.release(h);
    *rows_out = job.count;
    return s;
  }

  int groups_ = 4;

 private:
  engine& e_;
  backend_ops& ops_;
  const setup& s_;
};

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"kvflow_nonprefix_bench: TTFT of stitched cached documents (non-prefix reuse) against a full recompute"};
  std::string preset = "llama-3-8b", backend = "cuda", out_path, disk_dir, device_name = "unknown";
  std::vector<std::string> tiers{"host", "disk", "10"};
  std::vector<double> ratios{0.15};
  setup s;
  int repeats = 3, chunk = 1024, sub = 64;
  bool check = false, adaptive = true, split = true;
  app.add_option("--preset", preset, "model shape with random weights");
  app.add_option("--backend", backend, "cuda or cpu")->check(CLI::IsMember({"cuda", "cpu"}));
  app.add_option("--docs", s.docs, "documents in the prompt")->check(CLI::Range(1, 1024));
  app.add_option("--doc-tokens", s.doc_tokens, "tokens per document")->check(CLI::Range(8, 65536));
  app.add_option("--system-tokens", s.system_tokens, "system text before the documents")->check(CLI::Range(1, 65536));
  app.add_option("--question-tokens", s.question_tokens, "question after them")->check(CLI::Range(1, 65536));
  app.add_option("--tiers", tiers, "host, disk, or a number: the disk paced to that many Gbit/s")->delimiter(',');
  app.add_option("--ratios", ratios, "fixed recompute ratios")->delimiter(',')->check(CLI::Range(0.0, 1.0));
  app.add_flag("!--no-adaptive", adaptive, "skip the ratio from policies/recompute_ratio");
  app.add_flag("!--no-split", split,
               "adaptive plans only raise the ratio (no leading documents computed in full while the rest loads)");
  app.add_option("--repeats", repeats, "runs per point (median kept)")->check(CLI::Range(1, 50));
  app.add_option("--chunk-tokens", chunk, "chunk of the full recompute")->check(CLI::Range(16, 65536));
  app.add_option("--sub-tokens", sub, "tokens per disk block of a document")->check(CLI::Range(8, 65536));
  int groups = 4;
  app.add_option("--groups", groups, "run_selected calls per restore (documents split into that many groups)")
      ->check(CLI::Range(1, 1024));
  app.add_option("--disk-dir", disk_dir, "folder of the disk tier (default: a temporary one)");
  app.add_option("--device-name", device_name, "device named in the records");
  app.add_option("--out", out_path, "JSON records");
  app.add_flag("--check", check, "compare each restore with blend_prefill's EPIC restore (cpu backend)");
  CLI11_PARSE(app, argc, argv);
  try {
    const config c = model::preset(preset);
    std::unique_ptr<engine> e;
    backend_ops ops;
    ops.inv_freq = cpu::rope_inv_freq(c.head_dim, c.rope_theta, c.scaling);
    if (backend == "cuda") {
#ifdef KVFLOW_HAVE_CUDA
      e = make_cuda_engine_random(c, 1);
      ops.cuda = true;
      const auto inv = cuda::rope_inv_freq(c);
      ops.inv_freq_dev = platform::device_buffer(inv.size() * sizeof(float));
      platform::copy_now(ops.inv_freq_dev.data(), inv.data(), ops.inv_freq_dev.size(), cudaMemcpyHostToDevice);
      KVFLOW_CUDA_CHECK(cudaStreamCreateWithFlags(&ops.stream, cudaStreamNonBlocking));
#else
      throw error(errc::unsupported, "this build has no CUDA: use --backend cpu");
#endif
    } else {
      e = make_cpu_engine(random_weights(c, 1), 0);
    }
    ops.e = e.get();
    // The prompt: system text, documents, question; random tokens.
    std::mt19937 gen(20);
    std::uniform_int_distribution<int> tok(0, c.vocab_size - 1);
    auto add = [&](int count, bool doc) {
      s.segments.push_back({static_cast<int>(s.prompt.size()), count, doc});
      for (int i = 0; i < count; ++i) s.prompt.push_back(tok(gen));
    };
    add(s.system_tokens, false);
    for (int d = 0; d < s.docs; ++d) add(s.doc_tokens, true);
    add(s.question_tokens, false);
    const int n = static_cast<int>(s.prompt.size());
    if (n > c.max_positions) throw error(errc::out_of_range, "prompt of " + std::to_string(n) + " tokens");

    // Document entries: each computed alone, kept in pinned host memory and on disk.
    const kv_shape doc_shape = kv_shape_of(c, s.doc_tokens, e->kv_type());
    std::vector<devices::pinned_buffer> host;
    {
      device_block kv(*e, doc_shape);
      for (int d = 0; d < s.docs; ++d) {
        const auto& seg = s.segments[1 + d];
        document_kv(*e,
                    std::vector<std::int32_t>(s.prompt.begin() + seg.begin, s.prompt.begin() + seg.begin + seg.count),
                    kv.b);
        host.emplace_back(doc_shape.bytes(), ops.cuda);
        e->to_host(host.back().data(), kv.b.data, doc_shape.bytes());
      }
    }
    bool remove_dir = disk_dir.empty();
    if (remove_dir)
      disk_dir = (std::filesystem::temp_directory_path() / ("kvflow-nonprefix-" + std::to_string(::getpid()))).string();
    auto limiter = std::make_shared<devices::rate_limiter>(0);
    devices::disk_options dopt;
    dopt.directory = disk_dir;
    dopt.fingerprint = e->fingerprint();
    const kv_shape sub_shape = kv_shape_of(c, sub, e->kv_type());
    dopt.shape = sub_shape;
    dopt.read_limiter = limiter;
    auto disk = std::make_unique<devices::disk_store>(dopt);
    // On disk a document is sub-blocks of `sub` tokens (document_block_keys),
    // so that a restore reads only the ones holding reused rows.
    std::vector<std::vector<msg::chunk_key>> sub_keys;
    {
      std::vector<std::uint8_t> block(sub_shape.bytes());
      for (int d = 0; d < s.docs; ++d) {
        const auto& seg = s.segments[1 + d];
        sub_keys.push_back(devices::document_block_keys(
            e->fingerprint(), "bench",
            std::vector<std::int32_t>(s.prompt.begin() + seg.begin, s.prompt.begin() + seg.begin + seg.count),
            static_cast<std::size_t>(sub)));
        for (std::size_t j = 0; j < sub_keys[d].size(); ++j) {
          std::fill(block.begin(), block.end(), 0);
          const int r0 = static_cast<int>(j) * sub, r1 = std::min(s.doc_tokens, r0 + sub);
          const std::size_t elem = dtype_size(doc_shape.type), row = static_cast<std::size_t>(c.head_dim) * elem;
          for (std::size_t r = 0; r < static_cast<std::size_t>(c.layers) * 2 * c.kv_heads; ++r)
            std::memcpy(block.data() + r * sub * row, host[d].data() + r * s.doc_tokens * row + r0 * row,
                        (r1 - r0) * row);
          disk->write(sub_keys[d][j], {0, static_cast<std::uint32_t>(c.layers)}, block.data());
        }
      }
    }

    bench b(*e, ops, s);
    b.groups_ = groups;
    auto median = [](std::vector<double> v) {
      std::sort(v.begin(), v.end());
      return v[v.size() / 2];
    };
    std::int32_t full_token = -1;
    b.full_recompute(chunk, &full_token);  // warm-up
    std::vector<double> fulls;
    for (int r = 0; r < repeats; ++r) fulls.push_back(b.full_recompute(chunk, &full_token));
    const double full_s = median(fulls);
    // The policy's compute rate: selected rows through run_selected at the
    // quality floor's ratio (few rows over a long context cost more per
    // token than a prefill's, whose rate the earlier bench used).
    int sel_rows = 0;
    const double floor_ratio = policies::recompute_inputs{}.min_ratio;
    const double sel_s = b.selected_compute(floor_ratio, &sel_rows);
    const double token_layer_s = sel_s / (static_cast<double>(sel_rows) * c.layers);
    // The rate of documents computed in full by a split plan: run_selected
    // over the system text, the first half of the documents and the question.
    int front_rows = 0;
    const double front_s = b.selected_compute(0, &front_rows, s.docs / 2);
    const double front_token_layer_s = front_s / (static_cast<double>(front_rows) * c.layers);
    std::printf(
        "%s, %d tokens (%d documents of %d): full recompute %.4f s (%.3g s per token-layer); "
        "run_selected of %d rows %.4f s (%.3g s per token-layer)\n",
        preset.c_str(), n, s.docs, s.doc_tokens, full_s, full_s / (static_cast<double>(n) * c.layers), sel_rows, sel_s,
        token_layer_s);
    nlohmann::json records = nlohmann::json::array();
    for (const auto& t : tiers) {
      tier_source src;
      src.name = t;
      if (t == "host") {
        src.host = &host;
      } else {
        src.disk = disk.get();
        src.keys = sub_keys;
        src.sub = sub;
        src.gbps = t == "disk" ? 0 : std::stod(t);
      }
      limiter->set_rate(devices::rate_limiter::gbit_per_s(src.gbps));
      // The tier's rate from a load-only restore (ratio 0), for the policy.
      std::int32_t token = -1;
      double load_s = 0;
      b.reuse(src, 0, &token, nullptr, &load_s);
      const double reused_bytes = static_cast<double>(doc_shape.bytes()) * s.docs;
      const double bytes_per_s = reused_bytes / std::max(load_s, 1e-9);
      struct point {
        double ratio;
        std::string how;
        int front_docs = 0;
      };
      std::vector<point> points;
      for (double r : ratios) points.push_back({r, "fixed"});
      policies::recompute_plan plan;
      if (adaptive) {
        policies::recompute_inputs in;
        in.document_tokens = static_cast<double>(s.docs) * s.doc_tokens;
        in.other_tokens = s.system_tokens + s.question_tokens;
        in.layers = c.layers;
        in.check_layers = 0;  // EPIC
        in.token_layer_s = token_layer_s;
        in.kv_bytes_per_token_layer = static_cast<double>(doc_shape.bytes()) / s.doc_tokens / c.layers;
        in.load_bytes_per_s = bytes_per_s;
        // Rows of the last group run after the last load (reuse() runs one
        // forward per group as its loads land).
        in.tail_share = 1.0 / std::clamp(groups, 1, s.docs);
        in.split_front = split;
        in.front_token_layer_s = front_token_layer_s;
        plan = policies::choose_recompute_ratio(in);
        int front_docs = 0;
        if (!plan.full_recompute && plan.front_share > 0) {
          // Whole documents: the nearest count, planned again there.
          front_docs = std::clamp(static_cast<int>(std::lround(plan.front_share * s.docs)), 0, s.docs);
          plan.front_share = static_cast<double>(front_docs) / s.docs;
          plan.estimate_s = policies::recompute_split_estimate_s(in, plan.front_share, plan.ratio);
          if (front_docs == s.docs || plan.estimate_s * in.min_speedup >= plan.full_recompute_s) {
            plan.ratio = 1;
            plan.full_recompute = true;
            plan.front_share = 0;
            plan.estimate_s = plan.full_recompute_s;
            front_docs = 0;
          }
        } else if (!plan.full_recompute && src.disk) {
          // The disk reads whole sub-blocks: a reused share that starts
          // inside one loads rows that are recomputed anyway. Snap the
          // leading share to a sub-block boundary, down or up, whichever
          // plans faster, and plan again at that ratio.
          const int k = static_cast<int>(std::lround(plan.ratio * s.doc_tokens));
          double best = plan.ratio, best_s = 1e300;
          for (int kk : {k / sub * sub, std::min(s.doc_tokens, (k + sub - 1) / sub * sub)}) {
            const double r = std::clamp(static_cast<double>(kk) / s.doc_tokens, in.min_ratio, in.max_ratio);
            const double t = policies::recompute_estimate_s(in, r);
            if (t < best_s) best = r, best_s = t;
          }
          plan.ratio = best;
          plan.compute_s = policies::recompute_compute_s(in, best);
          plan.load_s = policies::recompute_load_s(in, best);
          plan.estimate_s = best_s;
          if (best_s * in.min_speedup >= plan.full_recompute_s) {
            plan.ratio = 1;
            plan.full_recompute = true;
            plan.estimate_s = plan.full_recompute_s;
          }
        }
        points.push_back(
            {plan.ratio,
             plan.full_recompute ? "adaptive (full recompute)" : (front_docs > 0 ? "adaptive (split)" : "adaptive"),
             front_docs});
      }
      for (const auto& [ratio, how, front_docs] : points) {
        std::vector<double> ttfts, loads;
        std::int32_t first = -1;
        std::vector<float> last;
        if (how == "adaptive (full recompute)") {
          ttfts = fulls;  // the plan is the full recompute itself
          first = full_token;
        } else {
          for (int r = 0; r < repeats; ++r) {
            double ls = 0;
            ttfts.push_back(b.reuse(src, ratio, &first, check ? &last : nullptr, &ls, nullptr, front_docs));
            loads.push_back(ls);
          }
        }
        nlohmann::json rec{{"model", preset},
                           {"backend", backend},
                           {"device", device_name},
                           {"context_tokens", n},
                           {"documents", s.docs},
                           {"doc_tokens", s.doc_tokens},
                           {"tier", t},
                           {"selection", "epic"},
                           // Share of the documents' tokens recomputed: the
                           // front documents in full plus `reused_ratio` of the others.
                           {"ratio", (front_docs + (s.docs - front_docs) * ratio) / s.docs},
                           {"reused_ratio", ratio},
                           {"front_docs", front_docs},
                           {"ratio_source", how},
                           {"ttft_s", median(ttfts)},
                           {"ttft_runs_s", ttfts},
                           {"full_recompute_s", full_s},
                           {"speedup", full_s / median(ttfts)},
                           {"tier_bytes_per_s", bytes_per_s},
                           {"loads_done_s", loads.empty() ? 0.0 : median(loads)},
                           {"compute", "run_selected"},
                           {"groups", groups},
                           {"selected_token_layer_s", token_layer_s},
                           {"first_token_equals_full", first == full_token}};
        if (how.rfind("adaptive", 0) == 0) {
          rec["plan_estimate_s"] = plan.estimate_s;
          rec["plan_full_recompute_s"] = plan.full_recompute_s;
          rec["plan_load_s"] = plan.load_s;
          rec["plan_compute_s"] = plan.compute_s;
          rec["front_token_layer_s"] = front_token_layer_s;
        }
        if (check && front_docs == 0 && how != "adaptive (full recompute)") {
          // The same restore through blend_prefill (run_selected): equal first token and hidden state.
          const kv_shape ps = kv_shape_of(c, n, dtype::f32);
          std::vector<float> kv(ps.bytes() / sizeof(float), 0.0f);
          for (int d = 0; d < s.docs; ++d)
            place_document({host[d].data(), doc_shape}, s.segments[1 + d].begin, {kv.data(), ps}, ops.inv_freq);
          blend_options o;
          o.selection = token_selection::epic;
          o.ratio = ratio;
          auto r = blend_prefill(*e, s.prompt, s.segments, {kv.data(), ps}, o);
          const bool same = r.last_hidden == last;
          rec["check_same_as_blend_prefill"] = same;
          if (!same)
            throw error(errc::io_failure, "restore differs from blend_prefill at ratio " + std::to_string(ratio));
        }
        std::printf("%-6s ratio %.3f, front %d docs (%s): ttft %.4f s, full %.4f s, %.2fx\n", t.c_str(), ratio,
                    front_docs, how.c_str(), median(ttfts), full_s, full_s / median(ttfts));
        records.push_back(rec);
        if (!out_path.empty()) {  // after every point, so that a cut-short run keeps what it measured
          std::ofstream out(out_path);
          out << records.dump(2) << "\n";
          if (!out) throw error(errc::io_failure, "cannot write " + out_path);
        }
        std::fflush(stdout);
      }
    }
    disk.reset();
    if (remove_dir) std::filesystem::remove_all(disk_dir);
  } catch (const std::exception& ex) {
    std::fprintf(stderr, "kvflow_nonprefix_bench: %s\n", ex.what());
    return 1;
  }
  return 0;
}
