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

template <typename T> __device__ void copy_t(T* out, const T* src, i64 n, Walk w) {
    GRID_LOOP(i, n) { out[i] = src[walk_at(w, i)]; }
}
template <typename T> __device__ void scatter_t(T* out, const T* src, i64 n, Walk w) {
    GRID_LOOP(i, n) { out[walk_at(w, i)] = src[i]; }
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
