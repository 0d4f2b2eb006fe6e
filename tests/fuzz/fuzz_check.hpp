#pragma once
// A property check for fuzz targets: on failure, says what broke and aborts,
// which libFuzzer reports as a crash and the ctest replay as a failed test.

#include <cstdio>
#include <cstdlib>

#define KVFLOW_FUZZ_CHECK(cond, what)                                                                    \
  do {                                                                                                   \
    if (!(cond)) {                                                                                       \
      std::fprintf(stderr, "fuzz property failed at %s:%d: %s (%s)\n", __FILE__, __LINE__, #cond, what); \
      std::abort();                                                                                      \
    }                                                                                                    \
  } while (false)
