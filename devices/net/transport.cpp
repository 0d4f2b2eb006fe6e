#include "devices/net/transport.hpp"

#include <poll.h>
#include <ucp/api/ucp.h>
#include <xxhash.h>

#include <chrono>
#include <cstring>
#include <deque>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include "devices/net/wire_codec.hpp"
#include "devices/net/work_pool.hpp"
#include "messages/error.hpp"
#include "messages/log.hpp"

namespace kvflow::devices::net {

std::uint64_t checksum(const void* data, std::size_t bytes) { return XXH3_64bits(data, bytes); }

namespace {

std::uint64_t combine(const std::vector<std::uint64_t>& hashes) {
  // Fixed little-endian bytes, so both ends agree whatever their byte order.
  std::vector<std::uint8_t> b(hashes.size() * 8);
  for (std::size_t i = 0; i < hashes.size(); ++i)
    for (int k = 0; k < 8; ++k)
      b[i * 8 + static_cast<std::size_t>(k)] = static_cast<std::uint8_t>(hashes[i] >> (8 * k));
  return XXH3_64bits(b.data(), b.size());
}

std::uint64_t piece_count(std::uint64_t bytes, std::uint64_t piece_bytes) {
  return bytes == 0 ? 1 : (bytes + piece_bytes - 1) / piece_bytes;
}

}  // namespace

std::uint64_t checksum(const void* data, std::size_t bytes, std::size_t piece_bytes) {
  if (piece_bytes == 0) piece_bytes = std::max<std::size_t>(bytes, 1);
  auto n = piece_count(bytes, piece_bytes);
  std::vector<std::uint64_t> hashes(n);
  auto* p = static_cast<const std::uint8_t*>(data);
  for (std::uint64_t i = 0; i < n; ++i) {
    auto at = i * piece_bytes;
    hashes[i] = XXH3_64bits(p + at, std::min<std::uint64_t>(piece_bytes, bytes - at));
  }
  return combine(hashes);
}

std::size_t piece_bytes_for(std::size_t span_bytes) {
  constexpr std::size_t most = 8u << 20;
  if (span_bytes <= most) return std::max<std::size_t>(span_bytes, 1);
  for (std::size_t d = (span_bytes + most - 1) / most; d < span_bytes; ++d)
    if (span_bytes % d == 0 && span_bytes / d <= most) return span_bytes / d;
  return span_bytes;
}

namespace {

constexpr int piece_bits = 64 - transfer_id_bits;

std::uint64_t tag_of(std::uint64_t id, std::uint64_t piece) { return (id << piece_bits) | piece; }

std::uint64_t steady_ns() {
  return static_cast<std::uint64_t>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
          .count());
}

std::string ucs_text(ucs_status_t s) { return ucs_status_string(s); }

// A transport's address: "kvn" 1, the lane count, then each lane's UCX
// worker address as a 4-byte little-endian length and its bytes.
constexpr std::uint8_t address_magic[4] = {'k', 'v', 'n', 1};
constexpr std::size_t max_lanes = 64;

std::vector<std::uint8_t> pack_address(const std::vector<std::vector<std::uint8_t>>& lanes) {
  std::vector<std::uint8_t> out(address_magic, address_magic + 4);
  out.push_back(static_cast<std::uint8_t>(lanes.size()));
  for (auto& a : lanes) {
    for (int k = 0; k < 4; ++k) out.push_back(static_cast<std::uint8_t>(a.size() >> (8 * k)));
    out.insert(out.end(), a.begin(), a.end());
  }
  return out;
}

// A peer's lanes; what is wrong with the address when it cannot be read
// (it comes from the network: every length is checked).
std::vector<std::vector<std::uint8_t>> unpack_address(const std::vector<std::uint8_t>& b, std::string& why) {
  std::vector<std::vector<std::uint8_t>> lanes;
  if (b.size() < 5 || std::memcmp(b.data(), address_magic, 4) != 0) {
    why = "peer address of " + std::to_string(b.size()) + " bytes is not a kvflow transport's";
    return {};
  }
  std::size_t n = b[4], at = 5;
  if (n == 0 || n > max_lanes) {
    why = "peer address names " + std::to_string(n) + " lanes";
    return {};
  }
  for (std::size_t i = 0; i < n; ++i) {
    if (b.size() - at < 4) break;
    std::size_t len = 0;
    for (int k = 0; k < 4; ++k) len |= std::size_t{b[at + static_cast<std::size_t>(k)]} << (8 * k);
    at += 4;
    if (len == 0 || len > b.size() - at) break;
    lanes.emplace_back(b.begin() + static_cast<std::ptrdiff_t>(at), b.begin() + static_cast<std::ptrdiff_t>(at + len));
    at += len;
  }
  if (lanes.size() != n || at != b.size()) {
    why = "peer address is truncated or has trailing bytes";
    return {};
  }
  return lanes;
}

// An announced transfer, until its pieces land.
struct expected_transfer {
  std::uint64_t bytes = 0, piece_bytes = 0, pieces = 0;
  std::uint8_t* dst = nullptr;
  std::function<void(landed)> done;
  std::vector<std::uint8_t> started;  // per piece
  std::vector<std::uint64_t> hashes;  // per piece, as landed
  std::uint64_t landed_pieces = 0, receiving = 0, wire_bytes = 0;
  bool cancelled = false;
  bool compressed = false;  // pieces may come as wire_codec frames
  std::string failed;
  std::uint64_t first_ns = 0;  // when the first piece began landing
  std::uint64_t finished_ns = 0;

