#pragma once
// A fixed set of worker threads that run the tasks of one parallel loop.

#include <condition_variable>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace kvflow::cpu {

/// Runs `tasks` independent tasks on `threads` threads (the caller counts as
/// one). One caller at a time: run() is not reentrant and not thread-safe.
/// Which thread runs which task is unspecified, so kernels must make each
/// task's arithmetic independent of it.
class thread_pool {
 public:
  /// threads <= 0 picks std::thread::hardware_concurrency().
  explicit thread_pool(int threads);
  ~thread_pool();
  thread_pool(const thread_pool&) = delete;
  thread_pool& operator=(const thread_pool&) = delete;

  int size() const { return threads_; }

  /// Calls fn(task) for task in [0, tasks) and returns when all are done.
  /// The first exception a task throws is rethrown here.
  void run(int tasks, const std::function<void(int)>& fn);

 private:
  void worker();
  void drain();

  int threads_;
  std::vector<std::thread> workers_;
  std::mutex mu_;
  std::condition_variable start_cv_;
  std::condition_variable done_cv_;
  const std::function<void(int)>* fn_ = nullptr;
  int tasks_ = 0;
  int next_ = 0;
  int active_ = 0;
  unsigned long generation_ = 0;
  bool stop_ = false;
  std::exception_ptr failure_;
};

/// Runs fn over [0, tasks) on `pool`, or inline when pool is null.
void parallel_for(thread_pool* pool, int tasks, const std::function<void(int)>& fn);

}  // namespace kvflow::cpu
