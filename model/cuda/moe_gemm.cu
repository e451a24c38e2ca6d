// model/cuda/moe_gemm.cu: the experts' grouped GEMM (cuda_moe_gemm, cuda_ops.h): every expert at once over
// the slot rows sorted by expert, one block per (row tile of one expert, column tile), the row tiles read
// from the plan's tile map on the device (moe.cu), so nothing waits for the host.
//
// bf16 tensor cores through mma.sync m16n8k16 (fp32 accumulate) fed by ldmatrix: 128 x 128 output tiles
// (GM = CUDA_MOE_TILE_M rows: the plan's tiles), 8 warps of 64 x 32 at <= 128 registers, so that two
// blocks (16 warps, 4 per scheduler) share an SM and one block's barriers and loads hide behind the other's
// mma; 32-deep k steps over GSTAGES shared-memory stages with one barrier per step. The grid runs the
// column tiles fastest, so the blocks in flight at once share a few row tiles of A (read once from memory)
// and the weights of a few experts. The A tile is read (optionally gathered through arow, optionally two
// interleaved arrays) either from bf16 activations (the forward: x, act) or from fp32 gradients (the
// backward: dy, dgate/dup; rounded to bf16 as they are staged), the kernel templated on that element type;
// the B tile is the expert weight decoded inside the tile from its storage (MXFP4, NF4 or bf16), so the
// 4-bit experts are never expanded in memory. The results (fp32, + bias) go from the accumulators straight
// to fp32 scratch.
//
// Pipeline (step s computes on stage s % GSTAGES):
// - B: the raw 4-bit bytes of B(s+1) (from HBM) are loaded into registers during step s-2, decoded and
//   stored into stage (s+1) % GSTAGES between the two 16-deep halves of step s's mma, so the integer work
//   of the decode overlaps the tensor cores.
// - A, plain bf16 rows (AASYNC: the forward): copied by cp.async straight into shared memory, A(s+GSTAGES-1)
//   issued during step s into the stage step s-1 read; step s ends by waiting for A(s+1) (one commit group
//   per step).
// - A otherwise (fp32, interleaved a0/a1, unaligned rows or a k edge inside a run of 8): loaded into
//   registers during step s-1, rounded and stored with B(s+1).
// A stage written during step s was last read in step s-1 or earlier, which every warp finished before the
// barrier that ended step s-1; the barrier that ends step s publishes it. The fp32 sums run over k in the
// same order for every run and every tiling (one m16n8k16 per 16 k, ascending): deterministic.
//
// Shared-memory layouts (bf16, padded rows so that ldmatrix and the 16-byte stores meet no bank conflict):
// As (m, k) pitch AKP; B for wt 1 (W_e (N, Kd): its rows are the n) as Bs (n, k) pitch AKP, read by
// ldmatrix; for wt 0 (W_e (Kd, N), the 32-value MXFP4 blocks run along n) as Bs (k, n) pitch BNP, read by
// ldmatrix.trans.
#include "model/cuda/common.cuh"

#define GM CUDA_MOE_TILE_M // 128
#define GN 128
#define GK 32
#define WM 64 // rows of one warp's tile
#define WN 32 // columns of one warp's tile
#define MT (WM / 16) // mma row tiles per warp
#define NT (WN / 8)  // mma column tiles per warp
#define GTHREADS (GM / WM * GN / WN * WARP)
#define GMINB (512 / GTHREADS) // blocks per SM the registers must allow (<= 128 registers per thread)
#define GSTAGES 3
#define AKP (GK + 8) // (m, k) and (n, k) row pitch: 80 bytes, eight rows hit eight distinct 16-byte banks
#define BNP (GN + 8) // (k, n) row pitch: 272 bytes, likewise
#define AUNITS (GM * GK / 8 / GTHREADS) // A runs of 8 k staged per thread per step
#define AROWS (GTHREADS / 4)            // rows between one thread's A runs
static_assert(GN * GK / 16 == GTHREADS, "one 16-value weight run per thread per step");
static_assert(GM * GK / 8 % GTHREADS == 0 && GN % 64 == 0, "the A and B thread maps");