  std::uint64_t size_of(std::uint64_t piece) const { return std::min(piece_bytes, bytes - piece * piece_bytes); }
};

// A send in pieces, until every piece has left (or failed).
struct send_state {
  std::mutex m;
  std::uint64_t left = 0;
  std::string failed;
  std::vector<std::uint64_t> hashes;
  std::function<void(sent)> done;

  void piece_done(std::uint64_t piece, std::uint64_t hash, const std::string& why) {
    std::unique_lock<std::mutex> lock(m);
    if (why.empty())
      hashes[piece] = hash;
    else if (failed.empty())
      failed = why;
    if (--left > 0) return;
    sent s;
    s.ok = failed.empty();
    s.why = failed;
    if (s.ok) s.checksum = combine(hashes);
    auto d = std::move(done);
    lock.unlock();
    d(std::move(s));
  }
};

struct send_ctx {
  std::shared_ptr<send_state> state;
  std::uint64_t piece = 0, hash = 0, id = 0;
  bool hashed = false;  // a frame: `hash` is its raw piece's, known beforehand
};

struct lane;

struct recv_ctx {
  lane* owner = nullptr;
  std::uint64_t id = 0, piece = 0, bytes = 0;
  std::uint64_t raw_bytes = 0;  // what the piece decodes to (bytes, unless a frame)
  std::uint8_t* dst = nullptr;
  bool drop = false;
  bool frame = false;                 // a wire_codec frame, landing in scratch
  std::vector<std::uint8_t> scratch;  // for dropped pieces and frames (frames: from frame_buffers)
};

// Landing buffers for compressed frames, kept between pieces: a fresh
// vector per piece cost an allocation and a zero-fill of ~0.7 MB on the
// lane thread that also drains the socket. A buffer only grows (its tail
// past the frame is never read), and at most `keep` wait here.
class frame_buffers {
 public:
  std::vector<std::uint8_t> take(std::size_t bytes) {
    std::vector<std::uint8_t> b;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (!spare_.empty()) {
        b = std::move(spare_.back());
        spare_.pop_back();
      }
    }
    if (b.size() < bytes) b.resize(bytes);
    return b;
  }
  void give(std::vector<std::uint8_t> b) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (spare_.size() < keep) spare_.push_back(std::move(b));
  }

 private:
  static constexpr std::size_t keep = 32;
  std::mutex mutex_;
  std::vector<std::vector<std::uint8_t>> spare_;
};

// Frees endpoint close requests that have finished.
void reap(std::vector<void*>& closing) {
  for (auto it = closing.begin(); it != closing.end();) {
    if (ucp_request_check_status(*it) != UCS_INPROGRESS) {
      ucp_request_free(*it);
      it = closing.erase(it);
    } else {
      ++it;
    }
  }
}

}  // namespace

