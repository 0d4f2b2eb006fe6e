// The typed protocol refuses what names process memory: the trait that
// actors/interfaces.hpp asserts on, and (interfaces_compile_fail.cpp, built
// by ctest and expected to fail) a typed send of a workspace handle.

#define BOOST_TEST_MODULE actors.interfaces
#include <boost/test/unit_test.hpp>

#include "actors/interfaces.hpp"
#include "actors/workspace.hpp"

using namespace kvflow;

using leaky_tier = caf::typed_actor<caf::replies_to<fetch_atom, msg::frame, workspace_ptr>::with<msg::frame>>;
using leaky_reply = caf::typed_actor<caf::replies_to<lookup_atom, msg::frame>::with<const char*>>;

static_assert(no_process_memory<remote_tier_actor>);
static_assert(no_process_memory<node_actor>);
static_assert(!no_process_memory<leaky_tier>, "a workspace_ptr in a message must be refused");
static_assert(!no_process_memory<leaky_reply>, "a pointer in a reply must be refused");
static_assert(names_process_memory<workspace_ptr>::value && names_process_memory<int*>::value &&
              !names_process_memory<msg::frame>::value);

BOOST_AUTO_TEST_CASE(the_protocol_names_no_process_memory) {
  BOOST_TEST(no_process_memory<node_actor>);
  BOOST_TEST(!no_process_memory<leaky_tier>);
}
