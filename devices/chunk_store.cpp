#include "devices/chunk_store.hpp"

#include <cstring>
#include <future>
#include <memory>
#include <utility>

#include "messages/log.hpp"

namespace kvflow::devices {

chunk_store::chunk_store(chunk_store_options options)
    : options_(std::move(options)),
      host_(options_.host_capacity_bytes, options_.disk.shape.bytes()),
      disk_(options_.disk),
      staging_(disk_.staging_bytes(layer_range{0, static_cast<std::uint32_t>(options_.disk.shape.layers)})) {
  if (options_.demote_on_evict) host_.set_evict_callback([this](host_block&& b) { on_evict(std::move(b)); });
  promoter_ = std::thread([this] { promotion_loop(); });
}

chunk_store::~chunk_store() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
    promotions_queue_.clear();
  }
  cv_.notify_all();
  promoter_.join();
  disk_.flush();  // demotions hold host leases: write them while host_ lives
}

store_lookup chunk_store::lookup(const std::vector<msg::chunk_key>& keys) const {
  store_lookup r;
  r.host = host_.lookup(keys);
  r.disk = disk_.lookup(keys);
  r.where.resize(keys.size(), msg::tier::host);
  bool prefix = true;
  for (std::size_t i = 0; i < keys.size(); ++i) {
    if (!r.host.held(i) && r.disk.held(i)) r.where[i] = msg::tier::disk;
    if (prefix && r.held(i))
      ++r.prefix;
    else
      prefix = false;
  }
  return r;
}

void chunk_store::store(const msg::chunk_key& key, layer_range layers, const void* block) {
  if (host_.put(key, layers, options_.disk.shape.layer_bytes(), block)) return;
  // Every host block is pinned or still being demoted: the chunk goes to disk
  // behind the request's back (a copy, since the caller keeps `block`).
  logger("tiers")->debug("host tier full of pinned blocks: chunk {} goes to disk", key_hex(key));
  const model::kv_shape& s = options_.disk.shape;
  const std::size_t off = s.span_offset_bytes(static_cast<int>(layers.begin));
  const std::size_t len = s.span_bytes(static_cast<int>(layers.begin), static_cast<int>(layers.end));
  auto copy = std::make_shared<pinned_buffer>(s.bytes(), false);
  std::memcpy(copy->data() + off, static_cast<const std::uint8_t*>(block) + off, len);
  disk_.write_behind(key, layers, copy->data(), copy);
}

host_block chunk_store::acquire(const msg::chunk_key& key) {
  host_block b = host_.acquire(key);
  if (!b && options_.promote_on_hit && disk_.contains(key)) promote(key);
  return b;
}

void chunk_store::promote(const msg::chunk_key& key) {
  bool dropped = false;
  msg::chunk_key old{};
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (stopping_) return;
    for (const auto& k : promotions_queue_)
      if (k == key) return;
    if (promotions_queue_.size() >= options_.promotion_queue_cap && !promotions_queue_.empty()) {
      old = promotions_queue_.front();
      promotions_queue_.pop_front();
      ++dropped_promotions_;
      dropped = true;
    }
    promotions_queue_.push_back(key);
  }
  cv_.notify_all();
  if (dropped) logger("tiers")->info("promotion queue full: dropping the promotion of chunk {}", key_hex(old));
}

void chunk_store::on_evict(host_block&& block) {
  // Already on disk with these layers: nothing to write, the block is freed.
  if (disk_.layers_of(block.key()) == block.layers()) return;
  const msg::chunk_key key = block.key();
  const layer_range layers = block.layers();
  const void* data = block.data();
  auto keep = std::make_shared<host_block>(std::move(block));
  {
    std::lock_guard<std::mutex> lock(mutex_);
    ++demoted_;
  }
  disk_.write_behind(key, layers, data, std::move(keep));
}

void chunk_store::promotion_loop() {
  for (;;) {
    msg::chunk_key key;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      cv_.wait(lock, [this] { return stopping_ || !promotions_queue_.empty(); });
      if (stopping_) return;
      key = promotions_queue_.front();
      promotions_queue_.pop_front();
      promoting_ = true;
    }
    bool done = false;
    const layer_range layers = disk_.layers_of(key);
    if (!host_.contains(key) && !layers.empty()) {
      host_block b = host_.allocate(key, layers);
      if (b) {
        std::promise<bool> ok;
        auto ready = ok.get_future();
        const std::size_t offset = options_.disk.shape.span_offset_bytes(static_cast<int>(layers.begin));
        disk_.read_async(key, layers, staging_.data(), [&](bool hit, const std::uint8_t* data, std::size_t bytes) {
          if (hit) std::memcpy(b.data() + offset, data, bytes);
          ok.set_value(hit);
        });
        done = ready.get() && host_.publish(b);
      }
    }
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (done) ++promoted_;
      promoting_ = false;
    }
    idle_cv_.notify_all();
  }
}

void chunk_store::flush() {
  {
    std::unique_lock<std::mutex> lock(mutex_);
    idle_cv_.wait(lock, [this] { return stopping_ || (promotions_queue_.empty() && !promoting_); });
  }
  disk_.flush();
}

std::uint64_t chunk_store::promotions() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return promoted_;
}
std::uint64_t chunk_store::demotions() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return demoted_;
}
std::uint64_t chunk_store::dropped_promotions() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return dropped_promotions_;
}

}  // namespace kvflow::devices
