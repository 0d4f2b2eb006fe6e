#pragma once
// Bulk KV bytes between processes over UCX (ucp tag API): TCP between
// machines or network namespaces, shared memory between processes of one
// host, RDMA where the fabric has it. Control messages travel through CAF;
// this carries only the bytes they announce.

#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace kvflow::devices::net {

/// XXH3-64 of a transfer's bytes, as carried by its announcing message.
std::uint64_t checksum(const void* data, std::size_t bytes);

struct transport_options {
  /// UCX transports (UCX_TLS syntax: "tcp", "tcp,self", "sm,tcp"); empty:
  /// UCX's choice (shared memory between processes of one host).
  std::string tls;
  /// Network devices (UCX_NET_DEVICES syntax: "lo", "veth0"); empty: all.
  std::string devices;
};

/// What became of one announced transfer.
struct landed {
  bool ok = false;
  std::string why;                ///< why not, when !ok
  std::uint64_t bytes = 0;        ///< bytes received
  std::uint64_t finished_ns = 0;  ///< steady clock, when the last byte landed
};

/// One UCX worker and the thread that progresses it. Every UCX call runs on
/// that thread: the public calls queue work for it and return at once, and
/// callbacks run on it (keep them short: post a message, copy, return).
/// A receiver lands only transfers it announced with expect(): a tagged
/// message with an unknown id, or of another size than announced, is read
/// into a scratch buffer and dropped (counted by refused()). Thread-safe.
class transport {
 public:
  /// Throws kvflow::error(io_failure) when UCX cannot start a worker.
  explicit transport(const transport_options& options = {});
  /// Stops the thread; pending transfers are answered as failed.
  ~transport();
  transport(const transport&) = delete;
  transport& operator=(const transport&) = delete;

  /// This worker's address: what a peer passes to send() to reach it.
  const std::vector<std::uint8_t>& address() const { return address_; }

  /// Announces transfer `id` of exactly `bytes` bytes, to land in `dst`
  /// (which must stay valid until `done` runs or cancel() returns true).
  /// `done` runs once, on the progress thread. Announcing an id already
  /// pending is an error (kvflow::error invalid_argument).
  void expect(std::uint64_t id, std::uint64_t bytes, void* dst, std::function<void(landed)> done);
  /// Withdraws an announcement whose bytes did not start landing. True when
  /// withdrawn (its `done` will not run); false when already landing or
  /// landed (its `done` runs or ran).
  bool cancel(std::uint64_t id);

  /// Sends `bytes` bytes at `data` (valid until `done`) as transfer `id` to
  /// the worker at `peer`. `done(ok, why)` runs once on the progress thread;
  /// a peer that vanishes fails the send rather than hanging it.
  void send(const std::vector<std::uint8_t>& peer, std::uint64_t id, const void* data, std::size_t bytes,
            std::function<void(bool, std::string)> done);

  /// Tagged messages dropped: unannounced ids or sizes that differ.
  std::uint64_t refused() const { return refused_.load(); }

  struct impl;

 private:
  void run();
  void wake();

  std::unique_ptr<impl> impl_;
  std::vector<std::uint8_t> address_;
  std::atomic<std::uint64_t> refused_{0};
  std::mutex mutex_;
  std::deque<std::function<void()>> ops_;  // run on the progress thread
  std::atomic<bool> stopping_{false};
  std::thread thread_;
};

}  // namespace kvflow::devices::net
