#pragma once
// A whole file mapped read-only, unmapped by its owner: the model loaders
// (GGUF, safetensors) read weights in place instead of copying them.

#include <cstdint>
#include <string>

namespace kvflow::platform {

/// Owns one read-only mapping of a regular file. Move-only; pointers into
/// data() stay valid while the object (or the one it moved to) lives.
class mapped_file {
 public:
  mapped_file() = default;
  /// Maps the regular file `path` whole (an empty file maps to nothing:
  /// data() null, size() 0). Throws kvflow::error(io_failure) when it
  /// cannot be opened, examined or mapped, (bad_file) when it is not a
  /// regular file; the message starts with the path.
  static mapped_file open(const std::string& path);

  ~mapped_file();
  mapped_file(mapped_file&& other) noexcept;
  mapped_file& operator=(mapped_file&& other) noexcept;
  mapped_file(const mapped_file&) = delete;
  mapped_file& operator=(const mapped_file&) = delete;

  const std::uint8_t* data() const noexcept { return data_; }
  std::uint64_t size() const noexcept { return size_; }

 private:
  const std::uint8_t* data_ = nullptr;
  std::uint64_t size_ = 0;
};

}  // namespace kvflow::platform
