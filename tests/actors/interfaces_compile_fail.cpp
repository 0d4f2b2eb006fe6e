// Must not compile: a workspace handle sent to a remote tier through its
// typed interface (CAF's typed send checks the interface). Built with
// -DKVFLOW_EXPECT_OK instead, the same file sends a frame and compiles,
// so that the failure is the refused send and not a broken include.
#include <caf/all.hpp>

#include "actors/interfaces.hpp"
#include "actors/workspace.hpp"

void send_it(caf::event_based_actor* self, const kvflow::remote_tier_actor& tier, kvflow::workspace_ptr ws) {
#ifdef KVFLOW_EXPECT_OK
  (void)ws;
  self->send(tier, kvflow::fetch_atom::value, kvflow::msg::frame{});
#else
  self->send(tier, kvflow::fetch_atom::value, kvflow::msg::frame{}, ws);
#endif
}