struct transport::impl {
  std::vector<std::unique_ptr<lane>> lanes;
  std::mutex mutex;
  std::map<std::uint64_t, expected_transfer> expected;  // under mutex
  std::atomic<std::uint64_t> refused{0};
  std::atomic<bool> stopping{false};
  std::atomic<std::uint64_t> next_lane{0};
  std::unique_ptr<work_pool> decoders;  // frames decode here, off the lanes
  frame_buffers frames;                 // where frames land before decoding
  std::atomic<std::uint64_t> raw_landed{0}, wire_landed{0}, frames_landed{0};

  void finish_recv(recv_ctx* ctx, ucs_status_t status, std::uint64_t length);
  void decode(std::unique_ptr<recv_ctx> ctx);
  void settle(std::unique_ptr<recv_ctx> ctx, bool ok, std::string why, std::uint64_t hash);
  // Answers a send that cannot start, on a lane's thread as every answer.
  void fail_send(std::function<void(sent)> done, std::string why);
};

namespace {

// One UCX worker and the thread that progresses it.
struct lane {
  transport::impl* owner = nullptr;
  ucp_context_h context = nullptr;
  ucp_worker_h worker = nullptr;
  int efd = -1;
  std::vector<std::uint8_t> address;
  std::map<std::vector<std::uint8_t>, ucp_ep_h> endpoints;  // this lane's thread only
  std::vector<void*> closing;                               // ep close requests still in flight
  std::set<void*> receiving;                                // tag receives in flight
  bool leak = false;                     // a peer never let go: the worker cannot be destroyed safely
  std::atomic<std::uint64_t> landed{0};  // pieces of announced transfers that landed here
  std::mutex ops_mutex;
  std::deque<std::function<void()>> ops;  // run on the thread
  std::thread thread;

  ~lane() {
    if (!worker || leak) return;
    ucp_worker_destroy(worker);
    ucp_cleanup(context);
  }

  void post(std::function<void()> op) {
    {
      std::lock_guard<std::mutex> lock(ops_mutex);
      ops.push_back(std::move(op));
    }
    ucp_worker_signal(worker);
  }

  // A peer whose connection failed: its endpoint goes, so the next send
  // connects again (a node that returns is reachable again).
  static void on_ep_error(void* arg, ucp_ep_h ep, ucs_status_t status) {
    auto* self = static_cast<lane*>(arg);
    for (auto it = self->endpoints.begin(); it != self->endpoints.end(); ++it) {
      if (it->second != ep) continue;
      logger("net")->warn("ucx: peer connection failed: {}", ucs_text(status));
      self->endpoints.erase(it);
      break;
    }
    ucp_request_param_t p{};
    p.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS;
    p.flags = UCP_EP_CLOSE_FLAG_FORCE;
    auto* req = ucp_ep_close_nbx(ep, &p);
    if (UCS_PTR_IS_PTR(req)) self->closing.push_back(req);
  }

  ucp_ep_h endpoint(const std::vector<std::uint8_t>& peer, std::string& why) {
    auto it = endpoints.find(peer);
    if (it != endpoints.end()) return it->second;
    ucp_ep_params_t p{};
    p.field_mask =
        UCP_EP_PARAM_FIELD_REMOTE_ADDRESS | UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE | UCP_EP_PARAM_FIELD_ERR_HANDLER;
    p.address = reinterpret_cast<const ucp_address_t*>(peer.data());
    p.err_mode = UCP_ERR_HANDLING_MODE_PEER;
    p.err_handler.cb = &lane::on_ep_error;
    p.err_handler.arg = this;
    ucp_ep_h ep = nullptr;
    auto s = ucp_ep_create(worker, &p, &ep);
    if (s != UCS_OK) {
      why = "ucx: cannot reach peer: " + ucs_text(s);
      return nullptr;
    }
    endpoints.emplace(peer, ep);
    return ep;
  }

