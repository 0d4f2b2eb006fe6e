#pragma once
// Internal helpers of the CPU kernels: a 16-lane float vector (GCC vector
// extension, lowered to AVX-512, AVX2 or SSE by the clone it is inlined
// into), the clone list, and an exp whose arithmetic is fixed by the source.
//
// Reproducibility rule of kernels/cpu: an output element's value depends only
// on the operands it is computed from, never on how rows, keys or tasks are
// grouped. Lanes therefore only ever hold independent outputs (or partial
// sums whose lane is fixed by an absolute index), and kvflow_kernels builds
// with -ffp-contract=off so no clone fuses a multiply and an add.

#include <cstdint>
#include <cstring>

// Overridable (e.g. -DKVFLOW_CPU_CLONES=) to build one instance only.
#ifndef KVFLOW_CPU_CLONES
#define KVFLOW_CPU_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#endif

namespace kvflow::cpu::simd {

typedef float v16 __attribute__((vector_size(64)));

// 16 floats at any alignment, through memcpy: clang keeps v16's 64-byte
// alignment for a reference to an aligned(4) typedef of it and emits aligned
// moves (a fault on rows that are not 64-byte aligned). Vectors cross these
// helpers by reference only: one returned or passed by value would change
// the ABI between clones.
inline __attribute__((always_inline)) void load(v16& out, const float* p) { std::memcpy(&out, p, sizeof out); }
inline __attribute__((always_inline)) void store(float* p, const v16& v) { std::memcpy(p, &v, sizeof v); }

/// exp(x) for x <= 0 (softmax) or any x in [-87, 88]; about 2 ulp. Pure
/// arithmetic so that it vectorizes and gives the same bits everywhere.
inline __attribute__((always_inline)) float exp_approx(float x) {
  if (x < -87.0f) x = -87.0f;
  if (x > 88.0f) x = 88.0f;
  // x = n ln2 + r, |r| <= ln2 / 2; round-to-nearest by the 1.5 * 2^23 trick.
  const float shifter = 12582912.0f;
  float n = (x * 1.44269504088896341f + shifter) - shifter;
  float r = x - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  float r2 = r * r;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r2 + r + 1.0f;
  std::int32_t bits = (static_cast<std::int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return p * scale;
}

}  // namespace kvflow::cpu::simd
