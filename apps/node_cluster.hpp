#pragma once
// Starts `kvflow node` processes for tests and the bench: in a network
// namespace this process makes (behind a veth pair, optionally shaped by tc
// tbf) where it may (root, `ip` and `tc` found), on loopback otherwise.
// Everything it made is removed when it goes, whatever happened.

#include <sys/types.h>

#include <cstdio>
#include <string>
#include <vector>

namespace kvflow::app {

struct node_cluster_options {
  std::string kvflow_exe;  ///< the kvflow binary
  int nodes = 1;
  double gbps = 0;                     ///< tbf rate of the nodes' link to this process; 0: unshaped
  bool use_netns = true;               ///< false: loopback even where a namespace could be made
  std::vector<std::string> node_args;  ///< more arguments for every node
  /// Certificates (made for the cluster by make_credentials) also on
  /// loopback; a namespaced cluster always has them, since a node refuses
  /// to listen beyond loopback without.
  bool tls = false;
  /// MTU of both ends of the veth pair (0: the kernel's default, 1500). tbf
  /// counts every packet's headers: one TCP stream's payload is 1448/1514 of
  /// the shaped rate at 1500, 8948/9014 at 9000 (jumbo frames).
  int mtu = 0;  // last: tests list the fields above in order
};

/// PEM files of one cluster: a CA, and a certificate and key per name.
struct credentials {
  std::string ca, ca_key;
  std::string cert(const std::string& name) const { return dir + "/" + name + ".pem"; }
  std::string key(const std::string& name) const { return dir + "/" + name + ".key"; }
  std::string dir;
};

/// Makes a fresh CA (P-256, valid for two days) in `dir` and a certificate
/// it signs for each of `names`, with the openssl command. Throws
/// kvflow::error(io_failure) naming the command that failed.
credentials make_credentials(const std::string& dir, const std::vector<std::string>& names);

class node_cluster {
 public:
  /// Starts the nodes and waits for each to listen. Throws kvflow::error
  /// (io_failure, peer_down) with the command that failed.
  explicit node_cluster(node_cluster_options options);
  /// Kills every node (continuing stopped ones first) and removes the
  /// namespace and its link.
  ~node_cluster();
  node_cluster(const node_cluster&) = delete;
  node_cluster& operator=(const node_cluster&) = delete;

  /// "name host:port" of every node, for runtime_options::cluster_members.
  const std::vector<std::string>& members() const { return members_; }
  /// "host:port" of every node's pipeline stage (nodes started with
  /// --stage-layers in node_args), for runtime_options::stage_nodes.
  const std::vector<std::string>& stage_members() const { return stage_members_; }
  /// Each stage node's whole "stage listening ..." line (layers, weight
  /// bytes, the engine's memory), as the node printed it.
  const std::vector<std::string>& stage_reports() const { return stage_reports_; }
  /// UCX settings this process should use to reach the nodes over the link
  /// (TCP over the veth, or over loopback).
  std::string ucx_tls() const { return "tcp"; }
  std::string ucx_devices() const { return host_dev_.empty() ? "lo" : host_dev_; }
  bool namespaced() const { return !ns_.empty(); }
  std::string describe() const;
  /// The client's credentials towards the nodes (runtime_options::cluster_*);
  /// empty strings when the nodes run without TLS.
  std::string tls_cert() const { return creds_.dir.empty() ? "" : creds_.cert("client"); }
  std::string tls_key() const { return creds_.dir.empty() ? "" : creds_.key("client"); }
  std::string tls_ca() const { return creds_.ca; }
  pid_t pid(int node) const { return pids_.at(static_cast<std::size_t>(node)); }
  /// Sends `sig` to a node (SIGKILL, SIGSTOP, SIGCONT).
  void signal(int node, int sig);
  /// Shapes the nodes' side of the link to `gbps` (0: removes the shape).
  /// Only in a namespace; false on loopback.
  bool shape(double gbps);
  /// Measures the link's raw rate from the namespace to this process:
  /// `streams` TCP streams at once (one python3 sender each in the
  /// namespace) of `bytes` in all, from the first byte received to the last.
  /// 0 when not namespaced or python3 is missing.
  double measure_gbps(std::size_t bytes, int streams = 1);

 private:
  void start_node(int i);
  void cleanup() noexcept;

  node_cluster_options opt_;
  std::string ns_, host_dev_, node_dev_, host_ip_, node_ip_;
  std::vector<pid_t> pids_;
  std::vector<FILE*> outs_;
  std::vector<std::string> members_;
  std::vector<std::string> stage_members_;
  std::vector<std::string> stage_reports_;
  credentials creds_;
};

/// Runs a shell command; throws kvflow::error(io_failure) naming it when it fails.
void run_checked(const std::string& cmd);

}  // namespace kvflow::app
