// Hopper (sm_90a) prefill attention for head_dim 64 and 128:
// FlashAttention-3's design written in raw PTX. See attention_sm90.cuh for
// the contract.
//
// A block holds 128 query rows of one KV head (rows are (token, query head
// of the group) pairs, so the GQA heads share each K/V tile) and runs three
// warpgroups:
//   producer (warpgroup 0, 40 registers): cp.async loads of Q and of 128-key
//     K/V tiles into a 3-stage ring of shared memory in the 128-byte swizzled
//     layout wgmma reads; a stage is announced on an mbarrier that its loads
//     complete themselves (cp.async.mbarrier.arrive.noinc: the producer never
//     waits for its own loads, so up to 3 tiles are in flight) and handed
//     back by the consumers on another.
//   two consumers (warpgroups 1 and 2, 232 registers, 64 rows each):
//     S = Q K^T with wgmma (both operands in shared memory), online softmax
//     in registers, O += P V with P from registers and V in shared memory
//     (m64n128 for head_dim 128, m64n64 for 64; S is m64n128 for both).
//     Ping-pong: a named barrier passes the tensor cores between the two
//     consumers, so one's softmax runs under the other's products; inside a
//     consumer, S of tile t is issued with P V of tile t - 1 and the softmax
//     of t runs while P V of t - 1 is still on the tensor cores.
//
// Invariance (chunked prefill == one-shot prefill, bitwise): key tiles are
// [128 t, 128 t + 128) in ABSOLUTE positions, walked in increasing t, and a
// row's arithmetic depends only on its own query and those tiles: tiles past
// a row's causal limit are exact no-ops (scores -inf, scale 1, P 0), and the
// tiles past every row of the block are skipped.

#include <atomic>
#include <climits>
#include <cmath>
#include <cstdint>

#include "kernels/cuda/attention_sm90.cuh"
#include "kernels/cuda/common.cuh"

namespace kvflow::cuda {
namespace {

constexpr int block_rows = 128;  // 2 consumer warpgroups x 64 rows
constexpr int tile_keys = 128;
constexpr int stages = 3;
constexpr int threads = 384;
constexpr int half_bytes = 128 * 128;  // one 64-column half of a tile: 128 rows x 128 B
constexpr int bar_bytes = 128;
// Q, or one stage's K or V: 128 rows of HD bf16, in 64-column halves.
template <int HD>
constexpr int tile_bytes = 128 * HD * 2;
template <int HD>
constexpr int smem_bytes = (1 + 2 * stages) * tile_bytes<HD> + bar_bytes + 1024;  // + alignment slack

// Pointers first, then the launch geometry.
struct params {
  const bf16* q;             // [count][heads * HD]
  const attn_block* blocks;  // [num_blocks] device
  const int* positions;      // [count] device, ascending; null: pos0 + token
  bf16* out;                 // [count][heads * HD]
  int num_blocks, count, pos0, layer, heads, kv_heads, group;
  float scale_log2;  // softmax scale * log2(e)
  unsigned v_lbo;    // V descriptor: bytes between the two 64-column halves
  unsigned v_sbo;    // and between groups of 8 keys
};

// Byte offset of 16-byte chunk c (0..HD/8-1) of row r in a 128 x HD bf16
// tile: 64-column halves, each 128 rows of 128 bytes with chunk c ^ (r % 8)
// (the 128-byte swizzle wgmma's descriptors name; the tile is 1024-aligned).
__device__ __forceinline__ std::uint32_t tile_off(int r, int c) {
  return static_cast<std::uint32_t>((c >> 3) * half_bytes + r * 128 + (((c & 7) ^ (r & 7)) << 4));
}

__device__ __forceinline__ void cp_async16(std::uint32_t dst, const void* src, bool valid) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(valid ? 16 : 0) : "memory");
}
// Arrives on `bar` once every cp.async this thread issued so far has landed
// (counted as one of the barrier's expected arrivals).
__device__ __forceinline__ void cp_async_arrive(std::uint32_t bar) {
  asm volatile("cp.async.mbarrier.arrive.noinc.shared::cta.b64 [%0];\n" ::"r"(bar) : "memory");
}
__device__ __forceinline__ void cp_async_wait_all() { asm volatile("cp.async.wait_all;\n" ::: "memory"); }
__device__ __forceinline__ void fence_proxy_async() { asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory"); }

__device__ __forceinline__ void mbar_init(std::uint32_t bar, int count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(bar), "r"(count) : "memory");
}
__device__ __forceinline__ void mbar_arrive(std::uint32_t bar) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(bar) : "memory");
}
__device__ __forceinline__ void mbar_wait(std::uint32_t bar, int parity) {
  std::uint32_t done = 0;
  do {
    asm volatile("{\n.reg .pred p;\nmbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\nselp.u32 %0, 1, 0, p;\n}\n"
                 : "=r"(done)
                 : "r"(bar), "r"(parity)
                 : "memory");
  } while (!done);
}

