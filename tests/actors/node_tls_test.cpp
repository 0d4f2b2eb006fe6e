#define BOOST_TEST_MODULE actors.node_tls
#include <boost/test/unit_test.hpp>

#include <caf/actor_system.hpp>
#include <caf/io/middleman.hpp>
#include <caf/scoped_actor.hpp>

#include <signal.h>
#include <unistd.h>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "actors/atoms.hpp"
#include "actors/caf_error.hpp"
#include "actors/frame_type.hpp"
#include "actors/node.hpp"
#include "actors/node_tls.hpp"
#include "actors/remote_tier_actor.hpp"
#include "actors/system_config.hpp"
#include "apps/node_cluster.hpp"

using namespace kvflow;
using namespace std::chrono_literals;
namespace fs = std::filesystem;

namespace {

// A folder with two clusters' credentials: "ours" (node, client) and
// "theirs" (a stranger whose certificate another CA signed).
struct fixture {
  fs::path dir = fs::temp_directory_path() / ("kvflow-tls-test-" + std::to_string(::getpid()));
  app::credentials ours = app::make_credentials((dir / "ours").string(), {"node", "client"});
  app::credentials theirs = app::make_credentials((dir / "theirs").string(), {"stranger"});
  ~fixture() {
    std::error_code ec;
    fs::remove_all(dir, ec);
  }
  tls_options as(const app::credentials& c, const std::string& name) const { return {c.cert(name), c.key(name), c.ca}; }
};

// The node's inventory through `h`, or the error.
caf::expected<std::string> inventory_of(caf::actor_system& sys, const node_actor& h) {
  caf::scoped_actor self{sys};
  caf::expected<std::string> out{caf::sec::runtime_error};
  self->request(h, 5s, inventory_atom::value)
      .receive(
          [&](const msg::frame& f) {
            auto inv = msg::decode(f);
            if (inv) out = std::get<msg::node_inventory>(*inv).node_id;
          },
          [&](caf::error& e) { out = std::move(e); });
  return out;
}

// A node published by an actor system of its own.
struct published {
  system_config cfg;
  std::unique_ptr<caf::actor_system> sys;
  node_actor node;
  std::uint16_t port = 0;
  published(const tls_options& tls, const std::string& host = "127.0.0.1") {
    use_tls(cfg, tls);
    sys = std::make_unique<caf::actor_system>(cfg);
    node = sys->spawn(kvflow::node, msg::node_inventory{"tls-node", host, 0, {}, {}}, node_options{});
    auto p = publish_node(*sys, node, 0, host);
    BOOST_REQUIRE_MESSAGE(p, (p ? "" : sys->render(p.error())));
    port = *p;
  }
  ~published() { caf::anon_send_exit(node, caf::exit_reason::user_shutdown); }
};

// Connects from a fresh actor system configured by `setup`; the node's id or the error.
template <class Setup>
caf::expected<std::string> connect_from(std::uint16_t port, Setup setup) {
  system_config cfg;
  setup(cfg);
  caf::actor_system sys{cfg};
  auto h = connect_node(sys, "127.0.0.1", port, 5s);
  if (!h) return h.error();
  return inventory_of(sys, *h);
}

// A TLS handshake with openssl's client: true when it completed and the
// node sent no alert within a second (TLS 1.3 refuses a client's missing
// certificate after the client's side of the handshake finished).
bool handshake(std::uint16_t port, const std::string& args) {
  auto cmd = "sleep 1 | timeout 10 openssl s_client -connect 127.0.0.1:" + std::to_string(port) +
             " -verify_return_error " + args + " 2>&1";
  FILE* p = popen(cmd.c_str(), "r");
  BOOST_REQUIRE(p);
  std::string out;
  char buf[512];
  while (fgets(buf, sizeof buf, p)) out += buf;
  int rc = pclose(p);
  BOOST_TEST_MESSAGE("openssl s_client " << args << ": rc " << rc);
  return rc == 0 && out.find("alert") == std::string::npos;
}

}  // namespace