  static void on_send(void* request, ucs_status_t status, void* user) {
    std::unique_ptr<send_ctx> ctx(static_cast<send_ctx*>(user));
    ucp_request_free(request);
    ctx->state->piece_done(
        ctx->piece, ctx->hash,
        status == UCS_OK ? std::string{} : "ucx send of transfer " + std::to_string(ctx->id) + ": " + ucs_text(status));
  }

  // Sends one piece (on this lane's thread), hashing it first.
  void send_piece(const std::vector<std::uint8_t>& peer, std::unique_ptr<send_ctx> ctx, const void* data,
                  std::size_t bytes) {
    std::string why;
    auto ep = endpoint(peer, why);
    if (!ep) return ctx->state->piece_done(ctx->piece, 0, why);
    if (!ctx->hashed) ctx->hash = XXH3_64bits(data, bytes);
    ucp_request_param_t p{};
    p.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA;
    p.cb.send = &lane::on_send;
    p.user_data = ctx.get();
    auto* req = ucp_tag_send_nbx(ep, data, bytes, tag_of(ctx->id, ctx->piece), &p);
    if (req == nullptr) {
      ctx->state->piece_done(ctx->piece, ctx->hash, {});
    } else if (UCS_PTR_IS_ERR(req)) {
      ctx->state->piece_done(ctx->piece, 0,
                             "ucx send of transfer " + std::to_string(ctx->id) + ": " + ucs_text(UCS_PTR_STATUS(req)));
    } else {
      ctx.release();  // on_send owns it
    }
    // Start the rendezvous before hashing the next piece.
    ucp_worker_progress(worker);
  }

  static void on_recv(void* request, ucs_status_t status, const ucp_tag_recv_info_t* info, void* user) {
    auto* ctx = static_cast<recv_ctx*>(user);
    ctx->owner->receiving.erase(request);
    ucp_request_free(request);
    ctx->owner->owner->finish_recv(ctx, status, info ? info->length : 0);
  }

  // Takes every tagged piece waiting in the worker: announced ones land
  // where announced, the rest are read into scratch and dropped.
  void probe() {
    auto& t = *owner;
    for (;;) {
      ucp_tag_recv_info_t info{};
      ucp_tag_message_h msg = ucp_tag_probe_nb(worker, 0, 0, 1, &info);
      if (!msg) return;
      auto* ctx = new recv_ctx;
      ctx->owner = this;
      ctx->id = info.sender_tag >> piece_bits;
      ctx->piece = info.sender_tag & (max_pieces - 1);
      ctx->bytes = info.length;
      {
        std::lock_guard<std::mutex> lock(t.mutex);
        auto it = t.expected.find(ctx->id);
        if (it != t.expected.end()) {
          auto& x = it->second;
          // A frame is shorter than its piece, so what it may make this
          // side allocate is bounded by what this side announced.
          const bool fits = ctx->piece < x.pieces && (x.size_of(ctx->piece) == info.length ||
                                                      (x.compressed && info.length < x.size_of(ctx->piece)));
          if (!x.cancelled && x.failed.empty() && fits && !x.started[ctx->piece]) {
            x.started[ctx->piece] = 1;
            if (x.first_ns == 0) x.first_ns = steady_ns();
            ++x.receiving;
            ctx->dst = x.dst + ctx->piece * x.piece_bytes;
            ctx->raw_bytes = x.size_of(ctx->piece);
            ctx->frame = info.length != ctx->raw_bytes;
          }
        }
      }
      void* dst = ctx->dst;
      std::size_t len = info.length;
      if (ctx->frame) {
        ctx->scratch = t.frames.take(len);
        dst = ctx->scratch.data();
      }
      if (!dst) {
        // Read into a small buffer: UCX consumes the message and reports it
        // truncated; a peer cannot make this side allocate what it declares.
        ctx->drop = true;
        ctx->scratch.resize(4096);
        dst = ctx->scratch.data();
        len = ctx->scratch.size();
        t.refused.fetch_add(1);
        logger("net")->warn("ucx: dropped {} bytes of piece {} of unannounced transfer {}", info.length, ctx->piece,
                            ctx->id);
      }
      ucp_request_param_t p{};
      p.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA;
      p.cb.recv = &lane::on_recv;
      p.user_data = ctx;
      auto* req = ucp_tag_msg_recv_nbx(worker, dst, len, msg, &p);
      if (req == nullptr) {
        t.finish_recv(ctx, UCS_OK, info.length);
      } else if (UCS_PTR_IS_ERR(req)) {
        t.finish_recv(ctx, UCS_PTR_STATUS(req), 0);
      } else {
        receiving.insert(req);
      }
    }
  }

