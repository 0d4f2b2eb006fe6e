#include "devices/disk/disk_store.hpp"

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <future>
#include <string>
#include <thread>
#include <utility>

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "messages/digest.hpp"
#include "messages/error.hpp"
#include "messages/log.hpp"
#include "platform/unique_fd.hpp"

namespace kvflow::devices {
namespace {

constexpr char file_suffix[] = ".kvc";
constexpr std::size_t write_piece = 4u << 20;  // pacing granularity of writes

std::string errno_text(int e) { return std::string(std::strerror(e)) + " (errno " + std::to_string(e) + ")"; }

bool parse_hex_key(const std::string& hex, msg::chunk_key& key) {
  if (hex.size() != 64) return false;
  for (std::size_t i = 0; i < 32; ++i) {
    auto nib = [](char c) -> int {
      if (c >= '0' && c <= '9') return c - '0';
      if (c >= 'a' && c <= 'f') return c - 'a' + 10;
      return -1;
    };
    const int hi = nib(hex[2 * i]), lo = nib(hex[2 * i + 1]);
    if (hi < 0 || lo < 0) return false;
    key[i] = static_cast<std::uint8_t>(hi * 16 + lo);
  }
  return true;
}

void write_all(int fd, const std::uint8_t* p, std::size_t n, std::uint64_t off, const std::string& path,
               rate_limiter* limiter) {
  while (n > 0) {
    const std::size_t piece = n < write_piece ? n : write_piece;
    if (limiter != nullptr) limiter->acquire(piece);
    std::size_t done = 0;
    while (done < piece) {
      const ssize_t w = ::pwrite(fd, p + done, piece - done, static_cast<off_t>(off + done));
      if (w < 0 && errno == EINTR) continue;
      if (w <= 0) throw error(errc::io_failure, "chunk file " + path + ": write: " + errno_text(errno));
      done += static_cast<std::size_t>(w);
    }
    p += piece;
    off += piece;
    n -= piece;
  }
}

}  // namespace

disk_store::disk_store(disk_options options) : options_(std::move(options)) {
  if (options_.directory.empty()) throw error(errc::invalid_argument, "disk_store: empty directory");
  // Parents too: a cache folder named in a config may not exist yet.
  std::error_code ec;
  std::filesystem::create_directories(options_.directory, ec);
  if (ec) throw error(errc::io_failure, "disk_store: create folder " + options_.directory + ": " + ec.message());
  if (options_.shape.bytes() == 0) throw error(errc::invalid_argument, "disk_store: empty kv shape");
  scan();
  engine_ = io_engine::create(options_.use_io_uring, options_.io_depth);
  writer_ = std::thread([this] { writer_loop(); });
}

disk_store::~disk_store() {
  {
    std::lock_guard<std::mutex> lock(queue_mutex_);
    stopping_ = true;
  }
  queue_cv_.notify_all();
  writer_.join();
  engine_.reset();  // completions touch the directory: finish them first
}

std::string disk_store::path_of(const msg::chunk_key& key) const {
  return options_.directory + "/" + key_hex(key) + file_suffix;
}

void disk_store::scan() {
  DIR* dir = ::opendir(options_.directory.c_str());
  if (dir == nullptr)
    throw error(errc::io_failure, "disk_store: opendir " + options_.directory + ": " + errno_text(errno));
  auto log = logger("tiers");
  std::vector<std::string> names;
  while (dirent* d = ::readdir(dir)) names.emplace_back(d->d_name);
  ::closedir(dir);
  std::vector<std::uint8_t> buf(chunk_header_bytes);
  for (const std::string& name : names) {
    const std::string path = options_.directory + "/" + name;
    const std::size_t tmp_at = name.find(std::string(file_suffix) + ".tmp.");
    msg::chunk_key tmp_key{};
    if (tmp_at != std::string::npos && parse_hex_key(name.substr(0, tmp_at), tmp_key)) {
      // A write that never reached its rename (crash): never valid. Only
      // kvflow's own names: other files in the folder are not ours to remove.
      log->info("disk tier: removing unfinished write {}", path);
      ::unlink(path.c_str());
      continue;
    }
    const std::size_t suffix = sizeof file_suffix - 1;
    if (name.size() <= suffix || name.compare(name.size() - suffix, suffix, file_suffix) != 0) continue;
    msg::chunk_key key{};
    if (!parse_hex_key(name.substr(0, name.size() - suffix), key)) continue;
    std::string why;
    chunk_header h;
    const platform::unique_fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    struct stat st {};
    if (!fd || ::fstat(fd.get(), &st) != 0) {
      why = "cannot open: " + errno_text(errno);
    } else if (static_cast<std::size_t>(st.st_size) < chunk_header_bytes ||
               ::pread(fd.get(), buf.data(), chunk_header_bytes, 0) != static_cast<ssize_t>(chunk_header_bytes)) {
      why = "truncated header (" + std::to_string(st.st_size) + " bytes)";
    } else if (!decode_chunk_header(buf.data(), h, why)) {
      // why set
    } else if (h.fingerprint != options_.fingerprint) {
      why = "model fingerprint " + to_hex(h.fingerprint) + " is not this model's";
    } else if (h.key != key) {
      why = "key in header does not match the file name";
    } else if (!same_shape(h.shape, options_.shape)) {
      why = "kv shape differs from this model's";
    } else if (static_cast<std::uint64_t>(st.st_size) != chunk_file_bytes(h.payload_bytes)) {
      why = "length " + std::to_string(st.st_size) + " instead of " +
            std::to_string(chunk_file_bytes(h.payload_bytes)) + " (truncated or padded)";
    }
    if (!why.empty()) {
      log->warn("disk tier: chunk file {} is a miss and is removed: {}", path, why);
      ::unlink(path.c_str());
      continue;
    }
    entry& e = use_locked(key);
    e.layers = h.layers;
    e.layer_checksums = std::move(h.layer_checksums);
    e.file_bytes = static_cast<std::uint64_t>(st.st_size);
    used_bytes_ += e.file_bytes;
  }
  // A smaller capacity than last time: trim (arbitrary order; no use is known yet).
  for (const auto& p : evict_locked(msg::chunk_key{})) ::unlink(p.c_str());
}

void disk_store::discard(const msg::chunk_key& key, const std::string& why) {
  const std::string path = path_of(key);
  logger("tiers")->warn("disk tier: chunk file {} is a miss and is removed: {}", path, why);
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = directory_.find(key);
  if (it != directory_.end()) forget_locked(it);
  ::unlink(path.c_str());
}

disk_store::entry& disk_store::use_locked(const msg::chunk_key& key) {
  auto [it, fresh] = directory_.try_emplace(key);
  if (fresh)
    it->second.lru_pos = lru_.insert(lru_.end(), key);
  else
    lru_.splice(lru_.end(), lru_, it->second.lru_pos);
  return it->second;
}

void disk_store::forget_locked(std::unordered_map<msg::chunk_key, entry, chunk_key_hash>::iterator it) {
  used_bytes_ -= it->second.file_bytes;
  lru_.erase(it->second.lru_pos);
  directory_.erase(it);
}

tier_lookup disk_store::lookup(const std::vector<msg::chunk_key>& keys) const {
  std::lock_guard<std::mutex> lock(mutex_);
  return tier_lookup::of(keys, [&](const msg::chunk_key& k) {
    auto it = directory_.find(k);
    return it == directory_.end() ? layer_range{} : it->second.layers;
  });
}

bool disk_store::contains(const msg::chunk_key& key) const {
  std::lock_guard<std::mutex> lock(mutex_);
  return directory_.count(key) != 0;
}

layer_range disk_store::layers_of(const msg::chunk_key& key) const {
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = directory_.find(key);
  return it == directory_.end() ? layer_range{} : it->second.layers;
}

void disk_store::write(const msg::chunk_key& key, layer_range layers, const void* block) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = directory_.find(key);
    if (it != directory_.end() && it->second.layers == layers) return;
  }
  const chunk_header h = make_chunk_header(options_.fingerprint, key, options_.shape, layers, block);
  std::vector<std::uint8_t> head(chunk_header_bytes);  // buffered write: no alignment needed
  encode_chunk_header(h, head.data());
  const std::string path = path_of(key);
  std::string tmp;
  {
    std::lock_guard<std::mutex> lock(queue_mutex_);
    tmp = path + ".tmp." + std::to_string(::getpid()) + "." + std::to_string(tmp_counter_++);
  }
  platform::unique_fd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
  if (!fd) throw error(errc::io_failure, "chunk file " + tmp + ": open: " + errno_text(errno));
  const std::uint64_t file_bytes = chunk_file_bytes(h.payload_bytes);
  try {
    write_all(fd.get(), head.data(), chunk_header_bytes, 0, tmp, nullptr);
    // Injected here, after a first write: the half-written file must go.
    if (options_.faults && options_.faults->roll(fault::disk_write_full))
      throw error(errc::io_failure, "chunk file " + tmp + ": write: " + errno_text(ENOSPC) + " (injected)");
    const auto* payload =
        static_cast<const std::uint8_t*>(block) + options_.shape.span_offset_bytes(static_cast<int>(layers.begin));
    write_all(fd.get(), payload, h.payload_bytes, chunk_header_bytes, tmp, options_.write_limiter.get());
    // Zero padding to a 4 KiB multiple keeps O_DIRECT reads of the tail whole.
    if (::ftruncate(fd.get(), static_cast<off_t>(file_bytes)) != 0)
      throw error(errc::io_failure, "chunk file " + tmp + ": ftruncate: " + errno_text(errno));
    if (::fsync(fd.get()) != 0) throw error(errc::io_failure, "chunk file " + tmp + ": fsync: " + errno_text(errno));
  } catch (...) {
    ::unlink(tmp.c_str());
    throw;
  }
  fd.reset();
  // The rename is the commit: before it no file has the final name, after it
  // the file is complete and synced.
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    const int e = errno;
    ::unlink(tmp.c_str());
    throw error(errc::io_failure, "chunk file " + path + ": rename: " + errno_text(e));
  }
  if (const platform::unique_fd dir(::open(options_.directory.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC)); dir)
    ::fsync(dir.get());
  std::vector<std::string> evicted;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    entry& e = use_locked(key);
    used_bytes_ -= e.file_bytes;
    e.layers = layers;
    e.layer_checksums = h.layer_checksums;
    e.file_bytes = file_bytes;
    used_bytes_ += file_bytes;
    evicted = evict_locked(key);
  }
  for (const auto& p : evicted) ::unlink(p.c_str());
}

