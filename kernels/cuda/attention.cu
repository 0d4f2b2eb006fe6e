#include <algorithm>
#include <atomic>
#include <climits>
#include <cmath>

#include "kernels/cuda/attention.cuh"
#include "kernels/cuda/attention_sm90.cuh"
#include "kernels/cuda/common.cuh"

namespace kvflow::cuda {
namespace {

constexpr int block_rows = 128;  // query rows per block: 4 warps x 32
constexpr int tile_keys = 64;    // keys per tile (absolute alignment)
constexpr int warps = 4;
constexpr int threads = warps * 32;

__device__ __forceinline__ void cp_async16(void* dst, const void* src, bool valid) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_u32(dst)), "l"(src), "r"(valid ? 16 : 0));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
__device__ __forceinline__ void cp_async_wait_all() { asm volatile("cp.async.wait_group 0;\n" ::); }

__device__ __forceinline__ void ldmatrix_x4(unsigned& r0, unsigned& r1, unsigned& r2, unsigned& r3, const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3)
               : "r"(smem_u32(p)));
}
__device__ __forceinline__ void ldmatrix_x4_trans(unsigned& r0, unsigned& r1, unsigned& r2, unsigned& r3,
                                                  const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3)
               : "r"(smem_u32(p)));
}

// D = A * B + D, m16n8k16, bf16 in, fp32 accumulate.
__device__ __forceinline__ void mma_bf16(float (&d)[4], const unsigned (&a)[4], unsigned b0, unsigned b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

struct params {
  const bf16* q;
  bf16* out;
  const attn_block* blocks;
  int num_blocks;
  int count;
  int pos0;
  const int* positions;  // [count] device, ascending; null: pos0 + token
  float* part_o;         // splits > 1: [splits][count * heads][HD] unnormalized outputs
  float* part_ml;        // splits > 1: [splits][count * heads][2] row maximum (raw score) and sum
  int layer;
  int heads;
  int kv_heads;
  int group;
  float scale_log2;  // softmax scale * log2(e)
};

// Row r of a shared tile holds HD/8 16-byte chunks; chunk c is stored at
// c ^ (r & mask) so that ldmatrix's 8 rows hit 8 different bank groups.
template <int HD>
__device__ __forceinline__ int swz(int r, int c) {
  constexpr int chunks = HD / 8;
  constexpr int mask = (chunks < 8 ? chunks : 8) - 1;
  return r * HD + ((c ^ (r & mask)) << 3);
}

// AT: queries at p.positions with the keys split over gridDim.z (a
// separate instance, so that the prefill kernel's registers stay as they were).
template <int HD, bool AT>
__global__ void __launch_bounds__(threads, 2) attention_kernel(params p) {
  constexpr int chunks = HD / 8;                               // 16-byte chunks per row
  constexpr int kv_per_thread = tile_keys * chunks / threads;  // K (and V) chunks per thread per tile
  constexpr int q_per_thread = block_rows * chunks / threads;
  constexpr int ksteps = HD / 16;
  constexpr int dtiles = HD / 8;
  extern __shared__ uint4 smem_raw[];
  bf16* smem = reinterpret_cast<bf16*>(smem_raw);
  // [Q: block_rows x HD][stage 0: K, V][stage 1: K, V], each K/V 64 x HD.
  bf16* qs = smem;
  auto k_tile = [&](int s) { return smem + block_rows * HD + s * 2 * tile_keys * HD; };
  auto v_tile = [&](int s) { return smem + block_rows * HD + s * 2 * tile_keys * HD + tile_keys * HD; };

  const int tid = threadIdx.x;
  const int warp = tid >> 5;
  const int lane = tid & 31;
  const int kvh = blockIdx.y;
  const int qblock = gridDim.x - 1 - blockIdx.x;  // longest rows first
  const int rows_total = p.count * p.group;
  const int row0 = qblock * block_rows;
  const int last_row = min(rows_total, row0 + block_rows) - 1;
  auto pos_of = [&](int tok) { return AT ? p.positions[tok] : p.pos0 + tok; };
  const int kv_end = pos_of(last_row / p.group) + 1;  // keys [0, kv_end) are needed
  // Split z of gridDim.z walks its share of the key tiles (flash-decoding):
  // few query rows over a long context still fill the device. One split
  // walks every tile, as before.
  const int all_tiles = (kv_end + tile_keys - 1) / tile_keys;
  const int nsplit = AT ? static_cast<int>(gridDim.z) : 1;
  const int per_split = (all_tiles + nsplit - 1) / nsplit;
  const int t_begin = AT ? min(all_tiles, static_cast<int>(blockIdx.z) * per_split) : 0;
  const int ntiles = AT ? min(all_tiles, t_begin + per_split) : all_tiles;
  const int qmin = pos_of(row0 / p.group);
  const std::size_t q_stride = static_cast<std::size_t>(p.heads) * HD;

#pragma unroll
  for (int i = 0; i < q_per_thread; ++i) {
    const int id = tid + i * threads;
    const int r = id / chunks;
    const int c = id % chunks;
    const int row = row0 + r;
    const bool valid = row < rows_total;
    const int tok = valid ? row / p.group : 0;
    const int head = kvh * p.group + (valid ? row % p.group : 0);
    const bf16* src = p.q + tok * q_stride + static_cast<std::size_t>(head) * HD + c * 8;
    cp_async16(qs + swz<HD>(r, c), src, valid);
  }

  // Each thread walks the block table forward; its key rows only increase.
  int bi = 0;
  attn_block cur = p.blocks[0];
  auto load_tile = [&](int t, int s) {
    bf16* ks = k_tile(s);
    bf16* vs = v_tile(s);
    const int t0 = t * tile_keys;
    // Fast path: the whole tile lies in the current block and is needed.
    while (t0 >= cur.start + cur.tokens && bi + 1 < p.num_blocks) {
      ++bi;
      cur = p.blocks[bi];
    }
    if (t0 + tile_keys <= kv_end && t0 + tile_keys <= cur.start + cur.tokens) {
      const int r0 = tid / chunks;  // rows r0 + i * (threads / chunks)
      const int c = tid % chunks;
      const std::size_t head_elems = static_cast<std::size_t>(cur.tokens) * HD;
      const bf16* ksrc = cur.data + (static_cast<std::size_t>(p.layer) * 2 * p.kv_heads + kvh) * head_elems +
                         static_cast<std::size_t>(t0 + r0 - cur.start) * HD + c * 8;
      const bf16* vsrc = ksrc + static_cast<std::size_t>(p.kv_heads) * head_elems;
#pragma unroll
      for (int i = 0; i < kv_per_thread; ++i) {
        const int r = r0 + i * (threads / chunks);
        cp_async16(ks + swz<HD>(r, c), ksrc + static_cast<std::size_t>(i) * (threads / chunks) * HD, true);
        cp_async16(vs + swz<HD>(r, c), vsrc + static_cast<std::size_t>(i) * (threads / chunks) * HD, true);
      }
      return;
    }
#pragma unroll
    for (int i = 0; i < kv_per_thread; ++i) {
      const int id = tid + i * threads;
      const int r = id / chunks;
      const int c = id % chunks;
      const int pos = t * tile_keys + r;
      const bool valid = pos < kv_end;
      const bf16* ksrc = p.q;
      const bf16* vsrc = p.q;
      if (valid) {
        while (pos >= cur.start + cur.tokens && bi + 1 < p.num_blocks) {
          ++bi;
          cur = p.blocks[bi];
        }
        const std::size_t head_elems = static_cast<std::size_t>(cur.tokens) * HD;
        const bf16* kbase = cur.data + (static_cast<std::size_t>(p.layer) * 2 * p.kv_heads + kvh) * head_elems;
        ksrc = kbase + static_cast<std::size_t>(pos - cur.start) * HD + c * 8;
        vsrc = ksrc + static_cast<std::size_t>(p.kv_heads) * head_elems;
      }
      cp_async16(ks + swz<HD>(r, c), ksrc, valid);
      cp_async16(vs + swz<HD>(r, c), vsrc, valid);
    }
  };

  if (t_begin < ntiles) load_tile(t_begin, 0);
  cp_async_commit();

  // This thread's rows: m-tile mt, half h (0: row g, 1: row g + 8).
  const int g = lane >> 2;
  const int tq = lane & 3;
  int qpos[2][2];
#pragma unroll
  for (int mt = 0; mt < 2; ++mt)
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int r = row0 + warp * 32 + mt * 16 + h * 8 + g;
      qpos[mt][h] = r < rows_total ? pos_of(r / p.group) : INT_MAX;
    }

  float o[2][dtiles][4];
#pragma unroll
  for (int mt = 0; mt < 2; ++mt)
#pragma unroll
    for (int j = 0; j < dtiles; ++j) o[mt][j][0] = o[mt][j][1] = o[mt][j][2] = o[mt][j][3] = 0.0f;
  float m[2][2], l[2][2];
#pragma unroll
  for (int mt = 0; mt < 2; ++mt) m[mt][0] = m[mt][1] = -INFINITY, l[mt][0] = l[mt][1] = 0.0f;

  for (int t = t_begin; t < ntiles; ++t) {
    const int s = (t - t_begin) & 1;
    cp_async_wait_all();
    __syncthreads();
    if (t + 1 < ntiles) load_tile(t + 1, s ^ 1);
    cp_async_commit();

    const bf16* ks = k_tile(s);
    const bf16* vs = v_tile(s);
    float sc[2][8][4];
#pragma unroll
    for (int mt = 0; mt < 2; ++mt)
#pragma unroll
      for (int j = 0; j < 8; ++j) sc[mt][j][0] = sc[mt][j][1] = sc[mt][j][2] = sc[mt][j][3] = 0.0f;
#pragma unroll
    for (int kk = 0; kk < ksteps; ++kk) {
      unsigned qa[2][4];
#pragma unroll
      for (int mt = 0; mt < 2; ++mt) {
        const int r = warp * 32 + mt * 16 + (lane & 7) + 8 * ((lane >> 3) & 1);
        ldmatrix_x4(qa[mt][0], qa[mt][1], qa[mt][2], qa[mt][3], qs + swz<HD>(r, kk * 2 + (lane >> 4)));
      }
#pragma unroll
      for (int np = 0; np < 4; ++np) {
        const int key = np * 16 + (lane & 7) + 8 * (lane >> 4);
        const int c = kk * 2 + ((lane >> 3) & 1);
        unsigned b0, b1, b2, b3;
        ldmatrix_x4(b0, b1, b2, b3, ks + swz<HD>(key, c));
#pragma unroll
        for (int mt = 0; mt < 2; ++mt) {
          mma_bf16(sc[mt][2 * np], qa[mt], b0, b1);
          mma_bf16(sc[mt][2 * np + 1], qa[mt], b2, b3);
        }
      }
    }

    const int key0 = t * tile_keys;
    if (key0 + tile_keys - 1 > qmin) {
#pragma unroll
      for (int mt = 0; mt < 2; ++mt)
#pragma unroll
        for (int j = 0; j < 8; ++j) {
          const int k = key0 + j * 8 + 2 * tq;
          if (k > qpos[mt][0]) sc[mt][j][0] = -INFINITY;
          if (k + 1 > qpos[mt][0]) sc[mt][j][1] = -INFINITY;
          if (k > qpos[mt][1]) sc[mt][j][2] = -INFINITY;
          if (k + 1 > qpos[mt][1]) sc[mt][j][3] = -INFINITY;
        }
    }

#pragma unroll
    for (int mt = 0; mt < 2; ++mt) {
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        float mx = -INFINITY;
#pragma unroll
        for (int j = 0; j < 8; ++j) mx = fmaxf(mx, fmaxf(sc[mt][j][2 * h], sc[mt][j][2 * h + 1]));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
        const float mn = fmaxf(m[mt][h], mx);
        const float mu = mn == -INFINITY ? 0.0f : mn;
        const float alpha = fast_exp2((m[mt][h] - mu) * p.scale_log2);
        m[mt][h] = mn;
        const float mc = mu * p.scale_log2;
        float sum = 0.0f;
#pragma unroll
        for (int j = 0; j < 8; ++j) {
          sc[mt][j][2 * h] = fast_exp2(fmaf(sc[mt][j][2 * h], p.scale_log2, -mc));
          sc[mt][j][2 * h + 1] = fast_exp2(fmaf(sc[mt][j][2 * h + 1], p.scale_log2, -mc));
          sum += sc[mt][j][2 * h] + sc[mt][j][2 * h + 1];
        }
        l[mt][h] = l[mt][h] * alpha + sum;
        // x * 1 == x bitwise: skip when no row of the warp saw a new maximum.
        if (!__all_sync(0xffffffffu, alpha == 1.0f)) {
#pragma unroll
          for (int j = 0; j < dtiles; ++j) {
            o[mt][j][2 * h] *= alpha;
            o[mt][j][2 * h + 1] *= alpha;
          }
        }
      }
    }

#pragma unroll
    for (int kk = 0; kk < 4; ++kk) {
      unsigned a[2][4];
#pragma unroll
      for (int mt = 0; mt < 2; ++mt) {
        a[mt][0] = pack_bf16(sc[mt][2 * kk][0], sc[mt][2 * kk][1]);
        a[mt][1] = pack_bf16(sc[mt][2 * kk][2], sc[mt][2 * kk][3]);
        a[mt][2] = pack_bf16(sc[mt][2 * kk + 1][0], sc[mt][2 * kk + 1][1]);
        a[mt][3] = pack_bf16(sc[mt][2 * kk + 1][2], sc[mt][2 * kk + 1][3]);
      }
#pragma unroll
      for (int np = 0; np < HD / 16; ++np) {
        const int key = kk * 16 + (lane & 7) + 8 * ((lane >> 3) & 1);
        const int c = np * 2 + (lane >> 4);
        unsigned b0, b1, b2, b3;
        ldmatrix_x4_trans(b0, b1, b2, b3, vs + swz<HD>(key, c));
#pragma unroll
        for (int mt = 0; mt < 2; ++mt) {
          mma_bf16(o[mt][2 * np], a[mt], b0, b1);
          mma_bf16(o[mt][2 * np + 1], a[mt], b2, b3);
        }
      }
    }
  }
  cp_async_wait_all();