  void run() {
    for (;;) {
      std::deque<std::function<void()>> todo;
      {
        std::lock_guard<std::mutex> lock(ops_mutex);
        todo.swap(ops);
      }
      for (auto& op : todo) op();
      while (ucp_worker_progress(worker) != 0) {
      }
      probe();
      reap(closing);
      if (owner->stopping) break;
      auto s = ucp_worker_arm(worker);
      if (s == UCS_ERR_BUSY) continue;
      {
        std::lock_guard<std::mutex> lock(ops_mutex);
        if (!ops.empty()) continue;
      }
      pollfd pfd{efd, POLLIN, 0};
      ::poll(&pfd, 1, 100);
    }
    // Cancel receives in flight (a stopped peer would hold them forever),
    // close every endpoint; sends still pending fail through their callbacks.
    for (auto* r : std::set<void*>(receiving)) ucp_request_cancel(worker, r);
    for (auto& [peer, ep] : endpoints) {
      ucp_request_param_t p{};
      p.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS;
      p.flags = UCP_EP_CLOSE_FLAG_FORCE;
      auto* req = ucp_ep_close_nbx(ep, &p);
      if (UCS_PTR_IS_PTR(req)) closing.push_back(req);
    }
    endpoints.clear();
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(2);
    while ((!closing.empty() || !receiving.empty()) && std::chrono::steady_clock::now() < deadline) {
      ucp_worker_progress(worker);
      reap(closing);
    }
    if (!closing.empty() || !receiving.empty()) {
      // UCX asserts when a worker with requests still on its endpoints is
      // destroyed; a peer that stopped answering mid-transfer leaves them.
      // The worker is left to the process's exit instead.
      logger("net")->warn("ucx: {} transfers and {} closes still pending at shutdown; worker left open",
                          receiving.size(), closing.size());
      leak = true;
    }
  }
};

// Starts one lane: its own UCX context and worker (no state shared between
// lane threads).
std::unique_ptr<lane> start_lane(const transport_options& options, transport::impl* owner) {
  auto l = std::make_unique<lane>();
  l->owner = owner;
  ucp_config_t* config = nullptr;
  auto s = ucp_config_read(nullptr, nullptr, &config);
  if (s != UCS_OK) throw error(errc::io_failure, "ucx: cannot read its configuration: " + ucs_text(s));
  auto modify = [&](const char* name, const std::string& value) {
    if (value.empty()) return;
    auto r = ucp_config_modify(config, name, value.c_str());
    if (r != UCS_OK) {
      ucp_config_release(config);
      throw error(errc::invalid_argument, std::string("ucx: ") + name + "=" + value + ": " + ucs_text(r));
    }
  };
  modify("TLS", options.tls);
  modify("NET_DEVICES", options.devices);
  ucp_params_t params{};
  params.field_mask = UCP_PARAM_FIELD_FEATURES;
  params.features = UCP_FEATURE_TAG | UCP_FEATURE_WAKEUP;
  s = ucp_init(&params, config, &l->context);
  ucp_config_release(config);
  if (s != UCS_OK) throw error(errc::io_failure, "ucx: ucp_init: " + ucs_text(s));
  ucp_worker_params_t wp{};
  wp.field_mask = UCP_WORKER_PARAM_FIELD_THREAD_MODE;
  wp.thread_mode = UCS_THREAD_MODE_SINGLE;
  s = ucp_worker_create(l->context, &wp, &l->worker);
  if (s != UCS_OK) {
    ucp_cleanup(l->context);
    l->worker = nullptr;
    throw error(errc::io_failure, "ucx: ucp_worker_create: " + ucs_text(s));
  }
  ucp_address_t* addr = nullptr;
  std::size_t addr_len = 0;
  s = ucp_worker_get_address(l->worker, &addr, &addr_len);
  if (s == UCS_OK) {
    auto* b = reinterpret_cast<const std::uint8_t*>(addr);
    l->address.assign(b, b + addr_len);
    ucp_worker_release_address(l->worker, addr);
    s = ucp_worker_get_efd(l->worker, &l->efd);
  }
  if (s != UCS_OK) throw error(errc::io_failure, "ucx: worker address or event fd: " + ucs_text(s));
  return l;
}

}  // namespace