// The stage sizes in bf16 elements: A (GM, AKP); B (GN, AKP) for wt 1, (GK, BNP) for wt 0.
#define A_STAGE (GM * AKP)
#define B_STAGE(WT) ((WT) ? GN * AKP : GK * BNP)
#define SMEM_BYTES(WT) (GSTAGES * (A_STAGE + B_STAGE(WT)) * 2)

// ---------------------------------------------------------------------------------------------------
// The B operand: one thread's run of 16 consecutive weights of expert e's row r, columns c0 .. c0+15 (c0 a
// multiple of 16: half of one MXFP4 block), as 8 words of bf16 pairs (even column in the low half). The raw
// bytes are loaded two steps before they are decoded (b_load); b_decode turns them into bf16, or reads and
// decodes any other case itself (NF4, bf16, a matrix edge: zeros outside; scale bytes outside [2, 252]).
typedef struct b_raw {
    uint2 codes; // 16 e2m1 codes, low nibble = even column
    uint32_t scale;
} b_raw;

static __device__ __forceinline__ bool b_fast(const cuda_experts &w, int r, int c0) {
    return w.fmt == WF_MXFP4 && r < w.rows && c0 < w.cols; // cols % 32 == 0: the run lies inside the row
}

static __device__ __forceinline__ void b_load(const cuda_experts &w, int e, int r, int c0, b_raw &q) {
    if (b_fast(w, r, c0)) {
        const int64_t i = (int64_t)e * w.rows * w.cols + (int64_t)r * w.cols + c0; // a multiple of 16
        q.codes = __ldg(reinterpret_cast<const uint2 *>(w.blocks + i / 2));
        q.scale = __ldg(w.scales + i / 32);
    }
}

// A bf16 pair as one word (low half = first element).
typedef union bf16x2_bits {
    uint32_t u;
    __nv_bfloat162 b;
} bf16x2_bits;
static __device__ __forceinline__ uint32_t bf16x2_mul(uint32_t x, uint32_t y) {
    bf16x2_bits a, b;
    a.u = x, b.u = y;
    a.b = __hmul2(a.b, b.b);
    return a.u;
}

// Eight e2m1 codes (q's nibbles, element j in nibble j) at scale 2^0 as bf16 pairs out[0..3]. The bytes of
// the bf16 magnitudes of codes 0-7 {0, 0.5, 1, 1.5, 2, 3, 4, 6} are looked up four at a time with byte
// permutes (high bytes {00 3F 3F 3F 40 40 40 40}, low bytes {00 00 80 C0 00 40 80 C0}), the sign (bit 3 of
// each code) goes to bit 7 of the high byte, then low and high bytes are interleaved into bf16 pairs.
static __device__ __forceinline__ void e2m1x8_bf16(uint32_t q, uint32_t *out) {
    const uint32_t HX = 0x3F3F3F00u, HY = 0x40404040u, LX = 0xC0800000u, LY = 0xC0804000u;
    const uint32_t sa = q & 0x7777u, sb = (q >> 16) & 0x7777u, q4 = q << 4;
    // Sign of element j: q bit 4j+3; element 2i's is bit 7 of q4's byte i, element 2i+1's bit 7 of q's byte i.
    const uint32_t ha = __byte_perm(HX, HY, sa) | (__byte_perm(q4, q, 0x5140) & 0x80808080u);
    const uint32_t hb = __byte_perm(HX, HY, sb) | (__byte_perm(q4, q, 0x7362) & 0x80808080u);
    const uint32_t la = __byte_perm(LX, LY, sa), lb = __byte_perm(LX, LY, sb);
    out[0] = __byte_perm(la, ha, 0x5140), out[1] = __byte_perm(la, ha, 0x7362);
    out[2] = __byte_perm(lb, hb, 0x5140), out[3] = __byte_perm(lb, hb, 0x7362);
}

