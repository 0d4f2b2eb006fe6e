#include "devices/net/transport.hpp"

#include <poll.h>
#include <ucp/api/ucp.h>
#include <xxhash.h>

#include <chrono>
#include <cstring>
#include <set>

#include "messages/error.hpp"
#include "messages/log.hpp"

namespace kvflow::devices::net {

std::uint64_t checksum(const void* data, std::size_t bytes) { return XXH3_64bits(data, bytes); }

namespace {

std::uint64_t steady_ns() {
  return static_cast<std::uint64_t>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
          .count());
}

std::string ucs_text(ucs_status_t s) { return ucs_status_string(s); }

// An announced transfer, until its bytes land.
struct expected_transfer {
  std::uint64_t bytes = 0;
  void* dst = nullptr;
  std::function<void(landed)> done;
  bool receiving = false;
};

struct send_ctx {
  std::function<void(bool, std::string)> done;
};

struct recv_ctx {
  transport::impl* owner = nullptr;
  std::uint64_t id = 0;
  std::uint64_t bytes = 0;
  bool drop = false;
  std::vector<std::uint8_t> scratch;  // for dropped messages
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
  ucp_context_h context = nullptr;
  ucp_worker_h worker = nullptr;
  int efd = -1;
  std::map<std::vector<std::uint8_t>, ucp_ep_h> endpoints;  // progress thread only
  std::mutex* mutex = nullptr;                              // transport::mutex_
  std::map<std::uint64_t, expected_transfer> expected;      // under *mutex
  std::atomic<std::uint64_t>* refused = nullptr;
  std::vector<void*> closing;  // ep close requests still in flight
  std::set<void*> receiving;   // tag receives in flight (progress thread only)
  bool leak = false;           // a peer never let go: the worker cannot be destroyed safely

  // A peer whose connection failed: its endpoint goes, so the next send
  // connects again (a node that returns is reachable again).
  static void on_ep_error(void* arg, ucp_ep_h ep, ucs_status_t status) {
    auto* self = static_cast<impl*>(arg);
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
    p.err_handler.cb = &impl::on_ep_error;
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
    ctx->done(status == UCS_OK, status == UCS_OK ? std::string{} : "ucx send: " + ucs_text(status));
  }

  void finish_recv(recv_ctx* ctx, ucs_status_t status, std::uint64_t length) {
    std::unique_ptr<recv_ctx> owned(ctx);
    if (ctx->drop) return;
    expected_transfer t;
    {
      std::lock_guard<std::mutex> lock(*mutex);
      auto it = expected.find(ctx->id);
      if (it == expected.end()) return;
      t = std::move(it->second);
      expected.erase(it);
    }
    landed l;
    l.bytes = length;
    l.finished_ns = steady_ns();
    l.ok = status == UCS_OK && length == t.bytes;
    if (status != UCS_OK)
      l.why = "ucx receive of transfer " + std::to_string(ctx->id) + ": " + ucs_text(status);
    else if (length != t.bytes)
      l.why = "transfer " + std::to_string(ctx->id) + " landed " + std::to_string(length) + " bytes, announced " +
              std::to_string(t.bytes);
    t.done(std::move(l));
  }

  static void on_recv(void* request, ucs_status_t status, const ucp_tag_recv_info_t* info, void* user) {
    auto* ctx = static_cast<recv_ctx*>(user);
    ctx->owner->receiving.erase(request);
    ucp_request_free(request);
    ctx->owner->finish_recv(ctx, status, info ? info->length : 0);
  }

  // Takes every tagged message waiting in the worker: announced ones land
  // where announced, the rest are read into scratch and dropped.
  void probe() {
    for (;;) {
      ucp_tag_recv_info_t info{};
      ucp_tag_message_h msg = ucp_tag_probe_nb(worker, 0, 0, 1, &info);
      if (!msg) return;
      auto* ctx = new recv_ctx;
      ctx->owner = this;
      ctx->id = info.sender_tag;
      void* dst = nullptr;
      std::size_t len = 0;
      {
        std::lock_guard<std::mutex> lock(*mutex);
        auto it = expected.find(info.sender_tag);
        if (it != expected.end() && !it->second.receiving && it->second.bytes == info.length) {
          it->second.receiving = true;
          dst = it->second.dst;
          len = info.length;
        }
      }
      if (!dst) {
        // Read into a small buffer: UCX consumes the message and reports it
        // truncated; a peer cannot make this side allocate what it declares.
        ctx->drop = true;
        ctx->scratch.resize(4096);
        dst = ctx->scratch.data();
        len = ctx->scratch.size();
        refused->fetch_add(1);
        logger("net")->warn("ucx: dropped {} bytes of unannounced transfer {}", info.length, info.sender_tag);
      }
      ucp_request_param_t p{};
      p.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA;
      p.cb.recv = &impl::on_recv;
      p.user_data = ctx;
      auto* req = ucp_tag_msg_recv_nbx(worker, dst, len, msg, &p);
      if (req == nullptr) {
        finish_recv(ctx, UCS_OK, info.length);
      } else if (UCS_PTR_IS_ERR(req)) {
        finish_recv(ctx, UCS_PTR_STATUS(req), 0);
      } else {
        receiving.insert(req);
      }
    }
  }
};

transport::transport(const transport_options& options) : impl_(std::make_unique<impl>()) {
  auto& m = *impl_;
  m.mutex = &mutex_;
  m.refused = &refused_;
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
  s = ucp_init(&params, config, &m.context);
  ucp_config_release(config);
  if (s != UCS_OK) throw error(errc::io_failure, "ucx: ucp_init: " + ucs_text(s));
  ucp_worker_params_t wp{};
  wp.field_mask = UCP_WORKER_PARAM_FIELD_THREAD_MODE;
  wp.thread_mode = UCS_THREAD_MODE_SINGLE;
  s = ucp_worker_create(m.context, &wp, &m.worker);
  if (s != UCS_OK) {
    ucp_cleanup(m.context);
    throw error(errc::io_failure, "ucx: ucp_worker_create: " + ucs_text(s));
  }
  ucp_address_t* addr = nullptr;
  std::size_t addr_len = 0;
  s = ucp_worker_get_address(m.worker, &addr, &addr_len);
  if (s == UCS_OK) {
    auto* b = reinterpret_cast<const std::uint8_t*>(addr);
    address_.assign(b, b + addr_len);
    ucp_worker_release_address(m.worker, addr);
    s = ucp_worker_get_efd(m.worker, &m.efd);
  }
  if (s != UCS_OK) {
    ucp_worker_destroy(m.worker);
    ucp_cleanup(m.context);
    throw error(errc::io_failure, "ucx: worker address or event fd: " + ucs_text(s));
  }
  thread_ = std::thread([this] { run(); });
}

transport::~transport() {
  stopping_ = true;
  wake();
  thread_.join();
  auto& m = *impl_;
  std::map<std::uint64_t, expected_transfer> left;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    left.swap(m.expected);
  }
  for (auto& [id, t] : left) {
    landed l;
    l.why = "transport stopped before transfer " + std::to_string(id) + " landed";
    t.done(std::move(l));
  }
  if (m.leak) return;
  ucp_worker_destroy(m.worker);
  ucp_cleanup(m.context);
}