std::vector<std::string> disk_store::evict_locked(const msg::chunk_key& keep) {
  std::vector<std::string> paths;
  auto next = lru_.begin();
  while (options_.capacity_bytes != 0 && used_bytes_ > options_.capacity_bytes) {
    if (next != lru_.end() && *next == keep) ++next;
    if (next == lru_.end()) break;  // one file larger than the capacity: keep it
    const msg::chunk_key victim = *next++;
    paths.push_back(path_of(victim));
    forget_locked(directory_.find(victim));
  }
  return paths;
}

void disk_store::write_behind(const msg::chunk_key& key, layer_range layers, const void* block,
                              std::shared_ptr<void> keep_alive) {
  write_job dropped{};
  bool drop = false;
  {
    std::lock_guard<std::mutex> lock(queue_mutex_);
    if (queue_.size() >= options_.write_queue_cap && !queue_.empty()) {
      dropped = std::move(queue_.front());
      queue_.pop_front();
      ++dropped_;
      drop = true;
    }
    queue_.push_back(write_job{key, layers, block, std::move(keep_alive)});
  }
  queue_cv_.notify_all();
  if (drop)
    logger("tiers")->warn("disk tier: write queue full ({} queued): dropping the oldest write, chunk {}",
                          options_.write_queue_cap, key_hex(dropped.key));
  // `dropped` releases its keep_alive here, outside the lock.
}

