// Generic kernels of lamina-cuda, compiled once per process with NVRTC. Every kernel is
// instantiated per element type with a suffix: _f32 float, _f64 double, _i32 int, _u8 bool.
// Scalar semantics follow lamina_core::ops::elementwise::eval_scalar and lamina-cpu.

typedef long long i64;
typedef unsigned long long u64;

// A strided walk: flat index i over `shape` (row-major) maps to offset + sum(idx_d * stride_d).
struct Walk {
    i64 rank;
    i64 shape[8];
    i64 stride[8];
    i64 offset;
};

__device__ __forceinline__ i64 walk_at(const Walk& w, i64 i) {
    // i < the walk's size, so one axis needs no division
    if (w.rank <= 1) return w.offset + (w.rank == 1 ? i * w.stride[0] : 0);
    i64 off = w.offset;
    for (int d = (int)w.rank - 1; d >= 0; --d) {
        i64 s = w.shape[d];
        i64 q = i / s;
        off += (i - q * s) * w.stride[d];
        i = q;
    }
    return off;
}

struct ConvP {
    i64 n, c, h, w, o, cg, kh, kw, ho, wo, sh, sw, ph, pw, dh, dw, groups;
};

#define GRID_LOOP(i, n) for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < (n); i += (i64)gridDim.x * blockDim.x)

__device__ __forceinline__ float from_f64_f32(double v) { return (float)v; }
__device__ __forceinline__ double from_f64_f64(double v) { return v; }
__device__ __forceinline__ int from_f64_i32(double v) { return (int)(long long)v; }
__device__ __forceinline__ unsigned char from_f64_u8(double v) { return v != 0.0; }

__device__ __forceinline__ bool isnan_any(float v) { return v != v; }
__device__ __forceinline__ bool isnan_any(double v) { return v != v; }
__device__ __forceinline__ bool isnan_any(int) { return false; }
__device__ __forceinline__ bool isnan_any(unsigned char) { return false; }

__device__ __forceinline__ float lowest_of(float) { return -__int_as_float(0x7f800000); }
__device__ __forceinline__ double lowest_of(double) { return -__longlong_as_double(0x7ff0000000000000ll); }
__device__ __forceinline__ int lowest_of(int) { return (int)0x80000000; }
__device__ __forceinline__ unsigned char lowest_of(unsigned char) { return 0; }

// NaN wins and stays; otherwise only a strictly greater value replaces the best (ties keep the first).
template <typename T> __device__ __forceinline__ bool beats(T v, T best) {
    return !isnan_any(best) && (isnan_any(v) || v > best);
}

// Sums accumulate wide (double for floats, 64-bit for integers) and round once.
template <typename T> struct Acc { typedef double type; };
template <> struct Acc<int> { typedef long long type; };
template <typename T> __device__ __forceinline__ T sum_finish(typename Acc<T>::type a) { return (T)a; }
template <> __device__ __forceinline__ int sum_finish<int>(long long a) { return (int)(unsigned)(u64)a; }

template <typename T> __device__ __forceinline__ T max_step(T a, T v) { return beats(v, a) ? v : a; }

// Four elements a thread per iteration, loaded before any is stored (inside a segment one block
// walks the whole tensor, and each iteration waits for one memory round trip).
template <typename T> __device__ void copy_t(T* out, const T* src, i64 n, Walk w) {
    const i64 s = (i64)gridDim.x * blockDim.x;
    for (i64 b = (i64)blockIdx.x * blockDim.x + threadIdx.x; b < n; b += 4 * s) {
        T v[4];
#pragma unroll
        for (int j = 0; j < 4; ++j) if (b + j * s < n) v[j] = src[walk_at(w, b + j * s)];
#pragma unroll
        for (int j = 0; j < 4; ++j) if (b + j * s < n) out[b + j * s] = v[j];
    }
}
template <typename T> __device__ void scatter_t(T* out, const T* src, i64 n, Walk w) {
    const i64 s = (i64)gridDim.x * blockDim.x;
    for (i64 b = (i64)blockIdx.x * blockDim.x + threadIdx.x; b < n; b += 4 * s) {
        T v[4];
#pragma unroll
        for (int j = 0; j < 4; ++j) if (b + j * s < n) v[j] = src[b + j * s];
#pragma unroll
        for (int j = 0; j < 4; ++j) if (b + j * s < n) out[walk_at(w, b + j * s)] = v[j];
    }
}
template <typename T> __device__ void iota_t(T* out, i64 n, i64 dim, i64 inner) {
    GRID_LOOP(i, n) { out[i] = (T)((i / inner) % dim); }
}