#pragma unroll
  for (int mt = 0; mt < 2; ++mt)
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      float lt = l[mt][h];
      lt += __shfl_xor_sync(0xffffffffu, lt, 1);
      lt += __shfl_xor_sync(0xffffffffu, lt, 2);
      const int r = row0 + warp * 32 + mt * 16 + h * 8 + g;
      if (AT && nsplit > 1) {
        if (r < rows_total) {
          const std::size_t qi = static_cast<std::size_t>(blockIdx.z) * p.count * p.heads +
                                 static_cast<std::size_t>(r / p.group) * p.heads + kvh * p.group + r % p.group;
          float* dst = p.part_o + qi * HD;
#pragma unroll
          for (int j = 0; j < dtiles; ++j) {
            dst[j * 8 + 2 * tq] = o[mt][j][2 * h];
            dst[j * 8 + 2 * tq + 1] = o[mt][j][2 * h + 1];
          }
          if (tq == 0) {
            p.part_ml[qi * 2] = m[mt][h];
            p.part_ml[qi * 2 + 1] = lt;
          }
        }
        continue;
      }
      const float inv = 1.0f / lt;
      if (r < rows_total) {
        bf16* dst = p.out + (r / p.group) * q_stride + static_cast<std::size_t>(kvh * p.group + r % p.group) * HD;
#pragma unroll
        for (int j = 0; j < dtiles; ++j)
          *reinterpret_cast<unsigned*>(dst + j * 8 + 2 * tq) =
              pack_bf16(o[mt][j][2 * h] * inv, o[mt][j][2 * h + 1] * inv);
      }
    }
}