BOOST_AUTO_TEST_CASE(only_loopback_counts_as_loopback) {
  for (auto h : {"127.0.0.1", "127.3.2.1", "::1", "localhost"}) BOOST_TEST(is_loopback(h), h);
  for (auto h : {"", "0.0.0.0", "::", "10.0.0.1", "192.168.1.2", "128.0.0.1", "example.com", "127.0.0.1.evil"})
    BOOST_TEST(!is_loopback(h), h);
}

BOOST_AUTO_TEST_CASE(without_certificates_a_node_listens_on_loopback_only) {
  system_config cfg;
  caf::actor_system sys{cfg};
  auto node = sys.spawn(kvflow::node, msg::node_inventory{"plain", "", 0, {}, {}}, node_options{});
  for (auto host : {"0.0.0.0", "", "::"}) {
    auto p = publish_node(sys, node, 0, host);
    BOOST_REQUIRE(!p);
    BOOST_TEST(sys.render(p.error()).find("without TLS") != std::string::npos, sys.render(p.error()));
  }
  auto p = publish_node(sys, node, 0, "127.0.0.1");
  BOOST_REQUIRE_MESSAGE(p, (p ? "" : sys.render(p.error())));
  auto id = connect_from(*p, [](system_config&) {});
  BOOST_REQUIRE_MESSAGE(id, (id ? "" : sys.render(id.error())));
  BOOST_TEST(*id == "plain");
  caf::anon_send_exit(node, caf::exit_reason::user_shutdown);
}

BOOST_AUTO_TEST_CASE(partial_or_unreadable_credentials_are_refused_up_front) {
  fixture f;
  auto good = f.as(f.ours, "node");
  BOOST_CHECK_NO_THROW(check_tls(good));
  BOOST_CHECK_NO_THROW(check_tls({}));
  auto partial = good;
  partial.ca.clear();
  BOOST_CHECK_EXCEPTION(check_tls(partial), error, [](const error& e) { return e.code() == errc::invalid_argument; });
  auto missing = good;
  missing.key = (f.dir / "nope.key").string();
  BOOST_CHECK_EXCEPTION(check_tls(missing), error, [](const error& e) {
    return e.code() == errc::io_failure && std::string(e.what()).find("nope.key") != std::string::npos;
  });
}

BOOST_AUTO_TEST_CASE(a_cluster_file_carries_the_credentials) {
  fixture f;
  auto file = f.dir / "ours" / "cluster.txt";
  std::ofstream(file) << "# two nodes\nn0 127.0.0.1:4242\ncert = node.pem\nkey = node.key\nca = " << f.ours.ca
                      << "\nn1 127.0.0.1:4243\n";
  auto tls = read_cluster_tls(file.string());
  BOOST_TEST(tls.cert == f.ours.cert("node"));
  BOOST_TEST(tls.key == f.ours.key("node"));
  BOOST_TEST(tls.ca == f.ours.ca);
  BOOST_TEST(read_cluster_file(file.string()).size() == 2u);
  // Flags win as a whole.
  tls_options flags{"a", "b", "c"};
  BOOST_TEST(merge_tls(flags, tls).cert == "a");
  BOOST_TEST(merge_tls({}, tls).cert == tls.cert);
  std::ofstream(file, std::ios::app) << "certificate = x.pem\n";
  BOOST_CHECK_THROW(read_cluster_tls(file.string()), error);
}

BOOST_AUTO_TEST_CASE(peers_with_certificates_of_the_cluster_ca_talk) {
  fixture f;
  published n(f.as(f.ours, "node"));
  BOOST_TEST(tls_enabled(*n.sys));
  auto id = connect_from(n.port, [&](system_config& c) { use_tls(c, f.as(f.ours, "client")); });
  BOOST_REQUIRE_MESSAGE(id, (id ? "" : to_string(id.error())));
  BOOST_TEST(*id == "tls-node");
}

