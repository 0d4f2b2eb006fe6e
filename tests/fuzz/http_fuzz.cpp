// Fuzz target: `kvflow serve`'s HTTP request handling without sockets. The
// input's first byte picks an open or a keyed server; the rest is the raw
// request that cpp-httplib's server reads from an in-memory stream
// (Server::process_request, as httplib's own fuzzer does) and routes to
// handlers that run the server's own checks (read_api_request: key, then
// body) and answer as it does.
// Properties: nothing crashes or escapes; every answer is an HTTP/1.1
// status line; a generation route answers 200 only to an accepted key and
// body, else the status of its api_error with an OpenAI error body; a keyed
// server never answers 200 to a request without a known key.

#include <httplib.h>

#include <cstddef>
#include <cstdint>
#include <string>

#include "actors/frontend/api_request.hpp"
#include "tests/fuzz/fuzz_check.hpp"

using namespace kvflow::frontend;
using json = nlohmann::json;

namespace {

class memory_stream : public httplib::Stream {
 public:
  memory_stream(const char* data, std::size_t size) : in_(data, size) {}
  bool is_readable() const override { return true; }
  bool is_writable() const override { return true; }
  ssize_t read(char* ptr, std::size_t size) override {
    auto n = std::min(size, in_.size() - pos_);
    std::memcpy(ptr, in_.data() + pos_, n);
    pos_ += n;
    return static_cast<ssize_t>(n);
  }
  ssize_t write(const char* ptr, std::size_t size) override {
    out_.append(ptr, size);
    return static_cast<ssize_t>(size);
  }
  void get_remote_ip_and_port(std::string& ip, int& port) const override {
    ip = "127.0.0.1";
    port = 1;
  }
  void get_local_ip_and_port(std::string& ip, int& port) const override {
    ip = "127.0.0.1";
    port = 2;
  }
  socket_t socket() const override { return 0; }
  const std::string& out() const { return out_; }

 private:
  std::string in_;
  std::size_t pos_ = 0;
  std::string out_;
};

class fuzz_server : public httplib::Server {
 public:
  explicit fuzz_server(bool keyed)
      : keys_(keyed ? tenants({{"sk-a", "alice"}}, tenant_secret{std::string(32, 'k')}) : tenants()) {
    set_payload_max_length(1 << 16);
    Post("/v1/completions",
         [this](const httplib::Request& q, httplib::Response& s) { generate(endpoint::completions, q, s); });
    Post("/v1/chat/completions",
         [this](const httplib::Request& q, httplib::Response& s) { generate(endpoint::chat, q, s); });
    Get("/v1/models", [this](const httplib::Request& q, httplib::Response& s) {
      try {
        keys_.authenticate(q.get_header_value("Authorization"));
        s.set_content(dump(models_body("m", 0, 8192)), "application/json");
      } catch (const api_error& e) {
        answer_error(s, e);
      }
    });
  }
  std::string handle(const char* data, std::size_t size) {
    memory_stream s(data, size);
    bool closed = false;
    process_request(s, true, closed, nullptr);
    return s.out();
  }
  int generated = 0;
  bool keyed() const { return !keys_.open(); }

 private:
  void answer_error(httplib::Response& s, const api_error& e) {
    s.status = e.status();
    s.set_content(dump(error_body(e)), "application/json");
  }
  void generate(endpoint kind, const httplib::Request& q, httplib::Response& s) {
    parse_limits l;
    l.model = "m";
    l.vocab_size = 512;
    try {
      auto in = read_api_request(kind, q.get_header_value("Authorization"), q.body, keys_, l);
      KVFLOW_FUZZ_CHECK(in.tenant == (keyed() ? "alice" : "default"), "tenant from somewhere but the key");
      KVFLOW_FUZZ_CHECK(in.salt == (keyed() ? keys_.cache_salt("alice") : ""), "salt from somewhere but the key");
      KVFLOW_FUZZ_CHECK(!keyed() || q.get_header_value("Authorization") == "Bearer sk-a", "admitted without the key");
      ++generated;
      s.set_content(dump(json{{"ok", true}}), "application/json");
    } catch (const api_error& e) {
      KVFLOW_FUZZ_CHECK(e.status() == 400 || e.status() == 401 || e.status() == 404, "unexpected refusal status");
      answer_error(s, e);
    }
  }
  tenants keys_;
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 1) return 0;
  static fuzz_server open(false), keyed(true);
  auto& server = (data[0] & 1) ? keyed : open;
  auto out = server.handle(reinterpret_cast<const char*>(data + 1), size - 1);
  KVFLOW_FUZZ_CHECK(out.empty() || out.compare(0, 9, "HTTP/1.1 ") == 0, "an answer without a status line");
  return 0;
}
