#include "devices/disk/io_engine.hpp"

#include <cerrno>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>
#include <vector>

#include <fcntl.h>
#include <liburing.h>
#include <unistd.h>

#include "messages/log.hpp"

namespace kvflow::devices {
namespace {

struct request {
  int fd;
  std::uint8_t* buf;
  std::size_t bytes;
  std::uint64_t offset;
  std::size_t done_bytes = 0;
  io_engine::done_fn done;
};

// Submissions under a mutex, one reaper thread for completions; a short read
// before end of file is continued, as pread loops would.
class uring_engine final : public io_engine {
 public:
  explicit uring_engine(unsigned depth) : depth_(depth) {}
  bool init() {
    if (io_uring_queue_init(depth_ * 2 + 2, &ring_, 0) < 0) return false;
    reaper_ = std::thread([this] { reap(); });
    return true;
  }
  ~uring_engine() override {
    if (!reaper_.joinable()) return;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      space_.wait(lock, [this] { return in_flight_ == 0; });
      stopping_ = true;
      io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
      io_uring_prep_nop(sqe);
      io_uring_sqe_set_data(sqe, nullptr);
      io_uring_submit(&ring_);
    }
    reaper_.join();
    io_uring_queue_exit(&ring_);
  }
  const char* name() const override { return "io_uring"; }

  void read(int fd, void* buf, std::size_t bytes, std::uint64_t offset, done_fn done) override {
    auto* r = new request{fd, static_cast<std::uint8_t*>(buf), bytes, offset, 0, std::move(done)};
    std::lock_guard<std::mutex> lock(mutex_);
    if (in_flight_ == depth_) {
      waiting_.push_back(r);
      return;
    }
    ++in_flight_;
    submit_locked(r);
  }

 private:
  void submit_locked(request* r) {
    io_uring_sqe* sqe = io_uring_get_sqe(&ring_);  // never null: ring holds 2*depth+2
    io_uring_prep_read(sqe, r->fd, r->buf + r->done_bytes, static_cast<unsigned>(r->bytes - r->done_bytes),
                       r->offset + r->done_bytes);
    io_uring_sqe_set_data(sqe, r);
    io_uring_submit(&ring_);
  }

  void reap() {
    for (;;) {
      io_uring_cqe* cqe = nullptr;
      const int rc = io_uring_wait_cqe(&ring_, &cqe);
      if (rc == -EINTR) continue;
      if (rc < 0) {
        logger("tiers")->error("io_uring_wait_cqe failed: errno {}", -rc);
        return;
      }
      auto* r = static_cast<request*>(io_uring_cqe_get_data(cqe));
      const int res = cqe->res;
      io_uring_cqe_seen(&ring_, cqe);
      // The request was written under mutex_ before the kernel saw it; taking
      // the lock once here makes that ordering visible to the C++ memory
      // model (and to ThreadSanitizer, which cannot see through the ring).
      { std::lock_guard<std::mutex> sync(mutex_); }
      if (r == nullptr) {
        std::lock_guard<std::mutex> lock(mutex_);
        if (stopping_) return;
        continue;
      }
      if (res > 0 && r->done_bytes + static_cast<std::size_t>(res) < r->bytes) {
        r->done_bytes += static_cast<std::size_t>(res);
        std::lock_guard<std::mutex> lock(mutex_);
        submit_locked(r);
        continue;
      }
      const long long result = res < 0 ? res : static_cast<long long>(r->done_bytes) + res;
      // The next queued read takes the slot before this one's completion
      // runs (checksums, copies), so the device is not left idle meanwhile.
      {
        std::lock_guard<std::mutex> lock(mutex_);
        if (waiting_.empty()) {
          --in_flight_;
        } else {
          submit_locked(waiting_.front());
          waiting_.pop_front();
        }
      }
      space_.notify_all();
      r->done(result);
      delete r;
    }
  }

  unsigned depth_;
  io_uring ring_{};
  std::mutex mutex_;
  std::condition_variable space_;
  unsigned in_flight_ = 0;
  std::deque<request*> waiting_;  // beyond depth_, in submission order
  bool stopping_ = false;
  std::thread reaper_;
};

class pread_engine final : public io_engine {
 public:
  explicit pread_engine(unsigned threads) {
    for (unsigned i = 0; i < threads; ++i) workers_.emplace_back([this] { work(); });
  }
  ~pread_engine() override {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stopping_ = true;
    }
    wake_.notify_all();
    for (auto& t : workers_) t.join();
  }
  const char* name() const override { return "pread"; }

  void read(int fd, void* buf, std::size_t bytes, std::uint64_t offset, done_fn done) override {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      queue_.push_back(request{fd, static_cast<std::uint8_t*>(buf), bytes, offset, 0, std::move(done)});
    }
    wake_.notify_one();
  }

 private:
  void work() {
    for (;;) {
      std::unique_lock<std::mutex> lock(mutex_);
      wake_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
      if (queue_.empty()) return;
      request r = std::move(queue_.front());
      queue_.pop_front();
      lock.unlock();
      long long result = 0;
      while (r.done_bytes < r.bytes) {
        const ssize_t n =
            ::pread(r.fd, r.buf + r.done_bytes, r.bytes - r.done_bytes, static_cast<off_t>(r.offset + r.done_bytes));
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) {
          result = -errno;
          break;
        }
        if (n == 0) break;
        r.done_bytes += static_cast<std::size_t>(n);
      }
      if (result == 0) result = static_cast<long long>(r.done_bytes);
      r.done(result);
    }
  }

  std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<request> queue_;  // not started yet, in submission order
  bool stopping_ = false;
  std::vector<std::thread> workers_;
};

}  // namespace

platform::unique_fd open_for_read(const std::string& path, bool direct) {
  if (direct) {
    platform::unique_fd fd(::open(path.c_str(), O_RDONLY | O_DIRECT | O_CLOEXEC));
    if (fd || errno != EINVAL) return fd;
  }
  return platform::unique_fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
}

std::unique_ptr<io_engine> io_engine::create(bool prefer_uring, unsigned depth) {
  if (depth == 0) depth = 1;
  if (prefer_uring) {
    auto e = std::make_unique<uring_engine>(depth);
    if (e->init()) return e;
    logger("tiers")->warn("io_uring unavailable: falling back to a pread pool of {} threads", depth);
  }
  return std::make_unique<pread_engine>(depth);
}

}  // namespace kvflow::devices