// Element (r, c) of expert e as a bf16 (0 outside the matrix), the reference decode (dequant.cu's values).
static __device__ __forceinline__ uint16_t expert_bf16(const cuda_experts &w, int e, int r, int c) {
    if (r >= w.rows || c >= w.cols) return 0;
    const int64_t n = (int64_t)w.rows * w.cols, i = (int64_t)r * w.cols + c;
    if (w.fmt == WF_MXFP4) {
        const uint8_t byte = w.blocks[(e * n + i) / 2];
        return bf16_bits(mxfp4_value(i & 1 ? byte >> 4 : byte & 15) * mxfp4_scale(w.scales[(e * n + i) / 32]));
    }
    if (w.fmt == WF_NF4)
        return bf16_bits(nf4_value(w.blocks + e * w.nf4_bytes, w.absmax + e * w.nf4_blocks, w.qmap + e * 16,
                                   w.blocksize, i));
    return w.bf16[e * n + i];
}

// The MXFP4 values are code * 2^(s - 127), s the block's scale byte: exact in bf16; for 2 <= s <= 252 every
// product (0.5 .. 6 times the scale) is a normal bf16, so one bf16x2 multiply of the scale-1 pairs by
// 2^(s - 127) gives it exactly (zeros keep their sign). Other scale bytes take the reference path.
static __device__ __forceinline__ void b_decode(const cuda_experts &w, const b_raw &q, int e, int r, int c0,
                                                uint32_t *out) {
    if (b_fast(w, r, c0) && q.scale >= 2 && q.scale <= 252) {
        const uint32_t sc = q.scale << 7 | q.scale << 23; // 2^(s - 127) as a bf16 pair
        e2m1x8_bf16(q.codes.x, out);
        e2m1x8_bf16(q.codes.y, out + 4);
#pragma unroll
        for (int j = 0; j < 8; j++) out[j] = bf16x2_mul(out[j], sc);
        return;
    }
#pragma unroll
    for (int j = 0; j < 8; j++)
        out[j] = expert_bf16(w, e, r, c0 + 2 * j) | (uint32_t)expert_bf16(w, e, r, c0 + 2 * j + 1) << 16;
}

// ---------------------------------------------------------------------------------------------------
// The A operand through registers: runs of 8 consecutive k of one row, raw as loaded (converted when
// stored). With a1 the run's elements k .. k+7 are a0, a1, a0, a1, ... at columns k/2 .. k/2+3: held as
// a0's four then a1's four.
template <typename TA> struct a_run;
template <> struct a_run<uint16_t> { uint32_t w[4]; }; // 8 bf16 (a1: a0's 4 in w[0..1], a1's in w[2..3])
template <> struct a_run<float> { float v[8]; };       // 8 fp32 (a1: a0's 4 in v[0..3], a1's in v[4..7])

