#include "platform/mapped_file.hpp"

#include <cerrno>
#include <cstring>
#include <utility>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include "messages/error.hpp"
#include "platform/unique_fd.hpp"

namespace kvflow::platform {

mapped_file mapped_file::open(const std::string& path) {
  const unique_fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) throw error(errc::io_failure, path + ": open: " + std::strerror(errno));
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) throw error(errc::io_failure, path + ": fstat: " + std::strerror(errno));
  if (!S_ISREG(st.st_mode)) throw error(errc::bad_file, path + ": not a regular file");
  mapped_file f;
  if (st.st_size == 0) return f;
  // The mapping outlives the descriptor.
  void* m = ::mmap(nullptr, static_cast<std::size_t>(st.st_size), PROT_READ, MAP_PRIVATE, fd.get(), 0);
  if (m == MAP_FAILED) throw error(errc::io_failure, path + ": mmap: " + std::strerror(errno));
  f.data_ = static_cast<const std::uint8_t*>(m);
  f.size_ = static_cast<std::uint64_t>(st.st_size);
  return f;
}

mapped_file::~mapped_file() {
  if (data_) ::munmap(const_cast<std::uint8_t*>(data_), static_cast<std::size_t>(size_));
}

mapped_file::mapped_file(mapped_file&& other) noexcept
    : data_(std::exchange(other.data_, nullptr)), size_(std::exchange(other.size_, 0)) {}

mapped_file& mapped_file::operator=(mapped_file&& other) noexcept {
  if (this != &other) {
    if (data_) ::munmap(const_cast<std::uint8_t*>(data_), static_cast<std::size_t>(size_));
    data_ = std::exchange(other.data_, nullptr);
    size_ = std::exchange(other.size_, 0);
  }
  return *this;
}

}  // namespace kvflow::platform
