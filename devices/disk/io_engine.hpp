#pragma once
// Asynchronous file reads for the disk tier: io_uring (liburing) where the
// kernel allows it, else a pool of threads calling pread.

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "platform/unique_fd.hpp"

namespace kvflow::devices {

/// Opens `path` read-only, with O_DIRECT when `direct` and the file system
/// takes it (tmpfs refuses it with EINVAL: buffered then). Holds nothing
/// (errno says why) when the file cannot be opened.
platform::unique_fd open_for_read(const std::string& path, bool direct);

/// Reads whole ranges of files. Thread-safe; completions run on the engine's
/// own threads (never on the submitting one) and must not block long.
class io_engine {
 public:
  /// Bytes read (short only at end of file) or -errno.
  using done_fn = std::function<void(long long result)>;

  virtual ~io_engine() = default;
  /// Reads [offset, offset + bytes) of `fd` into `buf`. For an O_DIRECT fd,
  /// buf, offset and bytes must be 4 KiB-aligned. Never waits: beyond `depth`
  /// reads in flight, reads queue and start in submission order. The fd must
  /// stay open until `done` runs.
  virtual void read(int fd, void* buf, std::size_t bytes, std::uint64_t offset, done_fn done) = 0;
  /// "io_uring" or "pread".
  virtual const char* name() const = 0;

  /// io_uring when `prefer_uring` and the kernel allows it, else a pread pool
  /// of `depth` threads; at most `depth` reads in flight either way.
  static std::unique_ptr<io_engine> create(bool prefer_uring, unsigned depth);
};

}  // namespace kvflow::devices
