// CAF 0.17's TLS sessions (libcaf_openssl) call SSL_read, SSL_write,
// SSL_connect and SSL_accept without emptying the thread's OpenSSL error
// queue first, which OpenSSL requires: SSL_get_error() reads that queue, so
// an error left by another connection turns an operation that would merely
// block (SSL_ERROR_WANT_READ) into a failure. A node killed mid-transfer
// leaves one there (OpenSSL 3: unexpected EOF), and the next TLS connection
// of the same multiplexer thread to wait for data is closed as failed: in
// actors.cluster, killing node n0 took n1 and n2 down with it 12 ms later,
// and the restore recomputed every chunk instead of n0's share.
//
// These definitions in the executable come first in the dynamic linker's
// order, so libcaf_openssl's calls land here: the queue is emptied, then
// libssl's function (dlsym RTLD_NEXT) runs. Every SSL I/O call of the
// process goes through them, which is what OpenSSL asks of every caller.

#include "actors/openssl_error_queue.hpp"

#include <dlfcn.h>

#include <cstdio>
#include <cstdlib>

#include <openssl/err.h>
#include <openssl/ssl.h>

namespace {

// libssl's own function `name`; a process without it cannot have called here.
template <class Fn>
Fn next(const char* name) {
  auto* f = reinterpret_cast<Fn>(dlsym(RTLD_NEXT, name));
  if (!f) {
    std::fprintf(stderr, "kvflow: OpenSSL's %s not found behind kvflow's error-queue guard\n", name);
    std::abort();
  }
  return f;
}

}  // namespace

extern "C" {

int SSL_read(SSL* ssl, void* buf, int num) {
  static const auto real = next<int (*)(SSL*, void*, int)>("SSL_read");
  ERR_clear_error();
  return real(ssl, buf, num);
}

int SSL_write(SSL* ssl, const void* buf, int num) {
  static const auto real = next<int (*)(SSL*, const void*, int)>("SSL_write");
  ERR_clear_error();
  return real(ssl, buf, num);
}

int SSL_connect(SSL* ssl) {
  static const auto real = next<int (*)(SSL*)>("SSL_connect");
  ERR_clear_error();
  return real(ssl);
}

int SSL_accept(SSL* ssl) {
  static const auto real = next<int (*)(SSL*)>("SSL_accept");
  ERR_clear_error();
  return real(ssl);
}

}  // extern "C"

namespace kvflow {

bool openssl_error_queue_guarded() {
  // Ours only where the process resolves SSL_read to this definition (the
  // executable exports it to the libraries that call it).
  return dlsym(RTLD_DEFAULT, "SSL_read") == reinterpret_cast<void*>(&SSL_read);
}

}  // namespace kvflow
