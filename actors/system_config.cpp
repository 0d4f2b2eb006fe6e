#include "actors/system_config.hpp"

#include <caf/io/middleman.hpp>

#include "actors/bulk_type.hpp"
#include "actors/caf_error.hpp"
#include "actors/frame_type.hpp"

namespace kvflow {

system_config::system_config(const network_options& net) {
  add_message_type<msg::frame>("kvflow::frame");
  add_message_type<msg::bulk>("kvflow::bulk");
  add_error_category(error_category::value, render_error);
  load<caf::io::middleman>();
  set("middleman.heartbeat-interval", caf::timespan{net.heartbeat});
  set("middleman.connection-timeout", caf::timespan{net.connection_timeout});
}

}  // namespace kvflow