// Thread per output: `keep` walks the outputs (source strides), `red` the reduced elements.
template <typename T> __device__ void reduce_sum_thread(T* out, const T* src, i64 n_out, i64 n_red, Walk keep, Walk red) {
    GRID_LOOP(j, n_out) {
        i64 base = walk_at(keep, j);
        typename Acc<T>::type a = 0;
        for (i64 r = 0; r < n_red; ++r) a += src[base + walk_at(red, r)];
        out[j] = sum_finish<T>(a);
    }
}
template <typename T> __device__ void reduce_max_thread(T* out, const T* src, i64 n_out, i64 n_red, Walk keep, Walk red) {
    GRID_LOOP(j, n_out) {
        i64 base = walk_at(keep, j);
        T a = lowest_of(T());
        for (i64 r = 0; r < n_red; ++r) a = max_step(a, src[base + walk_at(red, r)]);
        out[j] = a;
    }
}
// Block (a power of two, up to 1024 threads) per output.
template <typename T> __device__ void reduce_sum_block(T* out, const T* src, i64 n_out, i64 n_red, Walk keep, Walk red) {
    typedef typename Acc<T>::type A;
    __shared__ A sh[1024];
    for (i64 j = blockIdx.x; j < n_out; j += gridDim.x) {
        i64 base = walk_at(keep, j);
        A a = 0;
        for (i64 r = threadIdx.x; r < n_red; r += blockDim.x) a += src[base + walk_at(red, r)];
        sh[threadIdx.x] = a;
        __syncthreads();
        for (int s = blockDim.x / 2; s > 0; s >>= 1) {
            if (threadIdx.x < s) sh[threadIdx.x] += sh[threadIdx.x + s];
            __syncthreads();
        }
        if (threadIdx.x == 0) out[j] = sum_finish<T>(sh[0]);
        __syncthreads();
    }
}
template <typename T> __device__ void reduce_max_block(T* out, const T* src, i64 n_out, i64 n_red, Walk keep, Walk red) {
    __shared__ T sh[1024];
    for (i64 j = blockIdx.x; j < n_out; j += gridDim.x) {
        i64 base = walk_at(keep, j);
        T a = lowest_of(T());
        for (i64 r = threadIdx.x; r < n_red; r += blockDim.x) a = max_step(a, src[base + walk_at(red, r)]);
        sh[threadIdx.x] = a;
        __syncthreads();
        for (int s = blockDim.x / 2; s > 0; s >>= 1) {
            if (threadIdx.x < s) sh[threadIdx.x] = max_step(sh[threadIdx.x], sh[threadIdx.x + s]);
            __syncthreads();
        }
        if (threadIdx.x == 0) out[j] = sh[0];
        __syncthreads();
    }
}

// Outputs adjacent in memory: a block is 32 neighbouring outputs x (blockDim / 32, at most 32)
// lanes that split the reduced elements (reads coalesce across the 32); the partials are
// combined in a fixed order.
template <typename T> __device__ void reduce_sum_cols(T* out, const T* src, i64 n_out, i64 n_red, Walk keep, Walk red) {
    typedef typename Acc<T>::type A;
    __shared__ A sh[32][33];
    int tx = threadIdx.x & 31, ty = threadIdx.x >> 5, lanes = blockDim.x >> 5;
    i64 j = (i64)blockIdx.x * 32 + tx;
    A a = 0;
    if (j < n_out) {
        i64 base = walk_at(keep, j);
        for (i64 r = ty; r < n_red; r += lanes) a += src[base + walk_at(red, r)];
    }
    sh[ty][tx] = a;
    __syncthreads();
    if (ty == 0 && j < n_out) {
        A t = 0;
        for (int y = 0; y < lanes; ++y) t += sh[y][tx];
        out[j] = sum_finish<T>(t);
    }
}
template <typename T> __device__ void reduce_max_cols(T* out, const T* src, i64 n_out, i64 n_red, Walk keep, Walk red) {
    __shared__ T sh[32][33];
    int tx = threadIdx.x & 31, ty = threadIdx.x >> 5, lanes = blockDim.x >> 5;
    i64 j = (i64)blockIdx.x * 32 + tx;
    T a = lowest_of(T());
    if (j < n_out) {
        i64 base = walk_at(keep, j);
        for (i64 r = ty; r < n_red; r += lanes) a = max_step(a, src[base + walk_at(red, r)]);
    }
    sh[ty][tx] = a;
    __syncthreads();
    if (ty == 0 && j < n_out) {
        T t = lowest_of(T());
        for (int y = 0; y < lanes; ++y) t = max_step(t, sh[y][tx]);
        out[j] = t;
    }
}