// Named barriers 1 and 2: "consumer w may issue its products".
__device__ __forceinline__ void named_sync(int id) { asm volatile("bar.sync %0, 256;\n" ::"r"(id) : "memory"); }
__device__ __forceinline__ void named_arrive(int id) { asm volatile("bar.arrive %0, 256;\n" ::"r"(id) : "memory"); }

__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void wgmma_wait() {
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
}
// Keeps the compiler from moving reads or writes of accumulators across a
// wgmma fence or wait (it cannot see that wgmma owns them in between).
template <int N>
__device__ __forceinline__ void fence_regs(float (&r)[N]) {
#pragma unroll
  for (int i = 0; i < N; ++i) asm volatile("" : "+f"(r[i])::"memory");
}
template <int N>
__device__ __forceinline__ void fence_regs(unsigned (&r)[N]) {
#pragma unroll
  for (int i = 0; i < N; ++i) asm volatile("" : "+r"(r[i])::"memory");
}

// Shared-memory matrix descriptor, 128-byte swizzle.
__device__ __forceinline__ std::uint64_t smem_desc(std::uint32_t addr, std::uint32_t lbo, std::uint32_t sbo) {
  return static_cast<std::uint64_t>((addr & 0x3FFFF) >> 4) | (static_cast<std::uint64_t>((lbo >> 4) & 0x3FFF) << 16) |
         (static_cast<std::uint64_t>((sbo >> 4) & 0x3FFF) << 32) | (1ull << 62);
}

// The 64 accumulator operands of an m64n128 wgmma: in the PTX, as asm constraints.
#define KVFLOW_WGMMA_D64                                                                                            \
  "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, " \
  "%24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, "  \
  "%46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}"
#define KVFLOW_WGMMA_ACC64(d)                                                                                 \
  "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), \
      "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]),  \
      "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), \
      "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), \
      "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), \
      "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), \
      "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), \
      "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])

// d (64 floats of a 64x128 fp32 tile) = A * B (+ d when accumulate): A and B
// both K-major bf16 in shared memory (descriptors).
__device__ __forceinline__ void wgmma_ss(float (&d)[64], std::uint64_t a, std::uint64_t b, int accumulate) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 " KVFLOW_WGMMA_D64 ", %64, %65, p, 1, 1, 0, 0;\n}\n"
      : KVFLOW_WGMMA_ACC64(d)
      : "l"(a), "l"(b), "r"(accumulate));
}

// d += A * B: A (64x16 bf16) in registers, B MN-major in shared memory.
__device__ __forceinline__ void wgmma_rs(float (&d)[64], const unsigned (&a)[4], std::uint64_t b) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, 1, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 " KVFLOW_WGMMA_D64
      ", {%64, %65, %66, %67}, %68, p, 1, 1, 1;\n}\n"
      : KVFLOW_WGMMA_ACC64(d)
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b));
}

// The 32 accumulator operands of an m64n64 wgmma.
#define KVFLOW_WGMMA_D32                                                                                            \
  "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, " \
  "%24, %25, %26, %27, %28, %29, %30, %31}"
#define KVFLOW_WGMMA_ACC32(d)                                                                                 \
  "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), \
      "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]),  \
      "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), \
      "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])

