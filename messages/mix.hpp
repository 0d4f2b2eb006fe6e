#pragma once
// splitmix64 (Steele, Lea and Flood 2014): kvflow's one integer mixer, for
// request ids and default seeds, sampling draws, synthetic prompts, random
// weights (host and device alike: both must make the same bits) and
// rendezvous placement. Header-only; callable from CUDA device code.

#include <cstdint>

#if defined(__CUDACC__)
#define KVFLOW_HOST_DEVICE __host__ __device__
#else
#define KVFLOW_HOST_DEVICE
#endif

namespace kvflow {

/// splitmix64's increment (the golden ratio in 64 bits).
constexpr std::uint64_t splitmix64_gamma = 0x9e3779b97f4a7c15ull;

/// splitmix64's finalizer: every input bit affects every output bit.
KVFLOW_HOST_DEVICE constexpr std::uint64_t mix64(std::uint64_t x) noexcept {
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

/// The output of a splitmix64 stream whose state, before its step, is `x`:
/// mix64(x + gamma). A counter generator: output number k of the stream that
/// starts at s is splitmix64(s + (k - 1) * gamma), each computed alone.
KVFLOW_HOST_DEVICE constexpr std::uint64_t splitmix64(std::uint64_t x) noexcept { return mix64(x + splitmix64_gamma); }

}  // namespace kvflow