template <typename T> __device__ void argmax_t(int* out, const T* src, i64 outer, i64 dim, i64 inner) {
    GRID_LOOP(j, outer * inner) {
        i64 o = j / inner, in = j % inner;
        T best = lowest_of(T());
        int bi = 0;
        for (i64 d = 0; d < dim; ++d) {
            T v = src[(o * dim + d) * inner + in];
            if (beats(v, best)) { best = v; bi = (int)d; }
        }
        out[j] = bi;
    }
}

// take along an axis: operand [pre, dim, post], k indices, result [pre, k, post]; out of range reads 0.
template <typename T> __device__ void gather_t(T* out, const T* src, const int* idx, i64 pre, i64 dim, i64 post, i64 k) {
    GRID_LOOP(i, pre * k * post) {
        i64 q = i % post, r = i / post;
        i64 j = r % k, p = r / k;
        int sel = idx[j];
        out[i] = (sel >= 0 && sel < dim) ? src[(p * dim + sel) * post + q] : (T)0;
    }
}

template <typename T> __device__ void fill_t(T* out, i64 n, T v) {
    GRID_LOOP(i, n) { out[i] = v; }
}

// Adds updates [pre, k, post] into a zeroed [pre, dim, post] (zeroed by a fill before); out of
// range indices are skipped.
template <typename T> __device__ void scatter_add_t(T* out, const T* upd, const int* idx, i64 pre, i64 dim, i64 post, i64 k) {
    GRID_LOOP(i, pre * k * post) {
        i64 q = i % post, r = i / post;
        i64 j = r % k, p = r / k;
        int sel = idx[j];
        if (sel >= 0 && sel < dim) atomicAdd(&out[(p * dim + sel) * post + q], upd[i]);
    }
}

// Direct convolution with a block (256 threads) per output element, for few outputs with long
// sums (a weight gradient written as a convolution: the batch and image are the sum).
template <typename T> __device__ void conv_block_t(T* out, const T* x, const T* wt, ConvP p) {
    typedef typename Acc<T>::type A;
    __shared__ A sh[256];
    i64 og = p.o / p.groups, R = p.cg * p.kh * p.kw;
    for (i64 i = blockIdx.x; i < p.n * p.o * p.ho * p.wo; i += gridDim.x) {
        i64 xo = i % p.wo, t = i / p.wo;
        i64 yo = t % p.ho; t /= p.ho;
        i64 oc = t % p.o, n = t / p.o;
        i64 g = oc / og;
        A acc = 0;
        // 32-bit index arithmetic in the inner loop (the caller checks that the sizes fit)
        const unsigned kw = (unsigned)p.kw, kh = (unsigned)p.kh;
        const int y0 = (int)(yo * p.sh - p.ph), x0 = (int)(xo * p.sw - p.pw);
        const int dh = (int)p.dh, dw = (int)p.dw, h = (int)p.h, w = (int)p.w;
        const T* xb = x + (n * p.c + g * p.cg) * p.h * p.w;
        const T* wb = wt + oc * R;
        for (unsigned r = threadIdx.x; r < (unsigned)R; r += blockDim.x) {
            unsigned kx = r % kw, q = r / kw;
            unsigned ky = q % kh, ci = q / kh;
            int iy = y0 + (int)ky * dh, ix = x0 + (int)kx * dw;
            if (iy >= 0 && iy < h && ix >= 0 && ix < w)
                acc += (A)xb[((int)ci * h + iy) * w + ix] * (A)wb[r];
        }
        sh[threadIdx.x] = acc;
        __syncthreads();
        for (int s = blockDim.x / 2; s > 0; s >>= 1) {
            if (threadIdx.x < s) sh[threadIdx.x] += sh[threadIdx.x + s];
            __syncthreads();
        }
        if (threadIdx.x == 0) out[i] = (T)sh[0];
        __syncthreads();
    }
}