// Merges the splits of each (token, head) row: weights 2^((m_z - M) scale),
// as flash-decoding's second pass.
__global__ void combine_kernel(const float* part_o, const float* part_ml, int splits, int rows, int hd,
                               float scale_log2, bf16* out) {
  const int r = blockIdx.x;
  float mx = -INFINITY;
  for (int z = 0; z < splits; ++z) mx = fmaxf(mx, part_ml[(static_cast<std::size_t>(z) * rows + r) * 2]);
  for (int d = threadIdx.x; d < hd; d += blockDim.x) {
    float acc = 0.0f, sum = 0.0f;
    for (int z = 0; z < splits; ++z) {
      const std::size_t i = static_cast<std::size_t>(z) * rows + r;
      const float mz = part_ml[i * 2];
      if (mz == -INFINITY) continue;
      const float w = exp2f((mz - mx) * scale_log2);
      sum += w * part_ml[i * 2 + 1];
      acc += w * part_o[i * hd + d];
    }
    out[static_cast<std::size_t>(r) * hd + d] = __float2bfloat16(acc / sum);
  }
}

template <int HD, bool AT>
cudaError_t launch_hd(const params& p, cudaStream_t stream, int splits = 1) {
  const int smem = (block_rows + 2 * 2 * tile_keys) * HD * static_cast<int>(sizeof(bf16));
  // The shared-memory limit is a per-device attribute: raise it once on each
  // device (a repeated call from another thread is harmless).
  static std::atomic<bool> configured[64];  // per instance
  int dev = 0;
  cudaError_t e = cudaGetDevice(&dev);
  if (e != cudaSuccess) return e;
  if (dev >= 64 || !configured[dev].load(std::memory_order_relaxed)) {
    e = cudaFuncSetAttribute(attention_kernel<HD, AT>, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
    if (e != cudaSuccess) return e;
    if (dev < 64) configured[dev].store(true, std::memory_order_relaxed);
  }
  const int rows = p.count * p.group;
  dim3 grid((rows + block_rows - 1) / block_rows, p.kv_heads, splits);
  attention_kernel<HD, AT><<<grid, threads, smem, stream>>>(p);
  if (splits > 1) {
    e = cudaGetLastError();
    if (e != cudaSuccess) return e;
    const int combine_threads = HD < 32 ? 32 : HD;
    combine_kernel<<<p.count * p.heads, combine_threads, 0, stream>>>(p.part_o, p.part_ml, splits, p.count * p.heads,
                                                                      HD, p.scale_log2, p.out);
  }
  return cudaGetLastError();
}

}  // namespace

