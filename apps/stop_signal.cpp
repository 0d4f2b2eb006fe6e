#include "apps/stop_signal.hpp"

#include <pthread.h>
#include <signal.h>

namespace kvflow::app {

int wait_for_stop_signal() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  int sig = 0;
  sigwait(&set, &sig);
  return sig;
}

}  // namespace kvflow::app
