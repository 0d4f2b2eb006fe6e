#include "devices/fault_plan.hpp"

#include <cstdlib>
#include <sstream>

#include "messages/error.hpp"

namespace kvflow::devices {

const char* to_string(fault f) {
  switch (f) {
    case fault::disk_read_error:
      return "disk_read_error";
    case fault::disk_truncate:
      return "disk_truncate";
    case fault::disk_write_full:
      return "disk_write_full";
    case fault::tier_stall:
      return "tier_stall";
    case fault::duplicate_completion:
      return "duplicate_completion";
    case fault::count_:
      break;
  }
  return "unknown";
}

std::shared_ptr<fault_plan> fault_plan::parse(const std::string& spec) {
  auto plan = std::make_shared<fault_plan>();
  std::istringstream in(spec);
  std::string item;
  while (std::getline(in, item, ',')) {
    if (item.empty()) continue;
    auto eq = item.find('=');
    if (eq == std::string::npos)
      throw error(errc::invalid_argument, "fault plan entry '" + item + "' is not name=value");
    auto name = item.substr(0, eq);
    auto value = item.substr(eq + 1);
    char* end = nullptr;
    if (name == "seed") {
      auto seed = std::strtoull(value.c_str(), &end, 10);
      if (value.empty() || *end != '\0') throw error(errc::invalid_argument, "fault plan seed '" + value + "'");
      plan->rng_.seed(seed);
      continue;
    }
    double p = std::strtod(value.c_str(), &end);
    if (value.empty() || *end != '\0' || !(p >= 0 && p <= 1))
      throw error(errc::invalid_argument, "fault plan: " + name + "=" + value + " (want a probability in [0, 1])");
    bool known = false;
    for (std::size_t i = 0; i < static_cast<std::size_t>(fault::count_); ++i)
      if (name == to_string(static_cast<fault>(i))) {
        plan->p_[i] = p;
        known = true;
      }
    if (!known)
      throw error(errc::invalid_argument, "fault plan: unknown fault '" + name +
                                              "' (disk_read_error, disk_truncate, disk_write_full, tier_stall, "
                                              "duplicate_completion, seed)");
  }
  return plan;
}

std::shared_ptr<fault_plan> fault_plan::from_env() {
  const char* spec = std::getenv("KVFLOW_FAULTS");
  if (spec == nullptr || *spec == '\0') return nullptr;
  return parse(spec);
}

bool fault_plan::roll(fault f) {
  auto i = static_cast<std::size_t>(f);
  if (p_[i] <= 0) return false;
  bool hit = false;
  if (p_[i] >= 1) {
    hit = true;
  } else {
    std::lock_guard<std::mutex> lock(m_);
    hit = std::uniform_real_distribution<double>(0, 1)(rng_) < p_[i];
  }
  if (hit) ++injected_[i];
  return hit;
}

std::uint64_t fault_plan::injected(fault f) const { return injected_[static_cast<std::size_t>(f)].load(); }

std::string fault_plan::describe() const {
  std::ostringstream out;
  const char* sep = "";
  for (std::size_t i = 0; i < static_cast<std::size_t>(fault::count_); ++i)
    if (p_[i] > 0) {
      out << sep << to_string(static_cast<fault>(i)) << "=" << p_[i];
      sep = ",";
    }
  return out.str();
}

}  // namespace kvflow::devices