bool attention_supports(int head_dim) { return head_dim == 16 || head_dim == 32 || head_dim == 64 || head_dim == 128; }

namespace {

// The fields both launches share; the caller sets pos0 / positions / part.
params base_params(const bf16* q, int count, const attn_block* blocks, int num_blocks, int layer, int heads,
                   int kv_heads, float scale, bf16* out) {
  params p;
  p.q = q;
  p.out = out;
  p.blocks = blocks;
  p.num_blocks = num_blocks;
  p.count = count;
  p.pos0 = 0;
  p.positions = nullptr;
  p.part_o = p.part_ml = nullptr;
  p.layer = layer;
  p.heads = heads;
  p.kv_heads = kv_heads;
  p.group = heads / kv_heads;
  p.scale_log2 = scale * 1.4426950408889634f;
  return p;
}

template <bool AT>
cudaError_t dispatch(const params& p, int head_dim, int splits, cudaStream_t stream) {
  switch (head_dim) {
    case 16:
      return launch_hd<16, AT>(p, stream, splits);
    case 32:
      return launch_hd<32, AT>(p, stream, splits);
    case 64:
      return launch_hd<64, AT>(p, stream, splits);
    case 128:
      return launch_hd<128, AT>(p, stream, splits);
    default:
      return cudaErrorInvalidValue;
  }
}

}  // namespace

