#pragma once
// The end of a long-running command (kvflow node, kvflow pd --role decode).

namespace kvflow::app {

/// Blocks SIGINT and SIGTERM in the calling thread and waits for one;
/// returns its number. Call it from the main thread once the command serves.
int wait_for_stop_signal();

}  // namespace kvflow::app