// Philox-4x32-10, key (seed, stream), counter (j, j >> 32, step, 0): element i is word i % 4 of
// block i / 4 (lamina_core::rng).
__device__ void random_bits_t(int* out, i64 n, const int* key, unsigned stream) {
    GRID_LOOP(j, (n + 3) / 4) {
        unsigned c0 = (unsigned)j, c1 = (unsigned)((u64)j >> 32), c2 = (unsigned)key[1], c3 = 0;
        unsigned k0 = (unsigned)key[0], k1 = stream;
        for (int r = 0; r < 10; ++r) {
            if (r > 0) { k0 += 0x9E3779B9u; k1 += 0xBB67AE85u; }
            u64 p0 = (u64)0xD2511F53u * c0;
            u64 p1 = (u64)0xCD9E8D57u * c2;
            unsigned n0 = (unsigned)(p1 >> 32) ^ c1 ^ k0;
            unsigned n1 = (unsigned)p1;
            unsigned n2 = (unsigned)(p0 >> 32) ^ c3 ^ k1;
            unsigned n3 = (unsigned)p0;
            c0 = n0; c1 = n1; c2 = n2; c3 = n3;
        }
        unsigned words[4] = {c0, c1, c2, c3};
        for (int w = 0; w < 4; ++w) {
            i64 i = j * 4 + w;
            if (i < n) out[i] = (int)words[w];
        }
    }
}

// ---- GEMMs inside a segment (segment.rs) ----
// C[b] (M×N, dense) = A[b]·B[b]: A's element (m, k) at a + b·SA + m·AM + k·AK, B's (k, n) at
// b + b·SB + k·BK + n·BN. Every thread of the segment's block calls these together, so the loops
// that hold a __syncthreads() are block-uniform.

// R consecutive values from shared memory in as few loads as their alignment allows (the
// callers keep R-aligned offsets in rows whose length is a multiple of 4).
template <typename T, int R> __device__ __forceinline__ void ld_row(const T* p, T (&v)[R]) {
    if constexpr (sizeof(T) == 4 && R == 4) {
        const float4 q = *reinterpret_cast<const float4*>(p);
        v[0] = q.x; v[1] = q.y; v[2] = q.z; v[3] = q.w;
    } else if constexpr (sizeof(T) == 4 && R == 2) {
        const float2 q = *reinterpret_cast<const float2*>(p);
        v[0] = q.x; v[1] = q.y;
    } else if constexpr (sizeof(T) == 8 && R % 2 == 0) {
#pragma unroll
        for (int r = 0; r < R; r += 2) {
            const double2 q = *reinterpret_cast<const double2*>(p + r);
            v[r] = q.x; v[r + 1] = q.y;
        }
    } else {
#pragma unroll
        for (int r = 0; r < R; ++r) v[r] = p[r];
    }
}

// Stages rows k0 .. k0 + KC of an operand as a [KC][stride] k-major chunk: `x(i, k)` at
// x + i·XI + k·XK for i < I (zero past K). Neighbouring threads read neighbouring addresses of the
// source: along i, or along k when k is its contiguous axis (XK == 1; then the shared stores of a
// warp collide a few ways, which costs far less than a warp's loads touching 32 cache lines).
// Each thread loads U items before it stores any (`__restrict__` and this order let the loads of
// a round overlap instead of each waiting for the last store).
template <typename T, int I, int K, int KC, i64 XI, i64 XK>
__device__ __forceinline__ void seg_stage(T* __restrict__ dst, int stride, const T* __restrict__ x, int k0) {
    constexpr int ITEMS = KC * I, U = 8;
    constexpr bool KFAST = XK == 1 && XI != 1;
    for (int base = threadIdx.x; base < ITEMS; base += U * blockDim.x) {
        T v[U];
#pragma unroll
        for (int u = 0; u < U; ++u) {
            const int idx = base + u * blockDim.x;
            const int i = KFAST ? idx / KC : idx % I, kk = KFAST ? idx % KC : idx / I;
            v[u] = idx < ITEMS && k0 + kk < K ? x[(i64)i * XI + (i64)(k0 + kk) * XK] : T(0);
        }
#pragma unroll
        for (int u = 0; u < U; ++u) {
            const int idx = base + u * blockDim.x;
            const int i = KFAST ? idx / KC : idx % I, kk = KFAST ? idx % KC : idx / I;
            if (idx < ITEMS) dst[kk * stride + i] = v[u];
        }
    }
}