// The same for a 64x64 tile (head_dim 64's O).
__device__ __forceinline__ void wgmma_rs(float (&d)[32], const unsigned (&a)[4], std::uint64_t b) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, 1, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 " KVFLOW_WGMMA_D32
      ", {%32, %33, %34, %35}, %36, p, 1, 1, 1;\n}\n"
      : KVFLOW_WGMMA_ACC32(d)
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b));
}

template <int HD>
__global__ void __launch_bounds__(threads, 1) attention_sm90_kernel(params p) {
  static_assert(HD == 64 || HD == 128, "head_dim 64 or 128");
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  constexpr int tile = tile_bytes<HD>;
  constexpr int row_chunks = HD / 8;          // 16-byte chunks of a row
  constexpr int row_step = 128 / row_chunks;  // rows between one producer thread's copies
  extern __shared__ unsigned char smem_raw[];
  // 1024-byte alignment: the swizzle works on address bits 4-9.
  const std::uint32_t base = (smem_u32(smem_raw) + 1023u) & ~1023u;
  const std::uint32_t s_q = base;
  auto s_k = [&](int s) { return base + static_cast<std::uint32_t>((1 + 2 * s) * tile); };
  auto s_v = [&](int s) { return base + static_cast<std::uint32_t>((2 + 2 * s) * tile); };
  const std::uint32_t bars = base + (1 + 2 * stages) * tile;
  const std::uint32_t q_full = bars;
  auto full = [&](int s) { return bars + 8u * (1 + s); };
  auto empty = [&](int s) { return bars + 8u * (1 + stages + s); };

  const int tid = threadIdx.x;
  const int wg = tid >> 7;
  const int kvh = blockIdx.y;
  const int qblock = gridDim.x - 1 - blockIdx.x;  // longest rows first
  const int rows_total = p.count * p.group;
  const int row0 = qblock * block_rows;
  const int last_row = min(rows_total, row0 + block_rows) - 1;
  auto pos_of = [&](int tok) { return p.positions ? p.positions[tok] : p.pos0 + tok; };
  const int kv_end = pos_of(last_row / p.group) + 1;  // keys [0, kv_end) are needed
  const int ntiles = (kv_end + tile_keys - 1) / tile_keys;
  const int qmin = pos_of(row0 / p.group);

  if (tid == 0) {
    mbar_init(q_full, 128);
    for (int s = 0; s < stages; ++s) {
      mbar_init(full(s), 128);  // every producer thread
      mbar_init(empty(s), 8);   // every consumer warp
    }
  }
  __syncthreads();

  if (wg == 0) {
    // ---- producer ----
    asm volatile("setmaxnreg.dec.sync.aligned.u32 40;\n");
    const int c = tid % row_chunks;   // this thread's 16-byte chunk of each row
    const int r0 = tid / row_chunks;  // and its rows r0 + row_step i
    const std::size_t q_stride = static_cast<std::size_t>(p.heads) * HD;
#pragma unroll 4
    for (int i = 0; i < row_chunks; ++i) {
      const int r = r0 + row_step * i;
      const int row = row0 + r;
      const bool valid = row < rows_total;
      const int tok = valid ? row / p.group : 0;
      const int head = kvh * p.group + (valid ? row % p.group : 0);
      cp_async16(s_q + tile_off(r, c), p.q + tok * q_stride + static_cast<std::size_t>(head) * HD + c * 8, valid);
    }
    cp_async_arrive(q_full);
    // Each thread walks the block table forward; its key rows only increase.
    int bi = 0;
    attn_block cur = p.blocks[0];
    for (int t = 0; t < ntiles; ++t) {
      const int s = t % stages;
      mbar_wait(empty(s), ((t / stages) & 1) ^ 1);
      const std::uint32_t ks = s_k(s), vs = s_v(s);
      const int t0 = t * tile_keys;
      while (t0 >= cur.start + cur.tokens && bi + 1 < p.num_blocks) cur = p.blocks[++bi];
      if (t0 + tile_keys <= kv_end && t0 + tile_keys <= cur.start + cur.tokens) {
        // Fast path: the whole tile lies in the current block and is needed.
        const std::size_t head_elems = static_cast<std::size_t>(cur.tokens) * HD;
        const bf16* ksrc = cur.data + (static_cast<std::size_t>(p.layer) * 2 * p.kv_heads + kvh) * head_elems +
                           static_cast<std::size_t>(t0 + r0 - cur.start) * HD + c * 8;
        const bf16* vsrc = ksrc + static_cast<std::size_t>(p.kv_heads) * head_elems;
#pragma unroll 4
        for (int i = 0; i < row_chunks; ++i) {
          cp_async16(ks + tile_off(r0 + row_step * i, c), ksrc + i * row_step * HD, true);
          cp_async16(vs + tile_off(r0 + row_step * i, c), vsrc + i * row_step * HD, true);
        }
      } else {
#pragma unroll 2
        for (int i = 0; i < row_chunks; ++i) {
          const int r = r0 + row_step * i;
          const int pos = t0 + r;
          const bool valid = pos < kv_end;
          const bf16* ksrc = p.q;
          const bf16* vsrc = p.q;
          if (valid) {
            while (pos >= cur.start + cur.tokens && bi + 1 < p.num_blocks) cur = p.blocks[++bi];
            const std::size_t head_elems = static_cast<std::size_t>(cur.tokens) * HD;
            ksrc = cur.data + (static_cast<std::size_t>(p.layer) * 2 * p.kv_heads + kvh) * head_elems +
                   static_cast<std::size_t>(pos - cur.start) * HD + c * 8;
            vsrc = ksrc + static_cast<std::size_t>(p.kv_heads) * head_elems;
          }
          cp_async16(ks + tile_off(r, c), ksrc, valid);
          cp_async16(vs + tile_off(r, c), vsrc, valid);
        }
      }
      // The stage's barrier completes when these copies have landed; the
      // producer never waits for its own loads.
      cp_async_arrive(full(s));
    }
    cp_async_wait_all();  // nothing in flight when the producer exits
  } else {
    // ---- consumers ----
    asm volatile("setmaxnreg.inc.sync.aligned.u32 232;\n");
    const int w = wg - 1;  // 0 or 1: rows 64 w .. 64 w + 63 of the block
    const int ctid = tid - 128 * wg;
    const int warp = ctid >> 5;
    const int lane = tid & 31;
    const int g = lane >> 2;
    const int tq = lane & 3;
    int qpos[2];
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int r = row0 + 64 * w + 16 * warp + 8 * h + g;
      qpos[h] = r < rows_total ? pos_of(r / p.group) : INT_MAX;
    }
    float o[HD / 2], sc[64];
    unsigned pf[32];
#pragma unroll
    for (int i = 0; i < HD / 2; ++i) o[i] = 0.0f;
#pragma unroll
    for (int i = 0; i < 32; ++i) pf[i] = 0u;
    float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f}, alpha[2];

    const std::uint32_t q_rows = s_q + static_cast<std::uint32_t>(w * 64 * 128);
    auto gemm_s = [&](int s) {  // sc = Q K_s^T
      const std::uint32_t kb = s_k(s);
#pragma unroll
      for (int kk = 0; kk < HD / 16; ++kk) {
        const std::uint32_t off = static_cast<std::uint32_t>((kk >> 2) * half_bytes + (kk & 3) * 32);
        wgmma_ss(sc, smem_desc(q_rows + off, 16, 1024), smem_desc(kb + off, 16, 1024), kk > 0);
      }
    };
    auto gemm_o = [&](int s) {  // o += P V_s
      const std::uint32_t vb = s_v(s);
#pragma unroll
      for (int kk = 0; kk < tile_keys / 16; ++kk) {
        const unsigned a[4] = {pf[4 * kk], pf[4 * kk + 1], pf[4 * kk + 2], pf[4 * kk + 3]};
        wgmma_rs(o, a, smem_desc(vb + static_cast<std::uint32_t>(kk * 16 * 128), p.v_lbo, p.v_sbo));
      }
    };
    // Online softmax of tile t in sc (raw scores in, unnormalised
    // probabilities out); alpha: the factor for o.
    auto softmax = [&](int t) {
      const int key0 = t * tile_keys;
      if (key0 + tile_keys - 1 > qmin) {
#pragma unroll
        for (int j = 0; j < 16; ++j)
#pragma unroll
          for (int e = 0; e < 4; ++e)
            if (key0 + 8 * j + 2 * tq + (e & 1) > qpos[e >> 1]) sc[4 * j + e] = -INFINITY;
      }
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        float mx = -INFINITY;
#pragma unroll
        for (int j = 0; j < 16; ++j) mx = fmaxf(mx, fmaxf(sc[4 * j + 2 * h], sc[4 * j + 2 * h + 1]));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
        const float mn = fmaxf(m[h], mx);
        const float mu = mn == -INFINITY ? 0.0f : mn;
        alpha[h] = fast_exp2((m[h] - mu) * p.scale_log2);
        m[h] = mn;
        const float mc = mu * p.scale_log2;
        float sum = 0.0f;
#pragma unroll
        for (int j = 0; j < 16; ++j) {
          sc[4 * j + 2 * h] = fast_exp2(fmaf(sc[4 * j + 2 * h], p.scale_log2, -mc));
          sc[4 * j + 2 * h + 1] = fast_exp2(fmaf(sc[4 * j + 2 * h + 1], p.scale_log2, -mc));
          sum += sc[4 * j + 2 * h] + sc[4 * j + 2 * h + 1];
        }
        l[h] = l[h] * alpha[h] + sum;
      }
    };
    // After o's products are done: rescale o, and P (bf16) from sc.
    auto rescale_and_pack = [&]() {
#pragma unroll
      for (int j = 0; j < HD / 8; ++j) {
        o[4 * j] *= alpha[0];
        o[4 * j + 1] *= alpha[0];
        o[4 * j + 2] *= alpha[1];
        o[4 * j + 3] *= alpha[1];
      }
#pragma unroll
      for (int kk = 0; kk < 8; ++kk) {
        pf[4 * kk] = pack_bf16(sc[8 * kk], sc[8 * kk + 1]);
        pf[4 * kk + 1] = pack_bf16(sc[8 * kk + 2], sc[8 * kk + 3]);
        pf[4 * kk + 2] = pack_bf16(sc[8 * kk + 4], sc[8 * kk + 5]);
        pf[4 * kk + 3] = pack_bf16(sc[8 * kk + 6], sc[8 * kk + 7]);
      }
    };
    auto release = [&](int s) {
      __syncwarp();
      if (lane == 0) mbar_arrive(empty(s));
    };

    const int me = 1 + w, other = 2 - w;
    if (w == 1) named_arrive(1);  // consumer 0 goes first
    mbar_wait(q_full, 0);
    // Turn 0: S of tile 0. After each wait, a proxy fence: the copies were
    // generic-proxy writes, the tensor cores read through the async proxy.
    mbar_wait(full(0), 0);
    fence_proxy_async();
    named_sync(me);
    wgmma_fence();
    gemm_s(0);
    wgmma_commit();
    named_arrive(other);
    wgmma_wait<0>();
    fence_regs(sc);
    softmax(0);
    rescale_and_pack();
    // Turns 1 .. ntiles - 1: S of tile t with P V of tile t - 1.
    for (int t = 1; t < ntiles; ++t) {
      const int s = t % stages, sp = (t - 1) % stages;
      mbar_wait(full(s), (t / stages) & 1);
      fence_proxy_async();
      named_sync(me);
      fence_regs(o);
      fence_regs(pf);
      wgmma_fence();
      gemm_s(s);
      wgmma_commit();
      gemm_o(sp);
      wgmma_commit();
      named_arrive(other);
      wgmma_wait<1>();
      fence_regs(sc);
      softmax(t);
      wgmma_wait<0>();
      fence_regs(o);
      fence_regs(pf);
      release(sp);
      rescale_and_pack();
    }
    // Last turn: P V of the last tile.
    named_sync(me);
    fence_regs(o);
    fence_regs(pf);
    wgmma_fence();
    gemm_o((ntiles - 1) % stages);
    wgmma_commit();
    if (w == 0) named_arrive(other);  // consumer 1's last turn; consumer 0 has none left
    wgmma_wait<0>();
    fence_regs(o);
    release((ntiles - 1) % stages);

    const std::size_t q_stride = static_cast<std::size_t>(p.heads) * HD;
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      float lt = l[h];
      lt += __shfl_xor_sync(0xffffffffu, lt, 1);
      lt += __shfl_xor_sync(0xffffffffu, lt, 2);
      const float inv = 1.0f / lt;
      const int r = row0 + 64 * w + 16 * warp + 8 * h + g;
      if (r < rows_total) {
        bf16* dst = p.out + (r / p.group) * q_stride + static_cast<std::size_t>(kvh * p.group + r % p.group) * HD;
#pragma unroll
        for (int j = 0; j < HD / 8; ++j)
          *reinterpret_cast<unsigned*>(dst + j * 8 + 2 * tq) =
              pack_bf16(o[4 * j + 2 * h] * inv, o[4 * j + 2 * h + 1] * inv);
      }
    }
  }