void transport::wake() { ucp_worker_signal(impl_->worker); }

void transport::expect(std::uint64_t id, std::uint64_t bytes, void* dst, std::function<void(landed)> done) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (impl_->expected.count(id))
      throw error(errc::invalid_argument, "transfer " + std::to_string(id) + " announced twice");
    impl_->expected[id] = expected_transfer{bytes, dst, std::move(done), false};
  }
  // Senders send only after the announcement reached them (a reply to the
  // control message), so a message never arrives before its announcement;
  // one that did was dropped as unannounced.
}

bool transport::cancel(std::uint64_t id) {
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = impl_->expected.find(id);
  if (it == impl_->expected.end() || it->second.receiving) return false;
  impl_->expected.erase(it);
  return true;
}

void transport::send(const std::vector<std::uint8_t>& peer, std::uint64_t id, const void* data, std::size_t bytes,
                     std::function<void(bool, std::string)> done) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    ops_.push_back([this, peer, id, data, bytes, done = std::move(done)]() mutable {
      std::string why;
      auto ep = impl_->endpoint(peer, why);
      if (!ep) return done(false, why);
      auto* ctx = new send_ctx{std::move(done)};
      ucp_request_param_t p{};
      p.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA;
      p.cb.send = &impl::on_send;
      p.user_data = ctx;
      auto* req = ucp_tag_send_nbx(ep, data, bytes, id, &p);
      if (req == nullptr) {
        std::unique_ptr<send_ctx> owned(ctx);
        owned->done(true, {});
      } else if (UCS_PTR_IS_ERR(req)) {
        std::unique_ptr<send_ctx> owned(ctx);
        owned->done(false, "ucx send of transfer " + std::to_string(id) + ": " + ucs_text(UCS_PTR_STATUS(req)));
      }
    });
  }
  wake();
}

void transport::run() {
  auto& m = *impl_;
  for (;;) {
    std::deque<std::function<void()>> ops;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      ops.swap(ops_);
    }
    for (auto& op : ops) op();
    while (ucp_worker_progress(m.worker) != 0) {
    }
    m.probe();
    reap(m.closing);
    if (stopping_) break;
    auto s = ucp_worker_arm(m.worker);
    if (s == UCS_ERR_BUSY) continue;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (!ops_.empty()) continue;
    }
    pollfd pfd{m.efd, POLLIN, 0};
    ::poll(&pfd, 1, 100);
  }
  // Cancel receives in flight (a stopped peer would hold them forever),
  // close every endpoint; sends still pending fail through their callbacks.
  for (auto* r : std::set<void*>(m.receiving)) ucp_request_cancel(m.worker, r);
  for (auto& [peer, ep] : m.endpoints) {
    ucp_request_param_t p{};
    p.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS;
    p.flags = UCP_EP_CLOSE_FLAG_FORCE;
    auto* req = ucp_ep_close_nbx(ep, &p);
    if (UCS_PTR_IS_PTR(req)) m.closing.push_back(req);
  }
  m.endpoints.clear();
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(2);
  while ((!m.closing.empty() || !m.receiving.empty()) && std::chrono::steady_clock::now() < deadline) {
    ucp_worker_progress(m.worker);
    reap(m.closing);
  }
  if (!m.closing.empty() || !m.receiving.empty()) {
    // UCX asserts when a worker with requests still on its endpoints is
    // destroyed; a peer that stopped answering mid-transfer leaves them.
    // The worker is left to the process's exit instead.
    logger("net")->warn("ucx: {} transfers and {} closes still pending at shutdown; worker left open",
                        m.receiving.size(), m.closing.size());
    m.leak = true;
  }
}

}  // namespace kvflow::devices::net