void transport::impl::finish_recv(recv_ctx* ctx, ucs_status_t status, std::uint64_t length) {
  std::unique_ptr<recv_ctx> owned(ctx);
  if (ctx->drop) return;
  const bool ok = status == UCS_OK && length == ctx->bytes;
  if (ok && ctx->frame) {
    // Decoding takes milliseconds per piece: the lane goes back to its
    // worker, so its TCP stream keeps draining meanwhile.
    auto* raw = owned.release();
    decoders->post([this, raw] { decode(std::unique_ptr<recv_ctx>(raw)); });
    return;
  }
  const std::uint64_t hash = ok ? XXH3_64bits(ctx->dst, length) : 0;
  std::string why;
  if (!ok)
    why = status != UCS_OK ? "ucx receive of transfer " + std::to_string(ctx->id) + ": " + ucs_text(status)
                           : "piece " + std::to_string(ctx->piece) + " of transfer " + std::to_string(ctx->id) +
                                 " landed " + std::to_string(length) + " bytes";
  settle(std::move(owned), ok, std::move(why), hash);
}

void transport::impl::fail_send(std::function<void(sent)> done, std::string why) {
  lanes[0]->post([done = std::move(done), why = std::move(why)]() mutable {
    sent s;
    s.why = std::move(why);
    done(std::move(s));
  });
}

void transport::impl::decode(std::unique_ptr<recv_ctx> ctx) {
  try {
    wire_decode(ctx->scratch.data(), ctx->bytes, ctx->dst, ctx->raw_bytes);
  } catch (const std::exception& e) {
    auto why = "piece " + std::to_string(ctx->piece) + " of transfer " + std::to_string(ctx->id) + ": " + e.what();
    frames.give(std::move(ctx->scratch));
    return settle(std::move(ctx), false, std::move(why), 0);
  }
  frames.give(std::move(ctx->scratch));
  const auto hash = XXH3_64bits(ctx->dst, ctx->raw_bytes);
  frames_landed.fetch_add(1, std::memory_order_relaxed);
  settle(std::move(ctx), true, {}, hash);
}

void transport::impl::settle(std::unique_ptr<recv_ctx> ctx, bool ok, std::string why, std::uint64_t hash) {
  std::unique_lock<std::mutex> lock(mutex);
  auto it = expected.find(ctx->id);
  if (it == expected.end()) return;
  auto& x = it->second;
  --x.receiving;
  if (ok) {
    ctx->owner->landed.fetch_add(1, std::memory_order_relaxed);
    x.hashes[ctx->piece] = hash;
    ++x.landed_pieces;
    x.wire_bytes += ctx->bytes;
    x.finished_ns = std::max(x.finished_ns, steady_ns());
  } else if (x.failed.empty()) {
    x.failed = std::move(why);
  }
  const bool all = x.landed_pieces == x.pieces;
  if (!all && !((x.cancelled || !x.failed.empty()) && x.receiving == 0)) return;
  auto t = std::move(x);
  expected.erase(it);
  lock.unlock();
  landed l;
  l.ok = all;
  l.bytes = all ? t.bytes : 0;
  l.wire_bytes = all ? t.wire_bytes : 0;
  l.finished_ns = t.finished_ns;
  l.first_ns = t.first_ns;
  if (all) {
    l.checksum = combine(t.hashes);
    raw_landed.fetch_add(t.bytes, std::memory_order_relaxed);
    wire_landed.fetch_add(t.wire_bytes, std::memory_order_relaxed);
  } else
    l.why = !t.failed.empty() ? t.failed : "transfer " + std::to_string(ctx->id) + " withdrawn while landing";
  ctx.reset();  // a frame's buffer goes before the answer
  t.done(std::move(l));
}

