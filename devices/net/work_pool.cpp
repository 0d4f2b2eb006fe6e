#include "devices/net/work_pool.hpp"

namespace kvflow::devices::net {

work_pool::work_pool(std::size_t threads) {
  for (std::size_t i = 0; i < threads; ++i) threads_.emplace_back([this] { run(); });
}

work_pool::~work_pool() {
  {
    std::lock_guard<std::mutex> lock(m_);
    stop_ = true;
  }
  cv_.notify_all();
  for (auto& t : threads_) t.join();
}

void work_pool::post(std::function<void()> job) {
  if (threads_.empty()) return job();
  {
    std::lock_guard<std::mutex> lock(m_);
    jobs_.push_back(std::move(job));
  }
  cv_.notify_one();
}

void work_pool::run() {
  for (;;) {
    std::function<void()> job;
    {
      std::unique_lock<std::mutex> lock(m_);
      cv_.wait(lock, [&] { return stop_ || !jobs_.empty(); });
      if (jobs_.empty()) return;
      job = std::move(jobs_.front());
      jobs_.pop_front();
    }
    job();
  }
}

}  // namespace kvflow::devices::net