#endif
}

}  // namespace

bool attention_sm90_available() {
  static std::atomic<int> state[64];  // per device: 0 unknown, 1 yes, 2 no
  int dev = 0;
  if (cudaGetDevice(&dev) != cudaSuccess) return false;
  if (dev < 64) {
    const int s = state[dev].load(std::memory_order_relaxed);
    if (s != 0) return s == 1;
  }
  int major = 0, minor = 0;
  bool ok = cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) == cudaSuccess &&
            cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev) == cudaSuccess && major == 9 &&
            minor == 0;
  // The sm_90a instructions exist only in the sm_90a image: the kernel must
  // have been built for it (the 90-virtual PTX holds an empty body).
  auto probe = [&](auto kernel, int smem) {
    cudaFuncAttributes attr{};
    return cudaFuncGetAttributes(&attr, kernel) == cudaSuccess && attr.binaryVersion == 90 &&
           cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem) == cudaSuccess;
  };
  ok = ok && probe(attention_sm90_kernel<128>, smem_bytes<128>) && probe(attention_sm90_kernel<64>, smem_bytes<64>);
  cudaGetLastError();  // a failed probe leaves no sticky error behind
  if (dev < 64) state[dev].store(ok ? 1 : 2, std::memory_order_relaxed);
  return ok;
}

