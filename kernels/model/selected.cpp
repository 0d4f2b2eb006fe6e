// The engine's default for selective recompute (backends that lack it).

#include "kernels/model/engine.hpp"
#include "messages/error.hpp"

namespace kvflow::model {

void engine::run_selected(const selected_job&) {
  throw error(errc::unsupported,
              "engine for " + cfg().name + ": selective recompute (run_selected) is not implemented on this backend");
}

}  // namespace kvflow::model