transport::transport(const transport_options& options) : impl_(std::make_unique<impl>()) {
  auto& m = *impl_;
  if (options.lanes == 0 || options.lanes > max_lanes)
    throw error(errc::invalid_argument, "ucx lanes " + std::to_string(options.lanes) + ": want 1 to 64");
  std::vector<std::vector<std::uint8_t>> addresses;
  for (std::size_t i = 0; i < options.lanes; ++i) {
    m.lanes.push_back(start_lane(options, &m));
    addresses.push_back(m.lanes.back()->address);
  }
  address_ = pack_address(addresses);
  auto decoders = options.decode_threads;
  if (decoders == 0)
    decoders = std::max<std::size_t>(2, std::min<std::size_t>(8, std::thread::hardware_concurrency() / 2));
  m.decoders = std::make_unique<work_pool>(decoders);
  for (auto& l : m.lanes) l->thread = std::thread([p = l.get()] { p->run(); });
}

transport::~transport() {
  auto& m = *impl_;
  m.stopping = true;
  for (auto& l : m.lanes) ucp_worker_signal(l->worker);
  for (auto& l : m.lanes)
    if (l->thread.joinable()) l->thread.join();
  m.decoders.reset();  // decodes what landed, answering those transfers
  std::map<std::uint64_t, expected_transfer> left;
  {
    std::lock_guard<std::mutex> lock(m.mutex);
    left.swap(m.expected);
  }
  for (auto& [id, t] : left) {
    landed l;
    l.why = "transport stopped before transfer " + std::to_string(id) + " landed";
    t.done(std::move(l));
  }
  m.lanes.clear();
}

std::size_t transport::lanes() const { return impl_->lanes.size(); }

std::uint64_t transport::refused() const { return impl_->refused.load(); }

landed_totals transport::totals() const {
  return {impl_->raw_landed.load(), impl_->wire_landed.load(), impl_->frames_landed.load()};
}

std::vector<std::uint64_t> transport::landed_per_lane() const {
  std::vector<std::uint64_t> out;
  for (auto& l : impl_->lanes) out.push_back(l->landed.load(std::memory_order_relaxed));
  return out;
}

void transport::expect(std::uint64_t id, std::uint64_t bytes, void* dst, std::function<void(landed)> done,
                       std::uint64_t piece_bytes, bool compressed) {
  if (id >> transfer_id_bits)
    throw error(errc::invalid_argument,
                "transfer id " + std::to_string(id) + " beyond " + std::to_string(transfer_id_bits) + " bits");
  if (piece_bytes == 0) piece_bytes = std::max<std::uint64_t>(bytes, 1);
  auto pieces = piece_count(bytes, piece_bytes);
  if (pieces > max_pieces)
    throw error(errc::invalid_argument, "transfer " + std::to_string(id) + " of " + std::to_string(pieces) + " pieces");
  expected_transfer t;
  t.bytes = bytes;
  t.piece_bytes = piece_bytes;
  t.pieces = pieces;
  t.dst = static_cast<std::uint8_t*>(dst);
  t.compressed = compressed;
  t.done = std::move(done);
  t.started.assign(pieces, 0);
  t.hashes.assign(pieces, 0);
  std::lock_guard<std::mutex> lock(impl_->mutex);
  if (impl_->expected.count(id))
    throw error(errc::invalid_argument, "transfer " + std::to_string(id) + " announced twice");
  impl_->expected.emplace(id, std::move(t));
  // Senders send only after the announcement reached them (a reply to the
  // control message), so a piece never arrives before its announcement; one
  // that did was dropped as unannounced.
}

bool transport::cancel(std::uint64_t id) {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  auto it = impl_->expected.find(id);
  if (it == impl_->expected.end()) return false;
  if (it->second.receiving == 0) {
    // Nothing is being written to dst: later pieces find no announcement.
    impl_->expected.erase(it);
    return true;
  }
  it->second.cancelled = true;
  return false;
}

