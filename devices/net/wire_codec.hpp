#pragma once
// Lossless compression of KV bytes for the wire. Each element (bf16, f16,
// f32) is rotated left by one bit, so the sign drops to the bottom and, for
// bf16 and f32, the exponent fills the top byte alone; the rotated elements
// are split into byte planes. The exponent plane (a few distinct values)
// is entropy-coded with zstd; mantissa planes are close to random and are
// kept raw unless zstd makes them smaller. A frame is self-describing and
// decodes to exactly the bytes it was made from.

#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace kvflow::devices::net {

/// Bytes of a frame before its planes: magic, element size, plane count,
/// raw size and each plane's mode and size.
std::size_t wire_frame_overhead(std::size_t elem_bytes);

/// The frame of `bytes` bytes at `data`, elements of `elem_bytes` (1, 2 or
/// 4; other sizes, or a length that is not whole elements, are coded as
/// bytes), zstd at `level`. Never fails; the frame may be larger than the
/// input (incompressible data): callers compare and keep the raw bytes.
std::vector<std::uint8_t> wire_encode(const void* data, std::size_t bytes, std::size_t elem_bytes, int level = 1);

/// Decodes `frame` into exactly `bytes` bytes at `dst`. Throws
/// kvflow::error(malformed_frame) for a frame that is truncated, corrupt or
/// decodes to any other size; nothing past `bytes` at `dst` is written and
/// nothing is allocated beyond `bytes` (a hostile frame cannot ask for more).
void wire_decode(const void* frame, std::size_t frame_bytes, void* dst, std::size_t bytes);

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
