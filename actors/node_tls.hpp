#pragma once
// Authentication between kvflow processes. CAF's binary protocol (BASP)
// authenticates nobody: whoever reaches a published node's port may store
// and fetch chunks. With certificates configured, every node-to-node and
// client-to-node connection runs over CAF's OpenSSL module instead: TLS 1.2,
// both sides present a certificate, and each checks the other's against the
// cluster's CA (a peer without one, or with one another CA signed, fails the
// handshake). Without certificates a node listens on loopback only.

#include <chrono>
#include <cstdint>
#include <string>

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <caf/expected.hpp>
#include <caf/io/middleman_actor.hpp>

#include "actors/interfaces.hpp"

namespace kvflow {

/// A process's credentials in its cluster: PEM files. All three or none.
struct tls_options {
  std::string cert;  ///< this process's certificate (chain), signed by `ca`
  std::string key;   ///< its private key (unencrypted PEM)
  std::string ca;    ///< the cluster's CA certificate: peers must chain to it
  bool enabled() const { return !cert.empty() || !key.empty() || !ca.empty(); }
};

/// Checks that all three files are named and readable. CAF reports a bad
/// path only as a misleading "cannot_open_port" (or throws on one of its own
/// threads), so this runs before anything listens or connects. Throws
/// kvflow::error: invalid_argument when only some are named, io_failure
/// naming the file that cannot be read.
void check_tls(const tls_options& tls);

/// The TLS settings of a cluster file: lines "cert = PATH", "key = PATH",
/// "ca = PATH" (relative paths are taken from the file's folder; member
/// lines, blanks and '#' comments are skipped). Throws kvflow::error
/// (io_failure, invalid_argument) with the file and line.
tls_options read_cluster_tls(const std::string& path);

/// `flags` where they name anything, else `file`'s: flags win as a whole,
/// so a node never mixes credentials of two sources.
tls_options merge_tls(const tls_options& flags, const tls_options& file);

/// Loads CAF's OpenSSL module into `cfg` with these credentials (after
/// check_tls). Nothing when !tls.enabled(). Call before the actor system is
/// made from `cfg`.
void use_tls(caf::actor_system_config& cfg, const tls_options& tls);

/// True when `sys` was made with credentials (use_tls).
bool tls_enabled(caf::actor_system& sys);

/// True for a host that only this machine reaches: 127.0.0.0/8, ::1,
/// "localhost". Not for "", "0.0.0.0" or "::" (every interface).
bool is_loopback(const std::string& host);

/// Why a node may not listen on `host` without TLS (what to pass instead);
/// empty when it may (loopback).
std::string plain_listen_refusal(const std::string& host);

/// Publishes a node on host:port (0: any free port): over TLS when `sys`
/// has credentials; in the clear only on loopback, else an error
/// (invalid_argument) saying to pass certificates.
caf::expected<std::uint16_t> publish_node(caf::actor_system& sys, const node_actor& node, std::uint16_t port,
                                          const std::string& host);

/// publish_node's rules for a pipeline stage host (kvflow node
/// --stage-layers): TLS with credentials, in the clear only on loopback.
caf::expected<std::uint16_t> publish_stage(caf::actor_system& sys, const stage_host_actor& stage, std::uint16_t port,
                                           const std::string& host);

/// Connects to a published stage host, over TLS when `sys` has credentials.
caf::expected<stage_host_actor> connect_stage(caf::actor_system& sys, const std::string& host, std::uint16_t port);

/// Connects to a published node, over TLS when `sys` has credentials.
/// Fails past `timeout` (a peer whose TLS handshake stalls, or one that
/// accepts and says nothing, would otherwise hold the caller forever), when
/// the handshake fails, and when the actor there is no node.
caf::expected<node_actor> connect_node(caf::actor_system& sys, const std::string& host, std::uint16_t port,
                                       std::chrono::milliseconds timeout = std::chrono::seconds(10));

/// The middleman actor that connects to nodes (connect_atom): the OpenSSL
/// module's when `sys` has credentials, the plain middleman's otherwise.
caf::io::middleman_actor node_connector(caf::actor_system& sys);

}  // namespace kvflow