void transport::send(const std::vector<std::uint8_t>& peer, std::uint64_t id, std::vector<region> regions,
                     std::uint64_t piece_bytes, std::function<void(sent)> done) {
  std::uint64_t total = 0;
  for (auto& r : regions) total += r.bytes;
  if (piece_bytes == 0) piece_bytes = std::max<std::uint64_t>(total, 1);
  // Every piece lies inside one region.
  std::vector<outgoing_piece> pieces;
  for (std::size_t k = 0; k < regions.size(); ++k) {
    auto& r = regions[k];
    if (k + 1 < regions.size() && r.bytes % piece_bytes != 0)
      return impl_->fail_send(std::move(done), "transfer " + std::to_string(id) + ": a region of " +
                                                   std::to_string(r.bytes) + " bytes is not whole pieces of " +
                                                   std::to_string(piece_bytes));
    for (std::size_t at = 0; at < r.bytes; at += piece_bytes)
      pieces.push_back(
          {static_cast<const std::uint8_t*>(r.data) + at, std::min<std::size_t>(piece_bytes, r.bytes - at)});
  }
  if (pieces.empty()) pieces.push_back({nullptr, 0});
  send_pieces(peer, id, std::move(pieces), std::move(done));
}

void transport::send_pieces(const std::vector<std::uint8_t>& peer, std::uint64_t id, std::vector<outgoing_piece> pieces,
                            std::function<void(sent)> done) {
  auto& m = *impl_;
  auto fail_now = [&](std::string why) { m.fail_send(std::move(done), std::move(why)); };
  if (pieces.empty()) return fail_now("transfer " + std::to_string(id) + " has no piece");
  if (id >> transfer_id_bits) return fail_now("transfer id " + std::to_string(id) + " out of range");
  std::string why;
  auto peer_lanes = unpack_address(peer, why);
  if (peer_lanes.empty()) return fail_now(why);
  if (pieces.size() > max_pieces) return fail_now("transfer " + std::to_string(id) + " has too many pieces");
  auto st = std::make_shared<send_state>();
  st->left = pieces.size();
  st->hashes.assign(pieces.size(), 0);
  st->done = std::move(done);
  const auto L = m.lanes.size();
  const auto first = m.next_lane.fetch_add(1);
  // Piece i leaves on lane (first + i) % L for the peer's lane (first + i) %
  // its lanes: consecutive sends of one piece each (a grant of one span)
  // rotate over the receiver's lanes too. Aimed at the peer's lane i, every
  // one-piece transfer landed on its lane 0: one thread received and hashed
  // all of them (two_pointer's one-cell grants used 0.56-0.62 of 25 Gbit/s).
  std::vector<std::vector<std::uint64_t>> per_lane(L);
  for (std::uint64_t i = 0; i < pieces.size(); ++i) per_lane[(first + i) % L].push_back(i);
  for (std::size_t l = 0; l < L; ++l) {
    if (per_lane[l].empty()) continue;
    std::vector<std::pair<std::vector<std::uint8_t>, std::unique_ptr<send_ctx>>> work;
    std::vector<outgoing_piece> mine;
    for (auto i : per_lane[l]) {
      auto ctx = std::make_unique<send_ctx>();
      ctx->state = st;
      ctx->piece = i;
      ctx->id = id;
      ctx->hashed = pieces[i].frame;
      ctx->hash = pieces[i].raw_checksum;
      work.emplace_back(peer_lanes[(first + i) % peer_lanes.size()], std::move(ctx));
      mine.push_back(pieces[i]);
    }
    auto* ln = m.lanes[l].get();
    auto w = std::make_shared<decltype(work)>(std::move(work));
    ln->post([ln, w, mine = std::move(mine)]() {
      for (std::size_t k = 0; k < w->size(); ++k)
        ln->send_piece((*w)[k].first, std::move((*w)[k].second), mine[k].data, mine[k].bytes);
    });
  }
}

void transport::send(const std::vector<std::uint8_t>& peer, std::uint64_t id, const void* data, std::size_t bytes,
                     std::function<void(bool, std::string)> done) {
  send(peer, id, {region{data, bytes}}, 0, [done = std::move(done)](sent s) { done(s.ok, std::move(s.why)); });
}

}  // namespace kvflow::devices::net