void disk_store::flush() {
  std::unique_lock<std::mutex> lock(queue_mutex_);
  idle_cv_.wait(lock, [this] { return queue_.empty() && !writing_; });
}

std::size_t disk_store::writes_pending() const {
  std::lock_guard<std::mutex> lock(queue_mutex_);
  return queue_.size() + (writing_ ? 1 : 0);
}

std::uint64_t disk_store::dropped_writes() const {
  std::lock_guard<std::mutex> lock(queue_mutex_);
  return dropped_;
}

void disk_store::writer_loop() {
  for (;;) {
    write_job job;
    {
      std::unique_lock<std::mutex> lock(queue_mutex_);
      queue_cv_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
      if (queue_.empty()) return;  // stopping, drained
      job = std::move(queue_.front());
      queue_.pop_front();
      writing_ = true;
    }
    try {
      write(job.key, job.layers, job.block);
    } catch (const std::exception& e) {
      logger("tiers")->error("disk tier: write-behind of chunk {} failed: {}", key_hex(job.key), e.what());
    }
    job.keep_alive.reset();
    {
      std::lock_guard<std::mutex> lock(queue_mutex_);
      writing_ = false;
    }
    idle_cv_.notify_all();
  }
}

std::size_t disk_store::staging_bytes(layer_range layers) const {
  // The span may start anywhere inside a 4 KiB page: one page of slack.
  return align_up(options_.shape.layer_bytes() * layers.size()) + io_alignment;
}