BOOST_AUTO_TEST_CASE(peers_without_a_certificate_of_the_cluster_ca_are_refused) {
  fixture f;
  published n(f.as(f.ours, "node"));
  // No TLS at all: CAF's plain binary protocol.
  auto plain = connect_from(n.port, [](system_config&) {});
  BOOST_TEST(!plain, "a client without TLS reached the node");
  // TLS with a certificate another CA signed (trusting our CA, so only the
  // node's check of the client can refuse it).
  auto stranger = connect_from(n.port, [&](system_config& c) {
    use_tls(c, {f.theirs.cert("stranger"), f.theirs.key("stranger"), f.ours.ca});
  });
  BOOST_TEST(!stranger, "a client with another CA's certificate reached the node");
  // TLS that checks the node but presents no certificate of its own (CAF
  // itself will not connect so; openssl's client will).
  BOOST_TEST(!handshake(n.port, "-CAfile " + f.ours.ca), "a client without a certificate reached the node");
  BOOST_TEST(
      handshake(n.port, "-CAfile " + f.ours.ca + " -cert " + f.ours.cert("client") + " -key " + f.ours.key("client")));
  // A client of our cluster refuses a node whose certificate another CA signed.
  published impostor(f.as(f.theirs, "stranger"));
  auto fooled = connect_from(impostor.port, [&](system_config& c) { use_tls(c, f.as(f.ours, "client")); });
  BOOST_TEST(!fooled, "a client trusted a node of another CA");
  // The node still serves its own cluster afterwards.
  auto id = connect_from(n.port, [&](system_config& c) { use_tls(c, f.as(f.ours, "client")); });
  BOOST_TEST(bool(id));
}

BOOST_AUTO_TEST_CASE(the_node_command_refuses_to_listen_beyond_loopback_without_certificates) {
  auto& args = boost::unit_test::framework::master_test_suite();
  BOOST_REQUIRE_MESSAGE(args.argc >= 2, "pass the kvflow binary after --");
  std::string exe = args.argv[1];
  FILE* p = popen((exe + " --log-level warn node --host 0.0.0.0 --port 0 2>&1").c_str(), "r");
  BOOST_REQUIRE(p);
  std::string out;
  char buf[512];
  while (fgets(buf, sizeof buf, p)) out += buf;
  int rc = pclose(p);
  BOOST_TEST(WEXITSTATUS(rc) == 2, out);
  BOOST_TEST(out.find("without TLS") != std::string::npos, out);
  BOOST_TEST(out.find("listening") == std::string::npos, out);

  // With certificates it listens, and a client of the cluster reaches it.
  fixture f;
  auto cmd = exe + " --log-level warn node --port 0 --node-id cli-node --cert " + f.ours.cert("node") + " --key " +
             f.ours.key("node") + " --ca " + f.ours.ca;
  FILE* child = popen(("exec " + cmd + " & echo pid $!; wait").c_str(), "r");
  BOOST_REQUIRE(child);
  char line[256];
  int pid = 0;
  unsigned port = 0;
  char mode[16] = {};
  for (int i = 0; i < 2 && fgets(line, sizeof line, child); ++i) {
    std::sscanf(line, "pid %d", &pid);
    std::sscanf(line, "listening %*[^:]:%u %15s", &port, mode);
  }
  BOOST_REQUIRE(pid > 0);
  BOOST_REQUIRE_MESSAGE(port > 0, "the node did not report a port");
  BOOST_TEST(std::string(mode) == "tls");
  auto id =
      connect_from(static_cast<std::uint16_t>(port), [&](system_config& c) { use_tls(c, f.as(f.ours, "client")); });
  BOOST_TEST(bool(id));
  if (id) BOOST_TEST(*id == "cli-node");
  auto plain = connect_from(static_cast<std::uint16_t>(port), [](system_config&) {});
  BOOST_TEST(!plain);
  kill(pid, SIGTERM);
  BOOST_CHECK_EQUAL(pclose(child), 0);
}