static __device__ __forceinline__ void a_vec(a_run<uint16_t> &u, const uint16_t *a0, const uint16_t *a1,
                                             size_t at, int k) {
    if (a1) {
        const uint2 x = __ldg(reinterpret_cast<const uint2 *>(a0 + at + k / 2));
        const uint2 y = __ldg(reinterpret_cast<const uint2 *>(a1 + at + k / 2));
        u.w[0] = x.x, u.w[1] = x.y, u.w[2] = y.x, u.w[3] = y.y;
    } else {
        const uint4 x = __ldg(reinterpret_cast<const uint4 *>(a0 + at + k));
        u.w[0] = x.x, u.w[1] = x.y, u.w[2] = x.z, u.w[3] = x.w;
    }
}
static __device__ __forceinline__ void a_vec(a_run<float> &u, const float *a0, const float *a1, size_t at, int k) {
    const float4 x = __ldg(reinterpret_cast<const float4 *>(a1 ? a0 + at + k / 2 : a0 + at + k));
    const float4 y = __ldg(reinterpret_cast<const float4 *>(a1 ? a1 + at + k / 2 : a0 + at + k + 4));
    u.v[0] = x.x, u.v[1] = x.y, u.v[2] = x.z, u.v[3] = x.w, u.v[4] = y.x, u.v[5] = y.y, u.v[6] = y.z, u.v[7] = y.w;
}
// Slot j of the raw layout: element k + j (no a1), or a0 / a1 column k/2 + j % 4 (j < 4 / j >= 4).
static __device__ __forceinline__ void a_set(a_run<uint16_t> &u, int j, uint16_t v) {
    u.w[j / 2] = j & 1 ? (u.w[j / 2] & 0xFFFFu) | (uint32_t)v << 16 : v;
}
static __device__ __forceinline__ void a_set(a_run<float> &u, int j, float v) { u.v[j] = v; }
// The run as 8 bf16 in k order (fp32 rounded to nearest even).
static __device__ __forceinline__ uint4 a_pack(const a_run<uint16_t> &u, bool inter) {
    if (!inter) return make_uint4(u.w[0], u.w[1], u.w[2], u.w[3]);
    return make_uint4(__byte_perm(u.w[0], u.w[2], 0x5410), __byte_perm(u.w[0], u.w[2], 0x7632),
                      __byte_perm(u.w[1], u.w[3], 0x5410), __byte_perm(u.w[1], u.w[3], 0x7632));
}
static __device__ __forceinline__ uint32_t pack2(float lo, float hi) {
    bf16x2_bits u;
    u.b = __floats2bfloat162_rn(lo, hi);
    return u.u;
}
static __device__ __forceinline__ uint4 a_pack(const a_run<float> &u, bool inter) {
    if (!inter) return make_uint4(pack2(u.v[0], u.v[1]), pack2(u.v[2], u.v[3]), pack2(u.v[4], u.v[5]),
                                  pack2(u.v[6], u.v[7]));
    return make_uint4(pack2(u.v[0], u.v[4]), pack2(u.v[1], u.v[5]), pack2(u.v[2], u.v[6]), pack2(u.v[3], u.v[7]));
}

static __device__ __forceinline__ bool aligned(const void *p, int bytes) { return ((uintptr_t)p & (bytes - 1)) == 0; }

