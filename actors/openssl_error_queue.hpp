#pragma once
// Keeps one dead TLS peer from failing every other TLS connection of the
// process: see openssl_error_queue.cpp.

namespace kvflow {

/// Whether libcaf_openssl's SSL calls go through the guard (the TLS setup
/// calls this, which also links the guard in).
bool openssl_error_queue_guarded();

}  // namespace kvflow