// Stages rows k0 .. k0 + KC of an operand whose contiguous axis is k as [I][ld] rows (k
// contiguous in shared memory too): reads and stores of a warp both hit neighbouring addresses.
template <typename T, int I, int K, int KC, i64 XI>
__device__ __forceinline__ void seg_stage_rows(T* __restrict__ dst, int ld, const T* __restrict__ x, int k0) {
    constexpr int ITEMS = KC * I, U = 8;
    for (int base = threadIdx.x; base < ITEMS; base += U * blockDim.x) {
        T v[U];
#pragma unroll
        for (int u = 0; u < U; ++u) {
            const int idx = base + u * blockDim.x;
            const int i = idx / KC, kk = idx % KC;
            v[u] = idx < ITEMS && k0 + kk < K ? x[(i64)i * XI + k0 + kk] : T(0);
        }
#pragma unroll
        for (int u = 0; u < U; ++u) {
            const int idx = base + u * blockDim.x;
            if (idx < ITEMS) dst[(idx / KC) * ld + idx % KC] = v[u];
        }
    }
}

// One block's GEMM for small operands: chunks of KC values of k of A and B are staged in shared
// memory by all threads at once (one memory round trip per chunk); thread t adds micro-tile
// t % TILES (RM × RN outputs, each k's RM values of A and RN of B read as vectors) over every
// KG-th k from t / TILES, so KG groups of threads share the k range; the groups' partial sums
// meet in shared memory, added in group order (the same bits every run).
// `sh` holds max(KC × (MS + NS), KG × MT·RM × NT·RN) values (MS, NS: padded tile extents).
template <typename T, i64 BATCH, int M, int N, int K, i64 SA, i64 AM, i64 AK, i64 SB, i64 BK, i64 BN, int KC, int RM, int RN, int KG>
__device__ void seg_gemm_s(T* __restrict__ c, const T* a, const T* b, T* sh) {
    constexpr int MT = (M + RM - 1) / RM, NT = (N + RN - 1) / RN, TILES = MT * NT;
    constexpr int MS = (MT * RM + 3) / 4 * 4, NS = (NT * RN + 3) / 4 * 4;
    constexpr int OUTS = TILES * RM * RN;
    T* sa = sh;            // [KC][MS]
    T* sb = sh + KC * MS;  // [KC][NS]
    const int tid = threadIdx.x;
    const int tile = tid % TILES, kg = tid / TILES;
    const bool active = kg < KG;
    const int m0 = (tile / NT) * RM, n0 = (tile % NT) * RN;
    for (i64 bi = blockIdx.x; bi < BATCH; bi += gridDim.x) {
        T acc[RM][RN];
#pragma unroll
        for (int r = 0; r < RM; ++r)
#pragma unroll
            for (int j = 0; j < RN; ++j) acc[r][j] = T(0);
        for (int k0 = 0; k0 < K; k0 += KC) {
            seg_stage<T, M, K, KC, AM, AK>(sa, MS, a + bi * SA, k0);
            seg_stage<T, N, K, KC, BN, BK>(sb, NS, b + bi * SB, k0);
            __syncthreads();
            if (active) {
#pragma unroll 4
                for (int kk = kg; kk < KC; kk += KG) {
                    T av[RM], bv[RN];
                    ld_row<T, RM>(sa + kk * MS + m0, av);
                    ld_row<T, RN>(sb + kk * NS + n0, bv);
#pragma unroll
                    for (int r = 0; r < RM; ++r)
#pragma unroll
                        for (int j = 0; j < RN; ++j) acc[r][j] += av[r] * bv[j];
                }
            }
            __syncthreads();
        }
        if (KG == 1) {
            if (active) {
#pragma unroll
                for (int r = 0; r < RM; ++r)
#pragma unroll
                    for (int j = 0; j < RN; ++j)
                        if (m0 + r < M && n0 + j < N) c[bi * M * N + (i64)(m0 + r) * N + n0 + j] = acc[r][j];
            }
        } else {
            // partial sums as [KG][RM][RN][tile] (neighbouring threads, neighbouring banks), then
            // each output summed over the groups in order
            if (active) {
#pragma unroll
                for (int r = 0; r < RM; ++r)
#pragma unroll
                    for (int j = 0; j < RN; ++j) sh[((kg * RM + r) * RN + j) * TILES + tile] = acc[r][j];
            }
            __syncthreads();
            for (int o = tid; o < OUTS; o += blockDim.x) {
                const int t = o % TILES, r = o / (TILES * RN), j = (o / TILES) % RN;
                const int m = (t / NT) * RM + r, n = (t % NT) * RN + j;
                T sum = sh[o];
#pragma unroll
                for (int g = 1; g < KG; ++g) sum += sh[g * OUTS + o];
                if (m < M && n < N) c[bi * M * N + (i64)m * N + n] = sum;
            }
            __syncthreads();
        }
    }
}