// ---------------------------------------------------------------------------------------------------
// grid (ceil(N / GN), max_tiles), GTHREADS threads, SMEM_BYTES(WT) dynamic shared memory. Warp w computes
// rows wm .. wm+WM-1, columns wn .. wn+WN-1 of the tile as MT x NT mma tiles of 16 x 8. AASYNC (TA bf16
// only): A is plain rows (no a1), 16-byte aligned with lda % 8 == 0 and Kd % 8 == 0, copied by cp.async.
template <typename TA, int WT, bool AASYNC>
__global__ void __launch_bounds__(GTHREADS, GMINB) moe_gemm_kernel(cuda_moe_gemm_args g) {
    const TA *a0 = (const TA *)g.a0, *a1 = (const TA *)g.a1; // A's element type (cuda_ops.h)
    const int tile = blockIdx.y, n0 = blockIdx.x * GN;
    const int e = g.tiles[2 * tile];
    if (e < 0) return;
    const int r0 = g.tiles[2 * tile + 1], mrows = min(GM, g.off[e + 1] - r0);
    extern __shared__ __align__(16) uint16_t smem[];
    uint16_t *As = smem, *Bs = smem + GSTAGES * A_STAGE;
    const int tid = threadIdx.x, lane = tid % WARP, warp = tid / WARP;
    const int wm = (warp / (GN / WN)) * WM, wn = (warp % (GN / WN)) * WN;
    const int ns = (g.Kd + GK - 1) / GK; // k steps

    // This thread's A runs: rows am + AROWS i of the tile, k offset ak of each step; source rows fixed for
    // the block (-1: past the expert's rows, staged as zeros).
    const int am = tid / 4, ak = (tid % 4) * 8;
    size_t asrc[AUNITS];
    bool avalid[AUNITS];
#pragma unroll
    for (int i = 0; i < AUNITS; i++) {
        const int m = am + AROWS * i;
        avalid[i] = m < mrows;
        asrc[i] = avalid[i] ? (size_t)(g.arow ? g.arow[r0 + m] : r0 + m) * g.lda : 0;
    }
    const bool inter = a1 != nullptr;
    const int vb = inter ? 4 * (int)sizeof(TA) : 16; // bytes per vector load (a_vec)
    const bool avec = g.lda % (vb / (int)sizeof(TA)) == 0 && aligned(a0, vb) && (!inter || aligned(a1, vb));
    // This thread's B run per step: wt 1: W_e row n0 + bn, columns k0 + 16 bh .. (into Bs (n, k) row bn),
    // eight neighbouring threads on eight rows; wt 0: W_e row k0 + bk, columns n0 + 16 bh .. (into Bs (k, n)
    // row bk), eight neighbouring threads on two rows x four runs (32 bytes of each row in global memory).
    // Either way the eight 16-byte stores of a quarter warp meet eight distinct banks.
    const int bq = tid / 8, bl = tid % 8;
    const int bn = bl + 8 * (tid / 16), bkh = (tid / 8) % 2;
    const int bk = 2 * (bq / (GN / 64)) + bl / 4, bnh = 4 * (bq % (GN / 64)) + bl % 4;
    auto b_row = [&](int k0) { return WT ? n0 + bn : k0 + bk; };
    auto b_col = [&](int k0) { return WT ? k0 + 16 * bkh : n0 + 16 * bnh; };

    a_run<TA> ra[AUNITS];
    auto load_a = [&](int k0) {
#pragma unroll
        for (int i = 0; i < AUNITS; i++) {
            const int k = k0 + ak;
            if (avalid[i] && avec && k + 8 <= g.Kd) {
                a_vec(ra[i], a0, a1, asrc[i], k);
            } else {
#pragma unroll
                for (int j = 0; j < 8; j++) {
                    // Raw slot j: element k + j, or (a1) a0 / a1 at column k/2 + j % 4 = element k + 2 (j % 4) + j / 4.
                    const int kj = inter ? k + 2 * (j % 4) + j / 4 : k + j;
                    TA v = 0; // +0 in fp32 and in bf16 bits
                    if (avalid[i] && kj < g.Kd) v = inter ? (j < 4 ? a0 : a1)[asrc[i] + kj / 2] : a0[asrc[i] + kj];
                    a_set(ra[i], j, v);
                }
            }
        }
    };
    auto store_a = [&](uint16_t *as) {
#pragma unroll
        for (int i = 0; i < AUNITS; i++)
            *reinterpret_cast<uint4 *>(as + (am + AROWS * i) * AKP + ak) = a_pack(ra[i], inter);
    };
    // AASYNC: A(k0 ..) into stage as, rows past the expert and k past Kd (whole runs: Kd % 8 == 0) zero-filled.
    auto copy_a = [&](int k0, uint16_t *as) {
#pragma unroll
        for (int i = 0; i < AUNITS; i++) {
            const int k = k0 + ak;
            const bool in = avalid[i] && k < g.Kd;
            cp_async16(smem_addr(as + (am + AROWS * i) * AKP + ak), in ? a0 + asrc[i] + k : a0, in ? 16 : 0);
        }
    };
    auto store_b = [&](int k0, const b_raw &q, uint16_t *bs) {
        uint32_t v[8];
        b_decode(g.w, q, e, b_row(k0), b_col(k0), v);
        uint4 *dst = reinterpret_cast<uint4 *>(WT ? bs + bn * AKP + 16 * bkh : bs + bk * BNP + 16 * bnh);
        dst[0] = make_uint4(v[0], v[1], v[2], v[3]);
        dst[1] = make_uint4(v[4], v[5], v[6], v[7]);
    };

    float acc[MT][NT][4];
#pragma unroll
    for (int i = 0; i < MT; i++)
#pragma unroll
        for (int j = 0; j < NT; j++)
#pragma unroll
            for (int q = 0; q < 4; q++) acc[i][j][q] = 0.0f;
    // Row tiles of 16 holding no row of the expert skip their mma (the last tile of an expert is partial).
    const int mt_live = min(MT, max(0, (mrows - wm + 15) / 16));

    // One 16-deep half step on stage (as, bs), k offset ks within the step.
    auto mma_half = [&](const uint16_t *as, const uint16_t *bs, int ks) {
        if (mt_live == 0) return;
        uint32_t b[NT][2];
#pragma unroll
        for (int p = 0; p < NT / 2; p++) {
            if (WT) {
                const int n = wn + 16 * p + (lane & 7) + ((lane >> 4) << 3), k = ks + ((lane >> 3) & 1) * 8;
                ldsm_x4(smem_addr(bs + n * AKP + k), b[2 * p][0], b[2 * p][1], b[2 * p + 1][0], b[2 * p + 1][1]);
            } else {
                const int k = ks + ((lane >> 3) & 1) * 8 + (lane & 7), n = wn + 16 * p + (lane >> 4) * 8;
                ldsm_x4_t(smem_addr(bs + k * BNP + n), b[2 * p][0], b[2 * p][1], b[2 * p + 1][0], b[2 * p + 1][1]);
            }
        }
#pragma unroll
        for (int mt = 0; mt < MT; mt++) {
            if (mt >= mt_live) break;
            uint32_t a[4];
            ldsm_x4(smem_addr(as + (wm + 16 * mt + (lane & 15)) * AKP + ks + (lane >> 4) * 8), a[0], a[1], a[2], a[3]);
#pragma unroll
            for (int nt = 0; nt < NT; nt++) mma_bf16(acc[mt][nt], a, b[nt]);
        }
    };

    // Prologue: stage 0 holds step 0 (AASYNC: stages 1 .. GSTAGES-2 have A in flight, one group each);
    // A(1) (registers), B(1) and B(2) are in flight.
    b_raw rb0, rb1;
    if (AASYNC) {
#pragma unroll
        for (int j = 0; j < GSTAGES - 1; j++) {
            if (j < ns) copy_a(j * GK, As + j * A_STAGE);
            cp_async_commit();
        }
    } else {
        load_a(0);
    }
    b_load(g.w, e, b_row(0), b_col(0), rb1);
    if (!AASYNC) store_a(As);
    store_b(0, rb1, Bs);
    if (ns > 1) {
        if (!AASYNC) load_a(GK);
        b_load(g.w, e, b_row(GK), b_col(GK), rb0);
    }
    if (ns > 2) b_load(g.w, e, b_row(2 * GK), b_col(2 * GK), rb1);
    if (AASYNC) cp_async_wait<GSTAGES - 2>();
    __syncthreads();

    // Step s: x holds B(s+1) (stored now, then refilled with B(s+3)), the other register set B(s+2).
    auto step = [&](int s, b_raw &x) {
        const int cur = s % GSTAGES, nxt = (s + 1) % GSTAGES;
        const uint16_t *as = As + cur * A_STAGE, *bs = Bs + cur * B_STAGE(WT);
        mma_half(as, bs, 0);
        if (s + 1 < ns) {
            if (!AASYNC) store_a(As + nxt * A_STAGE);
            store_b((s + 1) * GK, x, Bs + nxt * B_STAGE(WT));
        }
        if (AASYNC) {
            const int sa = s + GSTAGES - 1; // into the stage step s-1 read
            if (sa < ns) copy_a(sa * GK, As + (sa % GSTAGES) * A_STAGE);
            cp_async_commit();
        } else if (s + 2 < ns) {
            load_a((s + 2) * GK);
        }
        if (s + 3 < ns) b_load(g.w, e, b_row((s + 3) * GK), b_col((s + 3) * GK), x);
        mma_half(as, bs, 16);
        if (AASYNC) cp_async_wait<GSTAGES - 2>(); // A(s+1) has landed
        __syncthreads();
    };
    for (int s = 0; s < ns; s += 2) {
        step(s, rb0);
        if (s + 1 < ns) step(s + 1, rb1);
    }

    // Epilogue: accumulator (mt, nt) holds rows g, g+8 (g = lane / 4), columns 2 (lane % 4) + {0, 1}.
    const bool vec2 = !g.c1 && g.ldc % 2 == 0 && aligned(g.c0, 8);
#pragma unroll
    for (int nt = 0; nt < NT; nt++) {
        const int n = n0 + wn + 8 * nt + 2 * (lane % 4);
        if (n >= g.N) continue;
        const bool two = n + 1 < g.N;
        const float b0 = g.bias ? g.bias[(size_t)e * g.N + n] : 0.0f;
        const float b1 = g.bias && two ? g.bias[(size_t)e * g.N + n + 1] : 0.0f;
#pragma unroll
        for (int mt = 0; mt < MT; mt++)
#pragma unroll
            for (int h = 0; h < 2; h++) {
                const int m = wm + 16 * mt + lane / 4 + 8 * h;
                if (m >= mrows) continue;
                const size_t r = (size_t)(r0 + m) * g.ldc;
                const float v0 = acc[mt][nt][2 * h] + b0, v1 = acc[mt][nt][2 * h + 1] + b1;
                if (g.c1) { // n even: n into c0, n + 1 into c1, both at column n / 2
                    g.c0[r + n / 2] = v0;
                    if (two) g.c1[r + n / 2] = v1;
                } else if (vec2 && two) {
                    *reinterpret_cast<float2 *>(g.c0 + r + n) = make_float2(v0, v1);
                } else {
                    g.c0[r + n] = v0;
                    if (two) g.c0[r + n + 1] = v1;
                }
            }
    }
}

