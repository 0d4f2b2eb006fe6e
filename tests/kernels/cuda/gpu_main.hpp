#pragma once
// main() for the gpu suites: exits 77 (ctest: skipped) with a message when no
// CUDA device is found, else runs Boost.Test. Include once per suite, after
// defining BOOST_TEST_MODULE and BOOST_TEST_NO_MAIN.

#include <boost/test/unit_test.hpp>
#include <cstdio>

#include "platform/cuda.hpp"

int main(int argc, char* argv[]) {
  if (!kvflow::platform::cuda_device_available()) {
    std::printf("no CUDA device found: skipping\n");
    return 77;
  }
  return boost::unit_test::unit_test_main(&init_unit_test, argc, argv);
}
