#include "kernels/cpu/thread_pool.hpp"

namespace kvflow::cpu {

thread_pool::thread_pool(int threads) {
  if (threads <= 0) threads = static_cast<int>(std::thread::hardware_concurrency());
  threads_ = threads < 1 ? 1 : threads;
  for (int i = 1; i < threads_; ++i) workers_.emplace_back([this] { worker(); });
}

thread_pool::~thread_pool() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  start_cv_.notify_all();
  for (auto& t : workers_) t.join();
}

// Takes tasks until none are left; called with mu_ unlocked.
void thread_pool::drain() {
  for (;;) {
    int task;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (next_ >= tasks_) return;
      task = next_++;
    }
    try {
      (*fn_)(task);
    } catch (...) {
      std::lock_guard<std::mutex> lock(mu_);
      if (!failure_) failure_ = std::current_exception();
      next_ = tasks_;
    }
  }
}

void thread_pool::worker() {
  unsigned long seen = 0;
  for (;;) {
    {
      std::unique_lock<std::mutex> lock(mu_);
      start_cv_.wait(lock, [&] { return stop_ || generation_ != seen; });
      if (stop_) return;
      seen = generation_;
      ++active_;
    }
    drain();
    {
      std::lock_guard<std::mutex> lock(mu_);
      --active_;
    }
    done_cv_.notify_one();
  }
}

void thread_pool::run(int tasks, const std::function<void(int)>& fn) {
  if (tasks <= 0) return;
  if (workers_.empty() || tasks == 1) {
    for (int i = 0; i < tasks; ++i) fn(i);
    return;
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    fn_ = &fn;
    tasks_ = tasks;
    next_ = 0;
    failure_ = nullptr;
    ++generation_;
  }
  start_cv_.notify_all();
  drain();
  std::exception_ptr failure;
  {
    // Workers that woke up late find no task left and leave at once; wait
    // until every worker that took part has finished its task.
    std::unique_lock<std::mutex> lock(mu_);
    done_cv_.wait(lock, [&] { return active_ == 0 && next_ >= tasks_; });
    fn_ = nullptr;
    failure = failure_;
  }
  if (failure) std::rethrow_exception(failure);
}

void parallel_for(thread_pool* pool, int tasks, const std::function<void(int)>& fn) {
  if (pool) {
    pool->run(tasks, fn);
  } else {
    for (int i = 0; i < tasks; ++i) fn(i);
  }
}

}  // namespace kvflow::cpu
