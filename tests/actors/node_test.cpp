#define BOOST_TEST_MODULE actors.node
#include <boost/test/unit_test.hpp>

#include <caf/actor_system.hpp>
#include <caf/io/middleman.hpp>
#include <caf/scoped_actor.hpp>

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>
#include <chrono>
#include <cstdio>
#include <optional>

#include "actors/atoms.hpp"
#include "actors/caf_error.hpp"
#include "actors/frame_type.hpp"
#include "actors/node.hpp"
#include "actors/system_config.hpp"

using namespace kvflow;
using namespace std::chrono_literals;

namespace {

// Asks `node` with one frame; returns the decoded reply or the error.
caf::expected<msg::message> ask(caf::actor_system& sys, const caf::actor& node, const msg::frame& f) {
  caf::scoped_actor self{sys};
  std::optional<caf::expected<msg::message>> out;
  caf::error err;
  self->request(node, 5s, f)
      .receive(
          [&](const msg::frame& reply) {
            auto d = msg::decode(reply);
            if (d)
              out = std::move(*d);
            else
              out = make_error(d.error());
          },
          [&](caf::error& e) { err = std::move(e); });
  if (out) return std::move(*out);
  return err;
}

void check_node(caf::actor_system& sys, const caf::actor& node, const std::string& expected_id) {
  caf::scoped_actor self{sys};
  self->request(node, 5s, inventory_atom::value)
      .receive(
          [&](const msg::frame& f) {
            auto inv = msg::decode(f);
            BOOST_REQUIRE(inv);
            BOOST_CHECK_EQUAL(std::get<msg::node_inventory>(*inv).node_id, expected_id);
          },
          [&](const caf::error& e) { BOOST_FAIL("inventory: " << sys.render(e)); });

  msg::grant g{3, 9, msg::action::load, {2, 4, 0, 30}, msg::tier::disk};
  auto back = ask(sys, node, msg::encode(g));
  BOOST_REQUIRE_MESSAGE(back, (back ? "" : sys.render(back.error())));
  BOOST_CHECK(msg::same(*back, g));

  auto refused = ask(sys, node, msg::frame{std::vector<char>(40, '\x55')});
  BOOST_REQUIRE(!refused);
  BOOST_CHECK(refused.error().category() == error_category::value);
  BOOST_CHECK_NE(sys.render(refused.error()).find("kvflow::"), std::string::npos);
}

}  // namespace

BOOST_AUTO_TEST_CASE(in_process_exchange) {
  system_config cfg;
  caf::actor_system sys{cfg};
  auto node =
      caf::actor_cast<caf::actor>(sys.spawn(kvflow::node, msg::node_inventory{"local", "", 0, {}, {}}, node_options{}));
  check_node(sys, node, "local");
  caf::anon_send_exit(node, caf::exit_reason::user_shutdown);
}

BOOST_AUTO_TEST_CASE(two_processes_through_the_middleman) {
  auto& args = boost::unit_test::framework::master_test_suite();
  BOOST_REQUIRE_MESSAGE(args.argc >= 2, "pass the kvflow binary after --");
  std::string cmd = std::string(args.argv[1]) + " --log-level warn node --port 0 --node-id remote-one";
  // popen gives us the child's stdout; the child's pid comes from the shell's exec.
  FILE* child = popen(("exec " + cmd + " & echo pid $!; wait").c_str(), "r");
  BOOST_REQUIRE(child);
  char line[256];
  int pid = 0;
  unsigned port = 0;
  for (int i = 0; i < 2 && fgets(line, sizeof line, child); ++i) {
    std::sscanf(line, "pid %d", &pid);
    std::sscanf(line, "listening %*[^:]:%u", &port);
  }
  BOOST_REQUIRE(pid > 0);
  BOOST_REQUIRE_MESSAGE(port > 0, "node process did not report a port");
  {
    system_config cfg;
    caf::actor_system sys{cfg};
    auto remote = sys.middleman().remote_actor<node_actor>("127.0.0.1", static_cast<std::uint16_t>(port));
    BOOST_REQUIRE_MESSAGE(remote, (remote ? "" : sys.render(remote.error())));
    check_node(sys, caf::actor_cast<caf::actor>(*remote), "remote-one");
  }
  kill(pid, SIGTERM);
  BOOST_CHECK_EQUAL(pclose(child), 0);
}

// The node's compressed frames leave least recently used first: a fetch
// (get) keeps a chunk's frames over ones stored after it.
BOOST_AUTO_TEST_CASE(packed_cache_evicts_least_recently_used) {
  auto chunk = [](std::uint64_t bytes) {
    auto c = std::make_shared<packed_chunk>();
    c->bytes = bytes;
    return c;
  };
  auto key = [](std::uint8_t n) {
    msg::chunk_key k{};
    k[0] = n;
    return k;
  };
  packed_cache cache(300);
  cache.put(key(1), chunk(100));
  cache.put(key(2), chunk(100));
  cache.put(key(3), chunk(100));
  BOOST_TEST(cache.bytes() == 300u);
  BOOST_REQUIRE(cache.get(key(1)));  // 1 is now the most recently used
  cache.put(key(4), chunk(100));     // 2 goes
  BOOST_TEST(!cache.get(key(2)));
  BOOST_TEST(cache.get(key(1)));
  BOOST_TEST(cache.get(key(3)));
  BOOST_TEST(cache.get(key(4)));
  cache.put(key(3), chunk(250));  // replacing resizes: 1 and 4 go, oldest first
  BOOST_TEST(cache.bytes() == 250u);
  BOOST_TEST(!cache.get(key(1)));
  BOOST_TEST(!cache.get(key(4)));
  BOOST_TEST(cache.get(key(3)));
}
