#pragma once
// A file descriptor owned by one object: closed when the owner goes, on every
// path (return, throw, move-assignment), instead of by hand on each.

#include <unistd.h>

namespace kvflow::platform {

/// Owns one descriptor (or none: -1). Move-only.
class unique_fd {
 public:
  unique_fd() = default;
  /// Takes `fd` as returned by open(2) and friends; a negative one is none.
  explicit unique_fd(int fd) noexcept : fd_(fd < 0 ? -1 : fd) {}
  ~unique_fd() { reset(); }
  unique_fd(unique_fd&& other) noexcept : fd_(other.release()) {}
  unique_fd& operator=(unique_fd&& other) noexcept {
    if (this != &other) reset(other.release());
    return *this;
  }
  unique_fd(const unique_fd&) = delete;
  unique_fd& operator=(const unique_fd&) = delete;

  int get() const noexcept { return fd_; }
  explicit operator bool() const noexcept { return fd_ >= 0; }

  /// Gives the descriptor up without closing it.
  int release() noexcept {
    const int fd = fd_;
    fd_ = -1;
    return fd;
  }
  /// Closes the descriptor held (close errors are not reported: the
  /// descriptor is gone either way) and takes `fd`.
  void reset(int fd = -1) noexcept {
    if (fd_ >= 0) ::close(fd_);
    fd_ = fd < 0 ? -1 : fd;
  }

 private:
  int fd_ = -1;
};

}  // namespace kvflow::platform
