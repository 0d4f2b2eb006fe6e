#include "actors/frontend/admission.hpp"

#include <algorithm>

#include "messages/error.hpp"

namespace kvflow::frontend {

admission::admission(std::size_t max_running, std::size_t max_waiting)
    : max_running_(max_running), max_waiting_(max_waiting) {
  if (max_running == 0) throw error(errc::invalid_argument, "admission: max_running must be at least 1");
}

admission::outcome admission::acquire() {
  std::unique_lock<std::mutex> lock(m_);
  if (closed_) return outcome::closed;
  if (queue_.empty() && running_ < max_running_) {
    ++running_;
    return outcome::admitted;
  }
  if (queue_.size() >= max_waiting_) return outcome::queue_full;
  auto ticket = next_ticket_++;
  queue_.push_back(ticket);
  cv_.wait(lock, [&] { return closed_ || (queue_.front() == ticket && running_ < max_running_); });
  queue_.erase(std::find(queue_.begin(), queue_.end(), ticket));
  if (closed_) return outcome::closed;
  ++running_;
  // The next in line may find a slot too.
  cv_.notify_all();
  return outcome::admitted;
}

void admission::release() {
  {
    std::lock_guard<std::mutex> lock(m_);
    if (running_ > 0) --running_;
  }
  cv_.notify_all();
}

void admission::close() {
  {
    std::lock_guard<std::mutex> lock(m_);
    closed_ = true;
  }
  cv_.notify_all();
}

bool admission::wait_idle(std::chrono::steady_clock::duration timeout) {
  std::unique_lock<std::mutex> lock(m_);
  return cv_.wait_for(lock, timeout, [&] { return running_ == 0; });
}

std::size_t admission::running() const {
  std::lock_guard<std::mutex> lock(m_);
  return running_;
}

std::size_t admission::waiting() const {
  std::lock_guard<std::mutex> lock(m_);
  return queue_.size();
}

}  // namespace kvflow::frontend