template <typename TA, int WT, bool AASYNC> static void moe_gemm_launch(const cuda_moe_gemm_args *a, dim3 grid) {
    static bool ready; // the > 48 KiB shared-memory opt-in, once per instantiation (host-side attribute)
    if (!ready) {
        CUDA_CHECK(cudaFuncSetAttribute(moe_gemm_kernel<TA, WT, AASYNC>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                        SMEM_BYTES(WT)));
        ready = true;
    }
    moe_gemm_kernel<TA, WT, AASYNC><<<grid, GTHREADS, SMEM_BYTES(WT)>>>(*a);
    CUDA_LAUNCH_CHECK();
}

template <int WT> static void moe_gemm_bf16(const cuda_moe_gemm_args *a, dim3 grid) {
    const bool async = !a->a1 && a->lda % 8 == 0 && a->Kd % 8 == 0 && ((uintptr_t)a->a0 & 15) == 0;
    async ? moe_gemm_launch<uint16_t, WT, true>(a, grid) : moe_gemm_launch<uint16_t, WT, false>(a, grid);
}

extern "C" void cuda_moe_gemm(const cuda_moe_gemm_args *a, int S, int E) {
    dim3 grid(cuda_blocks(a->N, GN), cuda_moe_max_tiles(S, E));
    if (a->a_bf16) a->wt ? moe_gemm_bf16<1>(a, grid) : moe_gemm_bf16<0>(a, grid);
    else a->wt ? moe_gemm_launch<float, 1, false>(a, grid) : moe_gemm_launch<float, 0, false>(a, grid);
}

extern "C" int cuda_moe_max_tiles(int S, int E) { return (S + E * (CUDA_MOE_TILE_M - 1)) / CUDA_MOE_TILE_M; }