void disk_store::read_async(const msg::chunk_key& key, layer_range layers, std::uint8_t* staging, read_fn done) {
  // Counted until the completion starts: a read that never completes shows.
  ++reads_in_flight_;
  done = [this, inner = std::move(done)](bool ok, const std::uint8_t* data, std::size_t bytes) {
    --reads_in_flight_;
    inner(ok, data, bytes);
  };
  std::vector<std::uint64_t> sums;
  std::uint64_t span_off = 0;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = directory_.find(key);
    if (it == directory_.end() || !it->second.layers.covers(layers)) {
      done(false, nullptr, 0);
      return;
    }
    entry& e = use_locked(key);
    const std::uint32_t first = layers.begin - e.layers.begin;
    sums.assign(e.layer_checksums.begin() + first, e.layer_checksums.begin() + first + layers.size());
    span_off = chunk_header_bytes + static_cast<std::uint64_t>(first) * options_.shape.layer_bytes();
  }
  const std::size_t layer_bytes = options_.shape.layer_bytes();
  const std::size_t span = layer_bytes * layers.size();
  const std::uint64_t read_off = align_down(span_off);
  const std::size_t lead = static_cast<std::size_t>(span_off - read_off);
  const std::size_t read_len = align_up(lead + span);
  const std::string path = path_of(key);
  // Shared with the completion: the descriptor closes when the read is done
  // (or the engine drops it), whichever path that takes.
  auto file = std::make_shared<platform::unique_fd>(open_for_read(path, options_.direct_io));
  if (!*file) {
    const int err = errno;
    // Out of descriptors or memory says nothing about the file: a miss this
    // time, but the file stays.
    if (err == EMFILE || err == ENFILE || err == ENOMEM)
      logger("tiers")->error("disk tier: cannot open chunk file {}: {}", path, errno_text(err));
    else
      discard(key, "cannot open: " + errno_text(err));
    done(false, nullptr, 0);
    return;
  }
  // A paced tier books its link before the read, so that the read overlaps
  // the link time; the bytes count as arrived when both are done.
  if (options_.faults && options_.faults->roll(fault::disk_truncate) &&
      ::truncate(path.c_str(), static_cast<off_t>(chunk_header_bytes)) != 0)
    logger("tiers")->warn("disk tier: injected truncation of {} failed: {}", path, errno_text(errno));
  const auto due = options_.read_limiter ? options_.read_limiter->reserve(span) : rate_limiter::clock::time_point{};
  const int fd = file->get();
  engine_->read(fd, staging, read_len, read_off,
                [this, key, file = std::move(file), staging, lead, span, layer_bytes, due, sums = std::move(sums),
                 done = std::move(done)](long long res) mutable {
                  file.reset();
                  if (res >= 0 && options_.faults && options_.faults->roll(fault::disk_read_error)) res = -EIO;
                  if (res < 0) {
                    logger("tiers")->error("disk tier: read of chunk {} failed: {}", key_hex(key),
                                           errno_text(static_cast<int>(-res)));
                    // A media error stays: the file goes, so that the next
                    // lookup computes the chunk instead of failing again.
                    if (res == -EIO) discard(key, "read error");
                    done(false, nullptr, 0);
                    return;
                  }
                  if (static_cast<std::size_t>(res) < lead + span) {
                    discard(key, "truncated: read " + std::to_string(res) + " bytes of " + std::to_string(lead + span));
                    done(false, nullptr, 0);
                    return;
                  }
                  const std::uint8_t* data = staging + lead;
                  for (std::size_t l = 0; l < sums.size(); ++l) {
                    if (chunk_checksum(data + l * layer_bytes, layer_bytes) != sums[l]) {
                      discard(key, "payload checksum mismatch in stored layer " + std::to_string(l));
                      done(false, nullptr, 0);
                      return;
                    }
                  }
                  if (options_.read_limiter) std::this_thread::sleep_until(due);
                  done(true, data, span);
                });
}

bool disk_store::read(const msg::chunk_key& key, layer_range layers, void* dst, bool dst_is_block) {
  // Only memcpy reads it: aligned memory, not page-locked (cudaHostAlloc per
  // call would cost more than the read).
  pinned_buffer staging(staging_bytes(layers), false);
  std::promise<bool> result;
  auto ready = result.get_future();
  const std::size_t offset = dst_is_block ? options_.shape.span_offset_bytes(static_cast<int>(layers.begin)) : 0;
  read_async(key, layers, staging.data(), [&](bool ok, const std::uint8_t* data, std::size_t bytes) {
    if (ok) std::memcpy(static_cast<std::uint8_t*>(dst) + offset, data, bytes);
    result.set_value(ok);
  });
  return ready.get();
}

bool disk_store::erase(const msg::chunk_key& key) {
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = directory_.find(key);
  if (it == directory_.end()) return false;
  forget_locked(it);
  ::unlink(path_of(key).c_str());
  return true;
}

std::size_t disk_store::entries() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return directory_.size();
}

std::uint64_t disk_store::used_bytes() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return used_bytes_;
}

}  // namespace kvflow::devices
