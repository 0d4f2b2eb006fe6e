#include "actors/node_tls.hpp"

#include <arpa/inet.h>

#include <filesystem>
#include <fstream>

#include <caf/io/middleman.hpp>
#include <caf/openssl/manager.hpp>
#include <caf/openssl/publish.hpp>
#include <caf/openssl/remote_actor.hpp>
#include <caf/scoped_actor.hpp>

#include "actors/caf_error.hpp"
#include "actors/openssl_error_queue.hpp"
#include "messages/error.hpp"
#include "messages/log.hpp"

namespace kvflow {

void check_tls(const tls_options& tls) {
  if (!tls.enabled()) return;
  const std::pair<const char*, const std::string*> files[] = {
      {"certificate (--cert)", &tls.cert}, {"private key (--key)", &tls.key}, {"CA certificate (--ca)", &tls.ca}};
  for (auto& [what, path] : files) {
    if (path->empty())
      throw error(errc::invalid_argument,
                  std::string("TLS: no ") + what + "; a node needs its certificate, its key and the cluster's CA");
    std::ifstream in(*path);
    if (!in || in.peek() == std::ifstream::traits_type::eof())
      throw error(errc::io_failure, std::string("TLS: cannot read the ") + what + " " + *path);
  }
}

tls_options read_cluster_tls(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw error(errc::io_failure, "cannot read cluster file " + path);
  auto folder = std::filesystem::path(path).parent_path();
  tls_options out;
  std::string line;
  for (int n = 1; std::getline(in, line); ++n) {
    auto eq = line.find('=');
    auto start = line.find_first_not_of(" \t\r");
    if (eq == std::string::npos || start == std::string::npos || line[start] == '#') continue;
    auto trim = [](std::string s) {
      auto b = s.find_first_not_of(" \t\r");
      auto e = s.find_last_not_of(" \t\r");
      return b == std::string::npos ? std::string() : s.substr(b, e - b + 1);
    };
    auto name = trim(line.substr(0, eq));
    auto value = trim(line.substr(eq + 1));
    auto where = path + ":" + std::to_string(n) + ": ";
    if (value.empty()) throw error(errc::invalid_argument, where + name + " names no file");
    auto file = std::filesystem::path(value).is_absolute() ? value : (folder / value).string();
    if (name == "cert")
      out.cert = file;
    else if (name == "key")
      out.key = file;
    else if (name == "ca")
      out.ca = file;
    else
      throw error(errc::invalid_argument, where + "unknown setting '" + name + "' (want cert, key or ca)");
  }
  return out;
}

tls_options merge_tls(const tls_options& flags, const tls_options& file) { return flags.enabled() ? flags : file; }

void use_tls(caf::actor_system_config& cfg, const tls_options& tls) {
  if (!tls.enabled()) return;
  check_tls(tls);
  if (!openssl_error_queue_guarded())
    logger("actors")->warn(
        "TLS: OpenSSL's calls are not behind kvflow's error-queue guard: a peer that dies may "
        "take this process's other TLS connections down with it");
  cfg.load<caf::openssl::manager>();
  cfg.openssl_certificate = tls.cert;
  cfg.openssl_key = tls.key;
  cfg.openssl_cafile = tls.ca;
}

bool tls_enabled(caf::actor_system& sys) {
  return sys.has_openssl_manager() && sys.openssl_manager().authentication_enabled();
}

bool is_loopback(const std::string& host) {
  if (host == "localhost") return true;
  in_addr v4{};
  if (inet_pton(AF_INET, host.c_str(), &v4) == 1) return (ntohl(v4.s_addr) >> 24) == 127;
  in6_addr v6{};
  if (inet_pton(AF_INET6, host.c_str(), &v6) == 1) return IN6_IS_ADDR_LOOPBACK(&v6);
  return false;
}

std::string plain_listen_refusal(const std::string& host) {
  if (is_loopback(host)) return {};
  return "refusing to listen on " + (host.empty() ? std::string("every interface") : host) +
         " without TLS: anyone who reaches the port could read and write the cache; pass --cert, --key and --ca "
         "(see README, \"Security: nodes and tenants\") or listen on 127.0.0.1";
}

caf::expected<std::uint16_t> publish_node(caf::actor_system& sys, const node_actor& node, std::uint16_t port,
                                          const std::string& host) {
  if (tls_enabled(sys)) return caf::openssl::publish(node, port, host.c_str(), true);
  if (auto why = plain_listen_refusal(host); !why.empty()) return make_error(errc::invalid_argument, why);
  return sys.middleman().publish(node, port, host.c_str(), true);
}

caf::expected<std::uint16_t> publish_stage(caf::actor_system& sys, const stage_host_actor& stage, std::uint16_t port,
                                           const std::string& host) {
  if (tls_enabled(sys)) return caf::openssl::publish(stage, port, host.c_str(), true);
  if (auto why = plain_listen_refusal(host); !why.empty()) return make_error(errc::invalid_argument, why);
  return sys.middleman().publish(stage, port, host.c_str(), true);
}

caf::expected<stage_host_actor> connect_stage(caf::actor_system& sys, const std::string& host, std::uint16_t port) {
  if (tls_enabled(sys)) return caf::openssl::remote_actor<stage_host_actor>(sys, host, port);
  return sys.middleman().remote_actor<stage_host_actor>(host, port);
}

caf::expected<node_actor> connect_node(caf::actor_system& sys, const std::string& host, std::uint16_t port,
                                       std::chrono::milliseconds timeout) {
  // What caf::io::middleman::remote_actor does, with a deadline.
  caf::expected<node_actor> out{caf::sec::runtime_error};
  auto where = host + ":" + std::to_string(port);
  caf::scoped_actor self{sys};
  self->request(node_connector(sys), timeout, caf::connect_atom::value, host, port)
      .receive(
          [&](const caf::node_id&, caf::strong_actor_ptr& ptr, const std::set<std::string>& ifs) {
            if (!ptr)
              out = make_error(errc::not_found, "no node published at " + where);
            else if (!sys.assignable<node_actor>(ifs))
              out = make_error(errc::invalid_argument, "the actor at " + where + " is not a kvflow node");
            else
              out = caf::actor_cast<node_actor>(std::move(ptr));
          },
          [&](caf::error& e) {
            out = make_error(errc::peer_down, "cannot connect to node " + where +
                                                  (tls_enabled(sys) ? " over TLS" : "") + ": " + sys.render(e));
          });
  return out;
}

caf::io::middleman_actor node_connector(caf::actor_system& sys) {
  if (tls_enabled(sys)) return sys.openssl_manager().actor_handle();
  return sys.middleman().actor_handle();
}

}  // namespace kvflow