cudaError_t launch_attention(const bf16* q, int count, int pos0, const attn_block* blocks, int num_blocks, int layer,
                             int heads, int kv_heads, int head_dim, float scale, bf16* out, cudaStream_t stream,
                             attention_kind kind) {
  if (count <= 0) return cudaSuccess;
  if (num_blocks <= 0 || kv_heads <= 0 || heads % kv_heads != 0) return cudaErrorInvalidValue;
  if (kind == attention_kind::automatic && attention_sm90_supports(head_dim) && attention_sm90_available())
    return launch_attention_sm90(q, count, pos0, nullptr, blocks, num_blocks, layer, heads, kv_heads, head_dim, scale,
                                 out, stream);
  params p = base_params(q, count, blocks, num_blocks, layer, heads, kv_heads, scale, out);
  p.pos0 = pos0;
  return dispatch<false>(p, head_dim, 1, stream);
}

int attention_splits(int count, int heads, int kv_heads, int kv_end) {
  static std::atomic<int> sms{0};
  int n = sms.load(std::memory_order_relaxed);
  if (n == 0) {
    int dev = 0;
    if (cudaGetDevice(&dev) != cudaSuccess ||
        cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess || n <= 0)
      n = 132;
    sms.store(n, std::memory_order_relaxed);
  }
  if (count <= 0 || kv_heads <= 0) return 1;
  const int rows = count * (heads / kv_heads);
  const int blocks = (rows + block_rows - 1) / block_rows * kv_heads;
  const int tiles = (kv_end + tile_keys - 1) / tile_keys;
  // About four blocks per SM (two resident, plus a tail), each split at
  // least four key tiles long, at most 16 splits.
  const int want = (4 * n + blocks - 1) / blocks;
  return std::max(1, std::min({want, tiles / 4, 16}));
}

cudaError_t launch_attention_at(const bf16* q, int count, const int* positions, int kv_end, const attn_block* blocks,
                                int num_blocks, int layer, int heads, int kv_heads, int head_dim, float scale,
                                int splits, float* part, bf16* out, cudaStream_t stream) {
  if (count <= 0) return cudaSuccess;
  if (num_blocks <= 0 || kv_heads <= 0 || heads % kv_heads != 0 || splits <= 0 || kv_end <= 0 ||
      (splits > 1 && part == nullptr))
    return cudaErrorInvalidValue;
  // One split walks the same tiles as launch_attention: the same kernel keeps
  // a row's bits equal to a full prefill's.
  if (splits == 1 && attention_sm90_supports(head_dim) && attention_sm90_available())
    return launch_attention_sm90(q, count, 0, positions, blocks, num_blocks, layer, heads, kv_heads, head_dim, scale,
                                 out, stream);
  params p = base_params(q, count, blocks, num_blocks, layer, heads, kv_heads, scale, out);
  p.positions = positions;
  p.part_o = part;
  p.part_ml = part ? part + static_cast<std::size_t>(splits) * count * heads * head_dim : nullptr;
  return dispatch<true>(p, head_dim, splits, stream);
}

}  // namespace kvflow::cuda
