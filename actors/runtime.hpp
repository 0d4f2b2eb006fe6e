#pragma once
// kvflow's embedding API: the one header a service includes to run kvflow's
// actor system in-process, submit prompts and get the first token, TTFT and
// a restore breakdown back.

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <future>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace kvflow {

/// The engine a runtime computes with.
enum class backend_kind { cpu, cuda };

/// "cpu" or "cuda".
const char* to_string(backend_kind b);

/// The backend runtime_options::backend names: "cpu", "cuda", or "auto"
/// (cuda where this build has CUDA and a GPU is found, else cpu). Throws
/// kvflow::error(invalid_argument) for another name and (unsupported) for
/// "cuda" without CUDA or a GPU.
backend_kind resolve_backend(const std::string& name);

/// Where the model comes from and how restores are scheduled. Defaults run
/// SmolLM2-135M-Instruct on the CPU with a host and a disk tier.
struct runtime_options {
  std::string model_path;        ///< GGUF, safetensors file or HF folder; empty: the default model
  std::string preset;            ///< with random weights instead of a file ("tiny-test", "llama-3-8b", ...)
  std::uint64_t seed = 1;        ///< for random weights
  std::string backend = "auto";  ///< "cpu", "cuda" or "auto" (cuda where a GPU is found)
  int threads = 0;               ///< CPU backend threads; 0: all cores
  int chunk_tokens = 256;        ///< tokens per chunk
  /// Tokens of adjacent chunks that one compute grant spans where it can
  /// (the gpu actor runs them as one forward, so small chunks compute as
  /// fast as large ones); 0: 2048 on CUDA, one chunk on the CPU (whose
  /// products gain nothing from more rows).
  int compute_group_tokens = 0;
  /// Milliseconds of link time over which a tier's load samples of one
  /// size are pooled before the cost model fits them
  /// (policies::cost_prior::rate_pool_s); negative: its default.
  double rate_pool_ms = -1;
  /// Milliseconds a registration into an idle scheduler holds the links,
  /// so that requests submitted together are planned together (compute
  /// starts at once); 0: none. Off by default: on the H200 2 ms cost a
  /// single 16k restore from disk at chunk 256 6% (0.364 -> 0.387 s) and
  /// did not move batch 8 beyond the disk's noise
  /// (apps/bench/results/h200/batch_window/).
  double admission_window_ms = 0;
  std::string policy = "two_pointer";
  double host_tier_gb = 4;              ///< pinned host pool capacity; at least one chunk (it stages stores)
  std::string disk_dir;                 ///< chunk file folder; empty: a temporary one, removed at the end
  double disk_tier_gb = 32;             ///< chunk files kept (least recently used go first); 0: no limit
  double disk_gbps = 0;                 ///< pace disk reads to this many Gbit/s; 0: unpaced
  double disk_write_gbps = 0;           ///< pace chunk writes (write-behind) to this many Gbit/s; 0: unpaced
  std::string tenant_salt = "default";  ///< from the server's tenant, never from a client
  std::size_t max_compute_cells = 0;    ///< cells in flight per GPU; 0: the policy default
  /// Prefill budget of a decode step: while requests decode, at most this
  /// many tokens of restore compute (rows times the share of layers a
  /// grant spans) run before each decode step, the rest wait for the next
  /// (Sarathi-Serve); restores run at full speed while nothing decodes.
  /// 0: no budget (restore compute runs ahead of decode steps).
  int step_prefill_tokens = 512;
  /// Bytes of granted loads not yet done, per tier link; 0: two chunks'
  /// worth. Small keeps the split adaptable: a granted load is never revoked.
  std::size_t max_load_bytes_in_flight = 0;
  /// Loads the policies keep in flight per link, in chunks' bytes (times
  /// the compute group); the default cap above follows it.
  std::uint32_t load_queue_chunks = 2;
  /// Layer-pipeline stages (stage_actor): 0 or 1 runs every layer on one
  /// gpu actor; N splits the layers into N stages of nearly equal size, each
  /// on its own engine with its own tier links, hidden states handed from
  /// stage to stage.
  int stages = 0;
  /// First layer of every stage after the first, ascending (overrides the
  /// even split; its size + 1 is the number of stages).
  std::vector<int> stage_splits;
  /// CUDA device of each stage; empty: device 0 for every stage.
  std::vector<int> stage_devices;
  /// Hand-off between stages: "host" (a copy through host memory) or
  /// "nccl" (CUDA only); empty: nccl on CUDA, host on the CPU.
  std::string stage_link;
  /// Stages served by other processes: one entry per stage, "host:port" of
  /// a `kvflow node --stage-layers` serving exactly that stage's layers of
  /// the same model (checked at start), or empty / "local" for a stage of
  /// this process; empty: every stage local. Hidden states and KV cross as
  /// bytes (actors/remote_stage); a stage's host that goes down fails the
  /// requests using it with peer_down.
  std::vector<std::string> stage_nodes;
  /// Deadline of one grant's part on a remote stage.
  std::chrono::milliseconds stage_timeout{60000};
  /// A cluster of `kvflow node` processes whose tiers this runtime uses as
  /// one remote tier: a file of one "[name] host:port" per line, and/or
  /// members given directly. Empty: no remote tier.
  std::string cluster_file;
  std::vector<std::string> cluster_members;
  std::size_t cluster_replicas = 0;  ///< stores also go to this many next owners
  bool local_tiers = true;           ///< false: no host or disk tier of its own, only the cluster's
  double remote_gbps = 0;            ///< the remote link's expected rate (a prior; measured loads refine it)
  std::string ucx_tls;               ///< UCX transports for KV across nodes (empty: UCX's choice)
  std::string ucx_devices;           ///< UCX network devices (empty: all)
  std::size_t ucx_lanes = 4;         ///< UCX workers (threads, connections per node) for KV across nodes
  /// Page-locked memory the remote tier's fetches land in, made once at
  /// start (remote_tier_options::landing_bytes; at least one chunk).
  std::uint64_t remote_landing_bytes = 1ull << 30;
  /// Credentials towards the cluster's nodes (PEM files; see actors/node_tls.hpp):
  /// all three or none; none: the cluster file's "cert/key/ca = PATH" lines.
  std::string cluster_cert, cluster_key, cluster_ca;
  /// Deadlines: a request that is not done `request_timeout_s` after its
  /// submit fails with deadline_exceeded; so does one whose grant, load or
  /// first token takes longer than `step_timeout_s` (a stuck tier or GPU).
  double request_timeout_s = 600;
  double step_timeout_s = 120;
  /// Fault injection for tests and soaks, "fault=probability,...,seed=N"
  /// (devices/fault_plan.hpp: disk_read_error, disk_truncate,
  /// disk_write_full, tier_stall, duplicate_completion). Empty: the
  /// environment variable KVFLOW_FAULTS, read once here; unset: no faults.
  std::string faults;
};

/// What the runtime holds that a request takes and must give back: after
/// every request is answered and flush() returned, each is back at its
/// value before (fault tests compare them).
struct resource_counters {
  std::int64_t requests = 0;         ///< submitted and not yet answered
  std::int64_t loads_in_flight = 0;  ///< disk load grants whose reads are not done and freed
  std::int64_t disk_reads = 0;       ///< disk reads whose completion has not run
  std::int64_t disk_writes = 0;      ///< chunk writes queued or being written
  std::int64_t host_leases = 0;      ///< leases on host pool blocks (pinned while held)
  std::int64_t staging_buffers = 0;  ///< host staging buffers alive (pinned where CUDA is), spares included
  std::int64_t staging_bytes = 0;
  std::int64_t open_fds = 0;  ///< file descriptors open in this process
  std::uint64_t faults_injected = 0;
};

/// Tokens [begin, begin + count) of a prompt that are a reusable document
/// (a RAG passage, a tool result): its KV is kept on its own, keyed by its
/// tokens, and reused wherever it appears (see README, "Document reuse").
struct document_span {
  std::uint32_t begin = 0;
  std::uint32_t count = 0;
};

struct submit_options {
  std::uint32_t max_new_tokens = 32;
  float temperature = 0;  ///< 0: greedy
  float top_p = 1;
  std::uint64_t seed = 0;
  std::string policy;      ///< empty: the runtime's policy
  bool store = true;       ///< store the prompt's new chunks to the tiers afterwards
  bool digest_kv = false;  ///< report a SHA-256 of the restored prompt KV (tests, checks)
  bool trace = false;      ///< report every grant's span (restore_report::spans)
  /// Non-prefix reuse: document segments of the prompt, ascending and
  /// disjoint. Where the prefix chain misses them, each is loaded from its
  /// document entry (or computed alone and stored), rotated to its place,
  /// and a share of its tokens recomputed; the rest of the prompt is
  /// computed. The prompt's KV is then approximate, so it is not stored
  /// under prefix keys. CPU backend; elsewhere the prompt restores as usual.
  std::vector<document_span> documents;
  std::string document_selection = "cacheblend";  ///< "cacheblend" or "epic"
  double recompute_ratio = -1;                    ///< share of document tokens recomputed; < 0: from the cost model
  /// The tenant whose salt keys this request's chunks (empty: runtime_options::tenant_salt).
  /// A server sets it from the API key, never from what a client sends:
  /// requests of different tenants never share a cached chunk.
  std::string tenant_salt;
  std::vector<std::int32_t> stop_token_ids;  ///< end decoding, beside the model's end-of-turn tokens
  double deadline_s = 0;                     ///< this request's deadline; 0: runtime_options::request_timeout_s
  /// Called with each generated token (the first included) as soon as it is
  /// sampled, in order, on an actor thread: keep it quick and non-throwing.
  std::function<void(std::int32_t token)> on_token;
  /// Set from any thread to stop the request: restore stops at its next
  /// finished grant, decoding at its next step; the request then frees its
  /// memory and reports finish_reason "cancelled".
  std::shared_ptr<std::atomic<bool>> cancel;
};

/// One tier's part in a request's lookup.
struct tier_stats {
  std::string tier;                ///< "host" or "disk"
  std::uint32_t lookups = 0;       ///< chunk keys asked for
  std::uint32_t hits = 0;          ///< of them, chunks the tier holds
  std::uint64_t bytes_loaded = 0;  ///< bytes this request loaded from it
};

/// One grant a request carried out: compute cells on the GPU or a load of
/// cells from a tier, chunks [chunk_begin, chunk_end) x layers [layer_begin,
/// layer_end). Times are seconds after submit; a compute grant's start is
/// when the GPU reached it (not when it was queued).
struct cell_span {
  bool compute = true;
  std::string source;  ///< "gpu", "host" or "disk"
  std::uint32_t chunk_begin = 0, chunk_end = 0, layer_begin = 0, layer_end = 0;
  double start_s = 0, end_s = 0;
};

/// What one request did.
struct restore_report {
  std::uint64_t request_id = 0;
  std::string policy;
  std::int32_t first_token = -1;
  double ttft_s = 0;   ///< submit to first token on the host
  double total_s = 0;  ///< submit to last generated token
  std::uint32_t prompt_tokens = 0;
  std::uint32_t chunks = 0;
  std::uint32_t cached_chunks = 0;  ///< prefix chunks found in a tier
  std::uint32_t cells_computed = 0;
  std::uint32_t cells_loaded = 0;
  std::uint64_t bytes_from_host = 0;
  std::uint64_t bytes_from_disk = 0;
  std::uint64_t bytes_from_remote = 0;
  std::vector<std::int32_t> tokens;              ///< generated tokens, the first included
  std::string text;                              ///< decoded, when the model has a tokenizer
  std::string kv_sha256;                         ///< hex digest of every prompt chunk's block, when asked for
  std::vector<cell_span> spans;                  ///< every grant in completion order, when traced
  std::uint32_t documents_reused = 0;            ///< document entries loaded from a tier
  std::uint32_t documents_computed = 0;          ///< document entries computed alone (and stored)
  std::uint32_t document_tokens_recomputed = 0;  ///< selected document tokens, above the check layers
  double recompute_ratio = 0;                    ///< the document path's; 1 where the plan chose the ordinary path
  std::string finish_reason;                     ///< "stop" (a stop token), "length" (max_new_tokens) or "cancelled"
  std::uint32_t grants_compute = 0;              ///< compute grants carried out
  std::uint32_t grants_load = 0;                 ///< load grants carried out
  std::vector<tier_stats> tiers;                 ///< per tier, fastest first
  std::uint32_t stage_handoffs = 0;              ///< chunk hidden states handed between pipeline stages
  double handoff_s = 0;                          ///< time those hand-offs took on the stages' threads
};

/// What a server needs to know about the loaded model.
struct model_info {
  std::string name;        ///< file name or preset
  int context_tokens = 0;  ///< positions: prompt plus generated tokens
  int vocab_size = 0;
  bool has_tokenizer = false;             ///< presets (random weights) have none: token ids only
  std::vector<std::int32_t> stop_tokens;  ///< end-of-turn and end-of-sequence ids: decoding ends there
};

struct chat_turn {
  std::string role;  ///< "system", "user" or "assistant"
  std::string content;
};

/// What the remote tier's fetches carried, summed since the runtime
/// started: the KV bytes they restored and the bytes that crossed the wire
/// for them (fewer where nodes send KV compressed).
struct wire_totals {
  std::uint64_t raw_bytes = 0;
  std::uint64_t wire_bytes = 0;
  std::uint64_t frames = 0;  ///< pieces that came compressed
};

/// An actor system with one gpu actor per device (or the CPU engine), one
/// tier actor per storage tier and the scheduler. Thread-safe: submit from
/// any thread. Destruction waits for requests in flight.
class runtime {
 public:
  /// Loads the model and starts the actors; throws kvflow::error with
  /// context when the model or a tier cannot be set up.
  explicit runtime(runtime_options opts = {});
  ~runtime();
  runtime(const runtime&) = delete;
  runtime& operator=(const runtime&) = delete;

  /// Submits a token sequence; the future holds the report or throws
  /// kvflow::error. A chunk that leaves its tier between lookup and load
  /// (evicted, corrupt, deleted) does not fail the request: it restores
  /// again once, computing what was lost (TTFT counts from this call).
  std::future<restore_report> submit(std::vector<std::int32_t> tokens, submit_options opts = {});
  /// Same with a callback, called on an actor thread exactly once.
  void submit(std::vector<std::int32_t> tokens, submit_options opts,
              std::function<void(std::exception_ptr, restore_report)> done);
  /// Applies the model's chat template and submits.
  std::future<restore_report> submit_chat(const std::vector<chat_turn>& turns, submit_options opts = {});
  /// The tokens submit_chat would submit: the chat template applied, then
  /// tokenized (needs a tokenizer).
  std::vector<std::int32_t> chat_tokens(const std::vector<chat_turn>& turns) const;

  /// Text of tokens (needs a tokenizer), and text to tokens.
  std::string detokenize(const std::vector<std::int32_t>& tokens) const;
  std::vector<std::int32_t> tokenize(const std::string& text) const;

  /// Drops every cached chunk from every tier (for cold runs).
  void clear_cache();

  /// Waits until every chunk stored so far is in its tiers (write-behind done).
  void flush();

  /// Paces the disk tier's reads to `gbps` Gbit/s from now on (0: unpaced),
  /// also in the middle of a request.
  void set_disk_rate(double gbps);

  /// Kills pipeline stage `index` (fault tests): requests using it fail
  /// with peer_down, and so does every later request. Throws
  /// kvflow::error(out_of_range) for a stage that does not exist.
  void stop_stage(int index);

  /// Kills the actor of local tier `tier` ("host" or "disk") and starts a
  /// new one over the same store (fault tests): a request loading from it
  /// restores again without it. Throws kvflow::error(not_found) when the
  /// runtime has no such tier.
  void restart_tier(const std::string& tier);

  /// The pool counters now (see resource_counters).
  resource_counters counters() const;

  /// What the scheduler has learned of a load link: rate samples and bytes
  /// per second of tier `tier` ("host", "disk", "remote") as a whole (link
  /// 0) or of one of its links (a remote tier's node index + 1). Throws
  /// kvflow::error(invalid_argument) for an unknown tier name.
  std::pair<std::uint64_t, double> learned_rate(const std::string& tier, std::uint16_t link = 0) const;
  /// The remote tier's fetches so far (zeros without a remote tier).
  wire_totals remote_wire_totals() const;

  const runtime_options& options() const;
  model_info model() const;
  backend_kind backend() const;
  /// "kvflow: <model> (<layers> layers, hidden <n>) on <backend>".
  std::string describe_engine() const;
  std::string describe() const;  ///< describe_engine(), chunks, policy, tiers: one line

 private:
  struct impl;
  std::unique_ptr<impl> impl_;
};

}  // namespace kvflow