// f32 → TF32: the 10 mantissa bits the tensor cores read, rounded to nearest (ties away from zero).
__device__ __forceinline__ unsigned to_tf32(float x) {
    unsigned r;
    asm("cvt.rna.tf32.f32 %0, %1;" : "=r"(r) : "f"(x));
    return r;
}

// One block's TF32 GEMM on the tensor cores (f32 operands and sums). Each chunk of KC values of
// k is staged in shared memory in the operand's own layout: an operand whose contiguous axis is
// k as rows [i][k] (row length ≡ 4 mod 32), another as [k][i] (≡ 8 mod 32), so staging reads and
// writes neighbouring addresses and a warp's fragment loads hit 32 banks either way. A warp
// takes a 16 × 8·WN band of C (WN mma.sync m16n8k8 tiles sharing the A fragment) over every
// KG-th 8-wide step of k; KG > 1 groups add their partial sums in shared memory in order.
// `sh` holds max(A chunk + B chunk, KG × MP × NP) floats (sized the same way in segment.rs).
template <int M, int N, int KC, int WN, bool AROW, bool BROW> struct SegTc {
    static constexpr int MB = (M + 15) / 16, NB = (N + 8 * WN - 1) / (8 * WN), WT = MB * NB;
    static constexpr int MP = MB * 16, NP = NB * 8 * WN;
    static constexpr int MS = (MP + 23) / 32 * 32 + 8, NS = (NP + 23) / 32 * 32 + 8;
    static constexpr int LD = (KC + 27) / 32 * 32 + 4;
    static constexpr int A_FLOATS = AROW ? MP * LD : KC * MS, B_FLOATS = BROW ? NP * LD : KC * NS;
};