cudaError_t launch_attention_sm90(const bf16* q, int count, int pos0, const int* positions, const attn_block* blocks,
                                  int num_blocks, int layer, int heads, int kv_heads, int head_dim, float scale,
                                  bf16* out, cudaStream_t stream) {
  if (count <= 0) return cudaSuccess;
  if (num_blocks <= 0 || kv_heads <= 0 || heads % kv_heads != 0 || !attention_sm90_supports(head_dim))
    return cudaErrorInvalidValue;
  if (!attention_sm90_available()) return cudaErrorNotSupported;
  // V's 64-column halves lie half_bytes apart (leading byte offset of the
  // MN-major layout; head_dim 64 has one), its groups of 8 keys 1024 bytes
  // (stride byte offset).
  const params p{q,
                 blocks,
                 positions,
                 out,
                 num_blocks,
                 count,
                 pos0,
                 layer,
                 heads,
                 kv_heads,
                 heads / kv_heads,
                 scale * 1.4426950408889634f,
                 static_cast<unsigned>(half_bytes),
                 1024u};
  const int rows = count * p.group;
  dim3 grid((rows + block_rows - 1) / block_rows, kv_heads);
  if (head_dim == 128)
    attention_sm90_kernel<128><<<grid, threads, smem_bytes<128>, stream>>>(p);
  else
    attention_sm90_kernel<64><<<grid, threads, smem_bytes<64>, stream>>>(p);
  return cudaGetLastError();
}

}  // namespace kvflow::cuda
