#pragma once
// A queue of jobs and the threads that run them: the node compresses stored
// chunks on one, the transport decodes compressed pieces on another.

#include <condition_variable>
#include <cstddef>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace kvflow::devices::net {

/// A fixed set of threads running posted jobs in order of posting (several
/// at once). Jobs must not throw. The destructor runs the jobs still queued,
/// then joins.
class work_pool {
 public:
  /// threads 0: none; post() then runs jobs inline.
  explicit work_pool(std::size_t threads);
  ~work_pool();
  work_pool(const work_pool&) = delete;
  work_pool& operator=(const work_pool&) = delete;

  void post(std::function<void()> job);
  std::size_t size() const { return threads_.size(); }

 private:
  void run();
  std::mutex m_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> jobs_;
  bool stop_ = false;
  std::vector<std::thread> threads_;
};

}  // namespace kvflow::devices::net