template <i64 BATCH, int M, int N, int K, i64 SA, i64 AM, i64 AK, i64 SB, i64 BK, i64 BN, int KC, int WN, int KG>
__device__ void seg_gemm_tc(float* __restrict__ c, const float* a, const float* b, float* sh) {
    constexpr bool AROW = AK == 1 && AM != 1, BROW = BK == 1 && BN != 1;
    typedef SegTc<M, N, KC, WN, AROW, BROW> L;
    constexpr int NB = L::NB, WT = L::WT, MP = L::MP, NP = L::NP, MS = L::MS, NS = L::NS, LD = L::LD;
    float* sa = sh;
    float* sb = sh + L::A_FLOATS;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    const int wt = warp % WT, kg = warp / WT;
    const bool active = kg < KG;
    const int m0 = (wt / NB) * 16, n0 = (wt % NB) * 8 * WN;
    // element (m, k) of the A chunk and (k, n) of the B chunk
    auto at = [&](int m, int k) { return AROW ? sa[m * LD + k] : sa[k * MS + m]; };
    auto bt = [&](int k, int n) { return BROW ? sb[n * LD + k] : sb[k * NS + n]; };
    for (i64 bi = blockIdx.x; bi < BATCH; bi += gridDim.x) {
        float acc[WN][4];
#pragma unroll
        for (int w = 0; w < WN; ++w)
#pragma unroll
            for (int q = 0; q < 4; ++q) acc[w][q] = 0.0f;
        for (int k0 = 0; k0 < K; k0 += KC) {
            if constexpr (AROW) seg_stage_rows<float, M, K, KC, AM>(sa, LD, a + bi * SA, k0);
            else seg_stage<float, M, K, KC, AM, AK>(sa, MS, a + bi * SA, k0);
            if constexpr (BROW) seg_stage_rows<float, N, K, KC, BN>(sb, LD, b + bi * SB, k0);
            else seg_stage<float, N, K, KC, BN, BK>(sb, NS, b + bi * SB, k0);
            __syncthreads();
            if (active) {
#pragma unroll 2
                for (int kb = kg * 8; kb < KC; kb += 8 * KG) {
                    const unsigned a0 = to_tf32(at(m0 + g, kb + t)), a1 = to_tf32(at(m0 + g + 8, kb + t));
                    const unsigned a2 = to_tf32(at(m0 + g, kb + t + 4)), a3 = to_tf32(at(m0 + g + 8, kb + t + 4));
#pragma unroll
                    for (int w = 0; w < WN; ++w) {
                        const int n = n0 + w * 8 + g;
                        const unsigned b0 = to_tf32(bt(kb + t, n)), b1 = to_tf32(bt(kb + t + 4, n));
                        asm volatile(
                            "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
                            : "+f"(acc[w][0]), "+f"(acc[w][1]), "+f"(acc[w][2]), "+f"(acc[w][3])
                            : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
                    }
                }
            }
            __syncthreads();
        }
        // this lane's outputs: rows m0 + g (+ 8), columns n0 + 8w + 2t (+ 1)
        if (KG == 1) {
            if (active) {
#pragma unroll
                for (int w = 0; w < WN; ++w)
#pragma unroll
                    for (int q = 0; q < 4; ++q) {
                        const int m = m0 + g + (q >> 1) * 8, n = n0 + w * 8 + 2 * t + (q & 1);
                        if (m < M && n < N) c[bi * M * N + (i64)m * N + n] = acc[w][q];
                    }
            }
        } else {
            if (active) {
#pragma unroll
                for (int w = 0; w < WN; ++w)
#pragma unroll
                    for (int q = 0; q < 4; ++q) {
                        const int m = m0 + g + (q >> 1) * 8, n = n0 + w * 8 + 2 * t + (q & 1);
                        sh[(kg * MP + m) * NP + n] = acc[w][q];
                    }
            }
            __syncthreads();
            for (int o = threadIdx.x; o < MP * NP; o += blockDim.x) {
                const int m = o / NP, n = o % NP;
                float sum = sh[o];
#pragma unroll
                for (int q = 1; q < KG; ++q) sum += sh[q * MP * NP + o];
                if (m < M && n < N) c[bi * M * N + (i64)m * N + n] = sum;
            }
            __syncthreads();
        }
    }
}

#define INST_ALL(S, T) \
    extern "C" __global__ void copy_##S(T* out, const T* src, i64 n, Walk w) { copy_t<T>(out, src, n, w); } \
    extern "C" __global__ void scatter_##S(T* out, const T* src, i64 n, Walk w) { scatter_t<T>(out, src, n, w); } \
    extern "C" __global__ void fill_##S(T* out, i64 n, double v) { fill_t<T>(out, n, from_f64_##S(v)); } \
    extern "C" __global__ void gather_##S(T* out, const T* src, const int* idx, i64 pre, i64 dim, i64 post, i64 k) { gather_t<T>(out, src, idx, pre, dim, post, k); }

#define INST_NUM_A(S, T) \
    extern "C" __global__ void iota_##S(T* out, i64 n, i64 dim, i64 inner) { iota_t<T>(out, n, dim, inner); } \
    extern "C" __global__ void reduce_sum_thread_##S(T* out, const T* src, i64 n_out, i64 n_red, Walk keep, Walk red) { reduce_sum_thread<T>(out, src, n_out, n_red, keep, red); } \
    extern "C" __global__ void reduce_max_thread_##S(T* out, const T* src, i64 n_out, i64 n_red, Walk keep, Walk red) { reduce_max_thread<T>(out, src, n_out, n_red, keep, red); }

#define INST_NUM_C(S, T) \
    extern "C" __global__ void reduce_sum_block_##S(T* out, const T* src, i64 n_out, i64 n_red, Walk keep, Walk red) { reduce_sum_block<T>(out, src, n_out, n_red, keep, red); } \
    extern "C" __global__ void reduce_max_block_##S(T* out, const T* src, i64 n_out, i64 n_red, Walk keep, Walk red) { reduce_max_block<T>(out, src, n_out, n_red, keep, red); }

#define INST_NUM_B(S, T) \
    extern "C" __global__ void reduce_sum_cols_##S(T* out, const T* src, i64 n_out, i64 n_red, Walk keep, Walk red) { reduce_sum_cols<T>(out, src, n_out, n_red, keep, red); } \
    extern "C" __global__ void reduce_max_cols_##S(T* out, const T* src, i64 n_out, i64 n_red, Walk keep, Walk red) { reduce_max_cols<T>(out, src, n_out, n_red, keep, red); } \
    extern "C" __global__ void argmax_##S(int* out, const T* src, i64 outer, i64 dim, i64 inner) { argmax_t<T>(out, src, outer, dim, inner); } \
    extern "C" __global__ void scatter_add_##S(T* out, const T* upd, const int* idx, i64 pre, i64 dim, i64 post, i64 k) { scatter_add_t<T>(out, upd, idx, pre, dim, post, k); }

// The kernels fall into parts that are compiled in parallel, each as this file with
// `#define LAMINA_PART k` in front (`dev.rs`, `GENERIC_PARTS`); without it every kernel is compiled.
#ifndef LAMINA_PART
#define LAMINA_ALL 1
#define LAMINA_PART -1
#else
#define LAMINA_ALL 0
#endif

#if LAMINA_ALL || LAMINA_PART == 0
INST_ALL(f32, float)
#endif

#if LAMINA_ALL || LAMINA_PART == 1
INST_ALL(f64, double)
#endif

#if LAMINA_ALL || LAMINA_PART == 2
INST_ALL(i32, int)
#endif

#if LAMINA_ALL || LAMINA_PART == 3
INST_ALL(u8, unsigned char)
extern "C" __global__ void iota_u8(unsigned char* out, i64 n, i64 dim, i64 inner) { iota_t<unsigned char>(out, n, dim, inner); }
extern "C" __global__ void argmax_u8(int* out, const unsigned char* src, i64 outer, i64 dim, i64 inner) { argmax_t<unsigned char>(out, src, outer, dim, inner); }
#endif

#if LAMINA_ALL || LAMINA_PART == 4
INST_NUM_A(f32, float)
#endif

#if LAMINA_ALL || LAMINA_PART == 5
INST_NUM_C(f32, float)
#endif

#if LAMINA_ALL || LAMINA_PART == 6
INST_NUM_B(f32, float)
#endif

#if LAMINA_ALL || LAMINA_PART == 7
INST_NUM_A(f64, double)
#endif

#if LAMINA_ALL || LAMINA_PART == 8
INST_NUM_C(f64, double)
#endif

#if LAMINA_ALL || LAMINA_PART == 9
INST_NUM_B(f64, double)
#endif

#if LAMINA_ALL || LAMINA_PART == 10
INST_NUM_A(i32, int)
INST_NUM_C(i32, int)
#endif

#if LAMINA_ALL || LAMINA_PART == 11
INST_NUM_B(i32, int)
#endif

#if LAMINA_ALL || LAMINA_PART == 12
extern "C" __global__ void conv_block_f32(float* out, const float* x, const float* w, ConvP p) { conv_block_t<float>(out, x, w, p); }
extern "C" __global__ void conv_block_f64(double* out, const double* x, const double* w, ConvP p) { conv_block_t<double>(out, x, w, p); }
#endif

#if LAMINA_ALL || LAMINA_PART == 3
extern "C" __global__ void random_bits(int* out, i64 n, const int* key, unsigned stream) {
    random_bits_t(out, n, key, stream);
}
#endif
