#include "policies/batch_state.hpp"

#include <algorithm>
#include <string>

#include "messages/error.hpp"
#include "policies/stage_plan.hpp"

namespace kvflow::policies {
namespace {

bool available(cell_state s) {
  return s == cell_state::computed || s == cell_state::compute_granted || s == cell_state::loaded;
}
bool computing(cell_state s) { return s == cell_state::computed || s == cell_state::compute_granted; }

std::string str(const msg::cell_range& r) {
  return "chunks [" + std::to_string(r.chunk_begin) + ", " + std::to_string(r.chunk_end) + ") x layers [" +
         std::to_string(r.layer_begin) + ", " + std::to_string(r.layer_end) + ")";
}

}  // namespace

request_state::request_state(const msg::register_request& reg, std::uint64_t arrival, double registered_s)
    : id_(reg.request_id),
      arrival_(arrival),
      registered_s_(registered_s),
      chunks_(reg.num_chunks),
      layers_(reg.num_layers),
      tiers_(reg.chunk_tiers),
      links_(reg.chunk_links),
      chunk_bytes_(reg.chunk_bytes) {
  if (chunks_ == 0 || layers_ == 0)
    throw error(errc::invalid_argument, where() + ": num_chunks and num_layers must be positive");
  if (std::uint64_t(chunks_) * layers_ > (1ull << 24))
    throw error(errc::invalid_argument, where() + ": more than 2^24 cells");
  if (tiers_.size() >= chunks_)
    throw error(errc::invalid_argument, where() + ": " + std::to_string(tiers_.size()) + " cached chunks of " +
                                            std::to_string(chunks_) + " (the last chunk is always computed)");
  if (!tiers_.empty() && chunk_bytes_ < layers_)
    throw error(errc::invalid_argument, where() + ": chunk_bytes " + std::to_string(chunk_bytes_) + " too small");
  if (!links_.empty() && links_.size() != tiers_.size())
    throw error(errc::invalid_argument, where() + ": " + std::to_string(links_.size()) + " chunk links for " +
                                            std::to_string(tiers_.size()) + " cached chunks");
  for (auto t : tiers_)
    if (static_cast<std::size_t>(t) > 3) throw error(errc::invalid_argument, where() + ": bad tier in chunk_tiers");
  cells_.assign(std::size_t(chunks_) * layers_, cell_state::pending);
  ready_.assign(layers_, 0);
  top_.assign(chunks_, 0);
  bottom_.assign(chunks_, layers_);
  claimed_.assign(chunks_, 0);
  loaded_.assign(chunks_, 0);
}

std::string request_state::where() const { return "request " + std::to_string(id_); }

bool request_state::compute_ready(std::uint32_t c, std::uint32_t l) const {
  return ready_[l] >= c && (l == 0 || computing(at(c, l - 1)));
}

void request_state::advance_ready(std::uint32_t l) {
  while (ready_[l] < chunks_ && available(at(ready_[l], l))) ++ready_[l];
}

void request_state::grant(msg::action act, const msg::cell_range& r) {
  if (r.chunk_begin >= r.chunk_end || r.layer_begin >= r.layer_end || r.chunk_end > chunks_ || r.layer_end > layers_)
    throw error(errc::invalid_argument, where() + ": bad cell range " + str(r));
  if (act == msg::action::load && r.chunk_end > cached())
    throw error(errc::invalid_argument, where() + ": load of uncached cells " + str(r));
  for (auto c = r.chunk_begin; c < r.chunk_end; ++c)
    for (auto l = r.layer_begin; l < r.layer_end; ++l)
      if (at(c, l) != cell_state::pending)
        throw error(errc::invalid_argument, where() + ": cell (" + std::to_string(c) + ", " + std::to_string(l) +
                                                ") granted twice in " + str(r));
  if (act == msg::action::load) {
    for (auto c = r.chunk_begin; c < r.chunk_end; ++c)
      for (auto l = r.layer_begin; l < r.layer_end; ++l) {
        cells_[std::size_t(c) * layers_ + l] = cell_state::load_granted;
        bottom_[c] = std::min(bottom_[c], l);
        ++claimed_[c];
      }
    return;
  }
  // The GPU runs the rectangle chunk by chunk, each chunk's layers upward.
  // A refused grant leaves the request as it was.
  auto saved_cells = cells_;
  auto saved_ready = ready_;
  auto saved_top = top_;
  auto saved_computing = computing_;
  for (auto c = r.chunk_begin; c < r.chunk_end; ++c)
    for (auto l = r.layer_begin; l < r.layer_end; ++l) {
      if (!compute_ready(c, l)) {
        cells_ = std::move(saved_cells);
        ready_ = std::move(saved_ready);
        top_ = std::move(saved_top);
        computing_ = saved_computing;
        throw error(errc::invalid_argument, where() + ": compute of (" + std::to_string(c) + ", " + std::to_string(l) +
                                                ") before its inputs in " + str(r));
      }
      cells_[std::size_t(c) * layers_ + l] = cell_state::compute_granted;
      advance_ready(l);
      if (top_[c] == l) ++top_[c];
      ++computing_;
    }
}

void request_state::complete(msg::action act, const msg::cell_range& r) {
  auto from = act == msg::action::compute ? cell_state::compute_granted : cell_state::load_granted;
  auto to = act == msg::action::compute ? cell_state::computed : cell_state::loaded;
  for (auto c = r.chunk_begin; c < r.chunk_end; ++c)
    for (auto l = r.layer_begin; l < r.layer_end; ++l) {
      auto& s = cells_[std::size_t(c) * layers_ + l];
      if (s != from) continue;
      s = to;
      ++done_;
      if (act == msg::action::compute) {
        --computing_;
      } else {
        ++loaded_[c];
      }
    }
  if (act == msg::action::load)
    for (auto l = r.layer_begin; l < r.layer_end; ++l) advance_ready(l);
}

const request_state& batch_state::add(const msg::register_request& reg, double now_s) {
  if (find(reg.request_id))
    throw error(errc::invalid_argument, "request " + std::to_string(reg.request_id) + " registered twice");
  requests_.emplace_back(reg, next_arrival_++, now_s);
  return requests_.back();
}

void batch_state::remove(std::uint64_t id) {
  for (auto it = grants_.begin(); it != grants_.end();) {
    if (it->second.g.request_id != id) {
      ++it;
      continue;
    }
    if (it->second.g.act == msg::action::compute) {
      used_.compute_cells -= cell_count(it->second.g.cells);
    } else {
      used_.load_bytes[static_cast<std::size_t>(it->second.g.source)] -= it->second.bytes;
      charge_stages(it->second.g, it->second.bytes / cell_count(it->second.g.cells), -1);
    }
    it = grants_.erase(it);
  }
  requests_.erase(std::remove_if(requests_.begin(), requests_.end(), [&](auto& r) { return r.id() == id; }),
                  requests_.end());
}

const request_state* batch_state::find(std::uint64_t id) const {
  for (auto& r : requests_)
    if (r.id() == id) return &r;
  return nullptr;
}

request_state* batch_state::find_mut(std::uint64_t id) {
  for (auto& r : requests_)
    if (r.id() == id) return &r;
  return nullptr;
}

bool batch_state::fits_compute(std::uint64_t cells) const {
  return used_.compute_cells + cells <= caps_.compute_cells || (used_.compute_cells == 0 && cells == 1);
}

bool batch_state::fits_load(msg::tier t, std::uint64_t bytes, std::uint64_t cells) const {
  if (loads_held_) return false;
  auto i = static_cast<std::size_t>(t);
  return used_.load_bytes[i] + bytes <= caps_.load_bytes[i] * caps_.stages() ||
         (used_.load_bytes[i] == 0 && cells == 1);
}

bool batch_state::fits_stage_load(std::uint32_t stage, msg::tier t, std::uint64_t bytes, std::uint64_t cells) const {
  if (loads_held_) return false;
  auto used = stage_load_in_flight(stage, t);
  return used + bytes <= caps_.load_bytes[static_cast<std::size_t>(t)] || (used == 0 && cells == 1);
}

std::uint64_t batch_state::stage_load_in_flight(std::uint32_t stage, msg::tier t) const {
  if (stage >= used_.stage_load_bytes.size()) return used_.load_bytes[static_cast<std::size_t>(t)];
  return used_.stage_load_bytes[stage][static_cast<std::size_t>(t)];
}

void batch_state::set_limits(const caps& c) {
  if (c.stage_bounds != caps_.stage_bounds && !grants_.empty())
    throw error(errc::invalid_argument, "stage layout changed with grants in flight");
  caps_ = c;
  used_.stage_load_bytes.assign(c.stages() > 1 ? c.stages() : 0, {});
  if (c.stages() > 1)
    for (auto& [id, f] : grants_)
      if (f.g.act == msg::action::load) charge_stages(f.g, f.bytes / cell_count(f.g.cells), +1);
}

void batch_state::charge_stages(const msg::grant& g, std::uint64_t cell_bytes, int sign) {
  if (used_.stage_load_bytes.empty()) return;
  const auto chunks = std::uint64_t(g.cells.chunk_end - g.cells.chunk_begin);
  for (auto l = g.cells.layer_begin; l < g.cells.layer_end; ++l) {
    auto& used = used_.stage_load_bytes[stage_of(caps_.stage_bounds, l)][static_cast<std::size_t>(g.source)];
    if (sign > 0)
      used += chunks * cell_bytes;
    else
      used -= chunks * cell_bytes;
  }
}

std::uint64_t batch_state::compute_room() const {
  if (used_.compute_cells >= caps_.compute_cells) return used_.compute_cells == 0 ? 1 : 0;
  return caps_.compute_cells - used_.compute_cells;
}

void batch_state::apply(msg::grant& g) {
  auto* r = find_mut(g.request_id);
  if (!r) throw error(errc::not_found, "grant for unknown request " + std::to_string(g.request_id));
  auto cells = cell_count(g.cells);
  std::uint64_t bytes = 0;
  if (g.act == msg::action::compute) {
    if (!fits_compute(cells))
      throw error(errc::capacity_exceeded, "request " + std::to_string(g.request_id) + ": " + std::to_string(cells) +
                                               " compute cells over the cap of " + std::to_string(caps_.compute_cells));
  } else {
    for (auto c = g.cells.chunk_begin; c < g.cells.chunk_end && c < r->cached(); ++c)
      if (r->tier_of(c) != g.source)
        throw error(errc::invalid_argument, "request " + std::to_string(g.request_id) + ": chunk " + std::to_string(c) +
                                                " is not in tier " + msg::to_string(g.source));
    bytes = cells * r->cell_bytes();
    if (!fits_load(g.source, bytes, cells))
      throw error(errc::capacity_exceeded, "request " + std::to_string(g.request_id) + ": " + std::to_string(bytes) +
                                               " bytes over the " + msg::to_string(g.source) + " link cap");
  }
  r->grant(g.act, g.cells);
  g.grant_id = next_grant_++;
  if (g.act == msg::action::compute) {
    used_.compute_cells += cells;
  } else {
    used_.load_bytes[static_cast<std::size_t>(g.source)] += bytes;
    charge_stages(g, r->cell_bytes(), +1);
  }
  grants_[g.grant_id] = in_flight_grant{g, bytes};
}

std::optional<msg::rate_sample> batch_state::apply(const msg::cell_done& done) {
  auto it = grants_.find(done.grant_id);
  if (it == grants_.end()) return std::nullopt;
  auto g = it->second.g;
  auto bytes = it->second.bytes;
  grants_.erase(it);
  if (g.act == msg::action::compute) {
    used_.compute_cells -= cell_count(g.cells);
  } else {
    used_.load_bytes[static_cast<std::size_t>(g.source)] -= bytes;
    charge_stages(g, bytes / cell_count(g.cells), -1);
  }
  if (auto* r = find_mut(g.request_id)) r->complete(g.act, g.cells);
  if (g.act != msg::action::load || done.finished_ns <= done.started_ns) return std::nullopt;
  return msg::rate_sample{g.source, done.bytes ? done.bytes : bytes, done.finished_ns - done.started_ns};
}

}  // namespace kvflow::policies
