// CPU kernels for the recurrences and the attention core of trials/ops: plain C entry points
// over raw pointers, loaded with ctypes by trials/ops/native/__init__.py (no torch headers: a
// build takes seconds, and any C++17 compiler will do).
//
// Why a compiled loop beats the tensor code here: the state of one sequence (N x D floats for
// a Mamba-1 layer, a few KiB) fits in L1 cache, so walking time step by step with the state
// held in cache touches each input once. The tensor formulations materialise (B, T, N, D)
// blocks per chunk and are bound by memory traffic instead.
//
// Layouts (all contiguous, row-major):
//   selective scan: x, dt, y (B, L, D); At (N, D), the transpose of A; Bm, Cm (B, L, N);
//                   states (B, N, D); entry (B, K, N, D) with K = ceil(L / chunk).
//                   Dskip (D,), z (B, L, D): the fused output (y + D x) * silu(z).
//   ssd (Mamba-2):  x, y (B, L, H, P); dt (B, L, H); A, Dskip (H,); Bm, Cm (B, L, G, N), head h
//                   reading group h / (H / G); states (B, H, P, N); entry (B, K, H, P, N).
//   linear scan:    a, b, h (B, L, C); h0 (B, C).
//   causal conv:    x, y (B, L, C); history (B, K-1, C), the inputs before x; wt (K, C), the
//                   transpose of the (C, K) weight; bias (C,).
//   around the GEMMs (one pass each way where PyTorch takes several): the silu gate and
//                   softplus over n values; RMSNorm over (rows, width); RoPE over
//                   x (B, L, heads, hd) with (L, rd/2) tables; Mamba-1's step size
//                   softplus(x W^T + b) over x (rows, R) at a row stride, W^T (R, D);
//                   the block-diagonal linear over x (rows, H I) with W (H, I, J).
//   attention:      q (B, H, L, hd), k, v (B, KV, L, hd) at any strides with the head dim
//                   contiguous (the projections' transposed layout); lse (B, H, L).
// Loops over D (or C) are innermost and carry no dependence, so the compiler vectorises them;
// the batch (or the rows, or blocks of values) is split over `threads` OpenMP threads (1: no
// threading at all).

#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

#ifdef __AVX512F__
#include <immintrin.h>
#endif

#ifdef _OPENMP
#include <omp.h>
#endif

namespace {

// exp for float, vectorisable: x = n ln2 + r, |r| <= ln2 / 2, e^r = 1 + r + r^2 q(r) with q
// of degree 4, fitted for the least maximum relative error on that range (max error 1.0 ulp
// against the double exp, as Cephes' degree-5 q had; one FMA fewer: the selective scan's
// forward 1.07x), 2^n added to the polynomial's exponent bits. The rounding constant leaves n
// in the low bits of x log2(e) + 1.5 2^23, so no float-to-int conversion and no product with a
// built power of 2 is needed (the selective scan: 1.09x forward, 1.06x backward). Inputs below
// -86.5 (where n + the polynomial's exponent could leave the normal range) give exactly 0, the
// limit the scans rely on; e^-86.5 is 2.6e-38. NaN stays NaN.
inline float exp_fast(float x) {
  const float lo = -86.5f;
  const float hi = 88.0f;
  const float xc = x < lo ? lo : (x > hi ? hi : x);
  const float round_magic = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer
  const float shifted = xc * 1.44269504088896341f + round_magic;
  const float fn = shifted - round_magic;
  float r = xc - fn * 0.693359375f;
  r = r - fn * -2.12194440e-4f;
  float p = 1.38146116e-3f;
  p = p * r + 8.36871006e-3f;
  p = p * r + 4.16683890e-2f;
  p = p * r + 1.66665211e-1f;
  p = p * r + 4.99999940e-1f;
  p = p * r * r + r + 1.0f;  // in [0.7, 1.5): adding n to its exponent stays normal
  uint32_t n_bits, p_bits;
  std::memcpy(&n_bits, &shifted, sizeof n_bits);
  std::memcpy(&p_bits, &p, sizeof p_bits);
  p_bits += n_bits << 23;  // the magic's own bits shift out of the word
  float result;
  std::memcpy(&result, &p_bits, sizeof result);
  return x < lo ? 0.0f : result;
}

inline float exp_of(float x) { return exp_fast(x); }
inline double exp_of(double x) { return std::exp(x); }

// log for positive normal floats, vectorisable: y = m 2^e with m in [sqrt(1/2), sqrt(2)),
// log(m) by Cephes' degree-9 polynomial in m - 1 (max relative error about 2 ulp).
inline float log_fast(float y) {
  int32_t bits;
  std::memcpy(&bits, &y, sizeof bits);
  float e = static_cast<float>(((bits >> 23) & 0xff) - 126);
  bits = (bits & 0x007fffff) | 0x3f000000;  // the mantissa as a float in [0.5, 1)
  float m;
  std::memcpy(&m, &bits, sizeof m);
  const bool low = m < 0.707106781186547524f;
  e = low ? e - 1.0f : e;
  const float x = low ? m + m - 1.0f : m - 1.0f;
  const float z = x * x;
  float p = 7.0376836292e-2f;
  p = p * x - 1.1514610310e-1f;
  p = p * x + 1.1676998740e-1f;
  p = p * x - 1.2420140846e-1f;
  p = p * x + 1.4249322787e-1f;
  p = p * x - 1.6668057665e-1f;
  p = p * x + 2.0000714765e-1f;
  p = p * x - 2.4999993993e-1f;
  p = p * x + 3.3333331174e-1f;
  p = p * x * z - 2.12194440e-4f * e - 0.5f * z;
  return x + p + 0.693359375f * e;
}

// log(1 + u) for u >= 0 to full relative precision for small u as well: log(w) u / (w - 1)
// with w = 1 + u rounded, which cancels w's rounding error (Goldberg's trick).
inline float log1p_of(float u) {
  const float w = 1.0f + u;
  const float d = w - 1.0f;
  const float q = log_fast(w) * (u / (d == 0.0f ? 1.0f : d));  // no branch: vectorises
  return d == 0.0f ? u : q;
}
inline double log1p_of(double u) { return std::log1p(u); }

inline float log_of(float y) { return log_fast(y); }  // y positive and normal
inline double log_of(double y) { return std::log(y); }

template <typename T>
inline T sigmoid(T x) { return T(1) / (T(1) + exp_of(-x)); }

template <typename T>
inline void copy_or_zero(T* dst, const T* src, int64_t n) {  // src may be null: zeros
  if (src) std::memcpy(dst, src, sizeof(T) * n);
  else std::memset(dst, 0, sizeof(T) * n);
}

inline int thread_index() {  // this thread's number inside an OpenMP team (0 outside one)
#ifdef _OPENMP
  return omp_get_thread_num();
#else
  return 0;
#endif
}

inline int team_size() {  // threads in the current OpenMP team (1 outside one)
#ifdef _OPENMP
  return omp_get_num_threads();
#else
  return 1;
#endif
}

inline int64_t chunk_end(int64_t start, int64_t chunk, int64_t length) {
  return start + chunk < length ? start + chunk : length;
}

// Per-thread work memory, reused across the sequences a thread walks. Aligned to the cache
// line, as torch aligns tensors: malloc's 16-byte alignment splits every 64-byte vector access
// across two lines, which made the selective scan's backward pass 1.28x slower.
template <typename T>
struct Scratch {
  std::vector<T> buf;
  T* get(size_t n) {
    constexpr size_t line = 64;
    constexpr size_t pad = line / sizeof(T);
    if (buf.size() < n + pad) buf.resize(n + pad);
    const auto misalignment = reinterpret_cast<uintptr_t>(buf.data()) % line;
    return buf.data() + (misalignment ? (line - misalignment) / sizeof(T) : 0);
  }
};

template <typename T>
constexpr int64_t kLanes = 64 / sizeof(T);  // one 512-bit vector register

// The sum of one vector's lanes: AVX-512's shuffle tree where the compiler targets it. GCC
// ends an `omp simd reduction`, and compiles a tree written over an array, as a chain of
// dependent scalar adds through the stack: in the SSD's backward pass that chain was 28% of
// the time.
template <typename T>
inline T sum_lanes(const T* lanes) {
  T tree[kLanes<T>];
  for (int64_t l = 0; l < kLanes<T>; ++l) tree[l] = lanes[l];
  for (int64_t half = kLanes<T> / 2; half > 0; half /= 2)
    for (int64_t l = 0; l < half; ++l) tree[l] += tree[l + half];
  return tree[0];
}

#ifdef __AVX512F__
template <>
inline float sum_lanes<float>(const float* lanes) {
  return _mm512_reduce_add_ps(_mm512_loadu_ps(lanes));
}
template <>
inline double sum_lanes<double>(const double* lanes) {
  return _mm512_reduce_add_pd(_mm512_loadu_pd(lanes));
}
#endif

// sums[i] = the sum of row i's lanes, for kLanes rows of one vector each (row i at
// rows + i * kLanes): a transposed reduction. With AVX-512, 15 additions of shuffled halves
// and one permute give all 16 sums in one register, where a horizontal sum per row is a
// chain of four shuffles and four additions each.
template <typename T>
inline void sum_rows(const T* rows, T* sums) {
  for (int64_t i = 0; i < kLanes<T>; ++i) sums[i] = sum_lanes(rows + i * kLanes<T>);
}

#ifdef __AVX512F__
template <>
inline void sum_rows<float>(const float* rows, float* sums) {
  __m512 v[16];
  for (int i = 0; i < 16; ++i) v[i] = _mm512_loadu_ps(rows + 16 * i);
  // each step halves the vectors: two rows' partial sums packed into one (128-bit lanes, then
  // pairs of values, then values), so rows i and i + 8 share a vector after the first step
  for (int i = 0; i < 8; ++i)
    v[i] = _mm512_add_ps(_mm512_shuffle_f32x4(v[i], v[i + 8], _MM_SHUFFLE(1, 0, 1, 0)),
                         _mm512_shuffle_f32x4(v[i], v[i + 8], _MM_SHUFFLE(3, 2, 3, 2)));
  for (int i = 0; i < 4; ++i)
    v[i] = _mm512_add_ps(_mm512_shuffle_f32x4(v[i], v[i + 4], _MM_SHUFFLE(2, 0, 2, 0)),
                         _mm512_shuffle_f32x4(v[i], v[i + 4], _MM_SHUFFLE(3, 1, 3, 1)));
  for (int i = 0; i < 2; ++i)
    v[i] = _mm512_add_ps(_mm512_shuffle_ps(v[i], v[i + 2], _MM_SHUFFLE(1, 0, 1, 0)),
                         _mm512_shuffle_ps(v[i], v[i + 2], _MM_SHUFFLE(3, 2, 3, 2)));
  const __m512 mixed = _mm512_add_ps(_mm512_shuffle_ps(v[0], v[1], _MM_SHUFFLE(2, 0, 2, 0)),
                                     _mm512_shuffle_ps(v[0], v[1], _MM_SHUFFLE(3, 1, 3, 1)));
  // the steps leave row i's sum at position order[i]
  const __m512i order = _mm512_setr_epi32(0, 2, 1, 3, 8, 10, 9, 11, 4, 6, 5, 7, 12, 14, 13, 15);
  _mm512_storeu_ps(sums, _mm512_permutexvar_ps(order, mixed));
}
#endif

// The sum of term(i) over i < n: whole vectors by lane, summed once with `sum_lanes`, then the
// remainder. `term` may also update memory at i (it runs once per i, vectorised).
template <typename T, typename Term>
inline T sum_by_lanes(int64_t n, Term term) {
  constexpr int64_t W = kLanes<T>;
  // the remainder's start computed rather than carried out of the vector loop: with n known at
  // compile time, GCC otherwise warns of an overflowing iteration in the (dead) remainder loop
  const int64_t whole = n - n % W;
  T lanes[W] = {};
  for (int64_t i = 0; i < whole; i += W) {
#pragma omp simd
    for (int64_t l = 0; l < W; ++l) lanes[l] += term(i + l);
  }
  T rest = 0;
  for (int64_t i = whole; i < n; ++i) rest += term(i);
  return sum_lanes(lanes) + rest;
}

template <int64_t N>
using Const = std::integral_constant<int64_t, N>;

// Walks [0, n) in blocks of Block lanes, then the remainder: block(Const<Block>, width, first,
// start, w) with width Const<Block> for a whole block and Const<0> for the remainder (w lanes,
// fewer than Block), first std::true_type for the block at 0 only. The backward passes'
// adjoint steps take Block and width as template arguments, so that a whole block's
// accumulators stay in registers, and `first` writes a running sum instead of adding to it.
template <int64_t Block, typename Body>
inline void in_blocks(int64_t n, Body block) {
  if (n < Block) return block(Const<Block>{}, Const<0>{}, std::true_type{}, 0, n);
  block(Const<Block>{}, Const<Block>{}, std::true_type{}, 0, Block);
  int64_t start = Block;
  for (; start + Block <= n; start += Block)
    block(Const<Block>{}, Const<Block>{}, std::false_type{}, start, Block);
  if (start < n) block(Const<Block>{}, Const<0>{}, std::false_type{}, start, n - start);
}

// x[i] <- exp(x[i]) for i < n (-inf and anything below -86.5 give 0, NaN stays NaN): the
// exps of the scans' decays and of attention's weights, where exp is most of the work.
template <typename T>
inline void exp_in_place(T* x, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) x[i] = exp_of(x[i]);
}

#ifdef __AVX512F__
// exp of 16 floats with the table 2^(j/16), j < 16, held in one register and read with one
// permute: x = (16 n + j) ln2 / 16 + r with |r| <= ln2 / 32, where e^r needs only
// 1 + r + r^2 (c2 + c3 r) (fitted for the least maximum relative error), so an exp is 10
// arithmetic instructions against exp_fast's 13, and the permute runs beside them. Max error
// 0.98 ulp against the double exp. GCC does not vectorise a table lookup in exp_fast as a
// permute (it leaves the loop scalar), hence the intrinsics. 2^n is built and multiplied in,
// so that a NaN stays NaN whatever its payload.
inline __m512 exp_lanes(__m512 x) {
  const __mmask16 keep = _mm512_cmp_ps_mask(x, _mm512_set1_ps(-86.5f), _CMP_NLT_UQ);
  const __m512 xc = _mm512_min_ps(_mm512_set1_ps(88.0f), x);  // min(88, NaN) is NaN
  const __m512 magic = _mm512_set1_ps(12582912.0f);  // 1.5 * 2^23, as in exp_fast
  const __m512 shifted = _mm512_fmadd_ps(xc, _mm512_set1_ps(23.0831206542234f), magic);
  const __m512 k = _mm512_sub_ps(shifted, magic);  // round(16 x / ln2) = 16 n + j
  __m512 r = _mm512_fnmadd_ps(k, _mm512_set1_ps(0.693359375f / 16), xc);
  r = _mm512_fnmadd_ps(k, _mm512_set1_ps(-2.12194440e-4f / 16), r);
  const __m512 table = _mm512_setr_ps(
      1.000000000f, 1.044273734f, 1.090507746f, 1.138788581f, 1.189207077f, 1.241857767f,
      1.296839595f, 1.354255557f, 1.414213538f, 1.476826191f, 1.542210817f, 1.610490322f,
      1.681792855f, 1.756252170f, 1.834008098f, 1.915206552f);
  const __m512i bits = _mm512_castps_si512(shifted);  // j in the low 4 bits, n above them
  const __m512 t = _mm512_permutexvar_ps(bits, table);  // reads the low 4 bits only
  __m512 q = _mm512_fmadd_ps(_mm512_set1_ps(1.66667894e-1f), r, _mm512_set1_ps(5.00016153e-1f));
  q = _mm512_fmadd_ps(q, _mm512_mul_ps(r, r), r);
  const __m512 p = _mm512_fmadd_ps(t, q, t);  // 2^(j/16) e^r
  const __m512i exponent = _mm512_and_si512(_mm512_slli_epi32(bits, 19),
                                            _mm512_set1_epi32(int32_t(0xff800000u)));
  const __m512 two_n = _mm512_castsi512_ps(
      _mm512_add_epi32(exponent, _mm512_set1_epi32(0x3f800000)));  // n in [-125, 126]
  return _mm512_maskz_mul_ps(keep, p, two_n);
}

template <>
inline void exp_in_place<float>(float* x, int64_t n) {
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) _mm512_storeu_ps(x + i, exp_lanes(_mm512_loadu_ps(x + i)));
  if (i < n) {
    const __mmask16 rest = __mmask16((1u << (n - i)) - 1);
    _mm512_mask_storeu_ps(x + i, rest, exp_lanes(_mm512_maskz_loadu_ps(rest, x + i)));
  }
}
#endif

// ---------------------------------------------------------------------------------------------
// Mamba-1 selective scan.  h_t = exp(dt_t A) * h_{t-1} + (dt_t x_t) B_t^T,  y_t = h_t^T C_t.

// One step over channel lanes [d0, d0 + w): h <- exp(dt A) h + (dt x) B^T, y = h^T C. The
// output accumulates over n in registers, stored once (accumulating it in y_t itself is a load
// and a store per state element: 1.12-1.14x slower). Width > 0 fixes w at compile time (a full
// vector); 0 takes w_tail, the remainder of D.
template <typename T, int64_t Width>
inline void scan_step_lanes(T* h, const T* At, const T* dt_t, const T* dtx, const T* B_t,
                            const T* C_t, T* y_t, int64_t D, int64_t N, int64_t d0,
                            int64_t w_tail) {
  const int64_t w = Width > 0 ? Width : w_tail;
  T acc[kLanes<T>], a[kLanes<T>];
  for (int64_t l = 0; l < w; ++l) acc[l] = 0;
  for (int64_t n = 0; n < N; ++n) {
    const T Bn = B_t[n], Cn = C_t[n];
    const T* A_n = At + n * D + d0;
    T* h_n = h + n * D + d0;
#pragma omp simd
    for (int64_t l = 0; l < w; ++l) a[l] = dt_t[d0 + l] * A_n[l];
    exp_in_place(a, w);
#pragma omp simd
    for (int64_t l = 0; l < w; ++l) {
      const T v = a[l] * h_n[l] + dtx[d0 + l] * Bn;
      h_n[l] = v;
      acc[l] += v * Cn;
    }
  }
  for (int64_t l = 0; l < w; ++l) y_t[d0 + l] = acc[l];
}

template <typename T>
void selective_scan_fwd(const T* x, const T* dt, const T* At, const T* Bm, const T* Cm,
                        const T* Dskip, const T* z, const T* h0, T* y, T* out, T* final_state,
                        T* entry, int64_t batch,
                        int64_t length, int64_t D, int64_t N, int64_t chunk, int threads) {
  const int64_t K = (length + chunk - 1) / chunk;
#pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1)
  for (int64_t b = 0; b < batch; ++b) {
    T* h = final_state + b * N * D;  // the running state lives in the output buffer
    copy_or_zero(h, h0 ? h0 + b * N * D : nullptr, N * D);
    thread_local Scratch<T> scratch;
    T* dtx = scratch.get(D);
    for (int64_t t = 0; t < length; ++t) {
      if (t % chunk == 0) std::memcpy(entry + (b * K + t / chunk) * N * D, h, sizeof(T) * N * D);
      const T* dt_t = dt + (b * length + t) * D;
      const T* x_t = x + (b * length + t) * D;
      const T* B_t = Bm + (b * length + t) * N;
      const T* C_t = Cm + (b * length + t) * N;
      T* y_t = y + (b * length + t) * D;
#pragma omp simd
      for (int64_t d = 0; d < D; ++d) dtx[d] = dt_t[d] * x_t[d];
      constexpr int64_t W = kLanes<T>;
      int64_t d0 = 0;
      for (; d0 + W <= D; d0 += W)
        scan_step_lanes<T, W>(h, At, dt_t, dtx, B_t, C_t, y_t, D, N, d0, W);
      if (d0 < D) scan_step_lanes<T, 0>(h, At, dt_t, dtx, B_t, C_t, y_t, D, N, d0, D - d0);
      if (Dskip) {
#pragma omp simd
        for (int64_t d = 0; d < D; ++d) y_t[d] += Dskip[d] * x_t[d];
      }
      if (z) {  // keep y + D x for the backward pass, return it gated
        const T* z_t = z + (b * length + t) * D;
        T* out_t = out + (b * length + t) * D;
#pragma omp simd
        for (int64_t d = 0; d < D; ++d) out_t[d] = y_t[d] * z_t[d] * sigmoid(z_t[d]);
      }
    }
  }
}

// The backward step at t over a block of channel lanes [d0, d0 + w), every state row n in
// turn: the adjoint g <- a (g + C_n gy), dL/dA, and the sums over n of dL/d(dt x) and dL/d dt
// in registers, written out once per block as dL/dx and dL/d dt (not read and written once
// per row n as when n was the outer loop); dL/dC_t[n] and dL/dB_t[n] (sums over d) folded to
// one vector per row n in C_lanes and B_lanes (set by the first block, First, added to by the
// others), summed across lanes by the caller. Block is the lanes per block; Width = Block
// fixes w at compile time, 0 takes w_tail.
template <typename T>
struct ScanAdjointStep {
  const T *At, *cur, *a, *prev;  // At (N, D); the step's states, decays, previous states
  T *g, *gA;                     // (N, D) adjoint and dL/dA
  const T *dt_t, *x_t, *dtx, *gy_t, *Bm_t, *Cm_t, *Dskip;
  T *gx_t, *gdt_t, *gD;
  int64_t N, D;
};

template <typename T, int64_t Block, int64_t Width, bool First>
inline void scan_adjoint_lanes(const ScanAdjointStep<T>& r, int64_t d0, int64_t w_tail,
                               T* C_lanes, T* B_lanes) {
  constexpr int64_t V = kLanes<T>;
  const int64_t w = Width > 0 ? Width : w_tail;
  T gdtx[Block] = {}, gdt[Block] = {};
  for (int64_t n = 0; n < r.N; ++n) {
    const int64_t off = n * r.D + d0;
    const T Bn = r.Bm_t[n], Cn = r.Cm_t[n];
    T c_part[Block] = {}, b_part[Block] = {};  // lanes past w stay 0
#pragma omp simd
    for (int64_t l = 0; l < w; ++l) {
      const int64_t d = d0 + l;
      c_part[l] = r.cur[off + l] * r.gy_t[d];
      const T gn = r.g[off + l] + Cn * r.gy_t[d];  // dL/dh_t, all paths
      const T a = r.a[off + l];
      b_part[l] = gn * r.dtx[d];
      gdtx[l] += gn * Bn;
      const T s = gn * a * r.prev[off + l];  // dL/d(dt_t A) through the decay
      gdt[l] += s * r.At[off + l];
      r.gA[off + l] += s * r.dt_t[d];
      r.g[off + l] = a * gn;  // carried to step t-1
    }
    T* C_n = C_lanes + n * V;
    T* B_n = B_lanes + n * V;
#pragma omp simd
    for (int64_t l = 0; l < V; ++l) {
      T c = First ? T(0) : C_n[l], bb = First ? T(0) : B_n[l];
      for (int64_t v = 0; v < Block; v += V) c += c_part[v + l], bb += b_part[v + l];
      C_n[l] = c;
      B_n[l] = bb;
    }
  }
#pragma omp simd
  for (int64_t l = 0; l < w; ++l) {
    const int64_t d = d0 + l;
    T gx = gdtx[l] * r.dt_t[d];
    if (r.Dskip) {
      gx += r.gy_t[d] * r.Dskip[d];
      r.gD[d] += r.gy_t[d] * r.x_t[d];
    }
    r.gx_t[d] = gx;
    r.gdt_t[d] = gdt[l] + gdtx[l] * r.x_t[d];
  }
}

// All channels of one step, in blocks of two vectors where they divide D (the gradient sums
// of a block held in registers over all N rows; blocks of four: 1.1x slower), else of one
// vector and a remainder.
template <typename T>
inline void scan_adjoint_step(const ScanAdjointStep<T>& r, T* C_lanes, T* B_lanes) {
  constexpr int64_t V = kLanes<T>;
  const auto block = [&](auto lanes, auto width, auto first, int64_t d0, int64_t w) {
    scan_adjoint_lanes<T, lanes.value, width.value, first.value>(r, d0, w, C_lanes, B_lanes);
  };
  if (r.D % (2 * V) == 0) in_blocks<2 * V>(r.D, block);
  else in_blocks<V>(r.D, block);
}

// out[i] = the sum of row i's lanes for n rows of one vector each (row i at rows + i kLanes).
template <typename T>
inline void sum_each_row(const T* rows, int64_t n, T* out) {
  constexpr int64_t V = kLanes<T>;
  int64_t i = 0;
  for (; i + V <= n; i += V) sum_rows(rows + i * V, out + i);
  for (; i < n; ++i) out[i] = sum_lanes(rows + i * V);
}

// The backward pass walks each sequence's chunks in reverse: it recomputes the chunk's states
// from the entry state kept by the forward pass, with their decays, into chunk-sized buffers
// that stay in cache (so each exp is taken once), then runs the adjoint
// g_t = C_t gy_t + a_{t+1} g_{t+1} back through the chunk.
// grad_At_partial (B, N, D) and grad_D_partial (B, D) are per sequence, summed by the caller;
// with a gate z, y holds y + D x as the forward pass left it.
template <typename T>
void selective_scan_bwd(const T* x, const T* dt, const T* At, const T* Bm, const T* Cm,
                        const T* Dskip, const T* z, const T* y, const T* entry,
                        const T* grad_out, const T* grad_final, T* grad_x, T* grad_dt,
                        T* grad_At_partial, T* grad_B, T* grad_C, T* grad_D_partial, T* grad_z,
                        T* grad_h0,
                        int64_t batch, int64_t length, int64_t D, int64_t N, int64_t chunk,
                        int threads) {
  const int64_t K = (length + chunk - 1) / chunk;
  const int64_t ND = N * D;
#pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1)
  for (int64_t b = 0; b < batch; ++b) {
    thread_local Scratch<T> scratch;
    constexpr int64_t V = kLanes<T>;
    T* work = scratch.get(ND * (2 * chunk + 1) + 2 * D + 2 * N * V);
    T* g = work;                       // (N, D) adjoint carried backwards
    T* states = work + ND;             // (chunk, N, D) states of the current chunk
    T* decays = states + chunk * ND;   // (chunk, N, D) their decays exp(dt A)
    T* dtx = decays + chunk * ND;      // (D,)
    T* gy = dtx + D;                   // (D,) dL/d(y + D x) at step t
    T* C_lanes = gy + D;               // (N, kLanes) dL/dC_t, dL/dB_t by lane
    T* B_lanes = C_lanes + N * V;
    T* gA = grad_At_partial + b * ND;
    std::memset(gA, 0, sizeof(T) * ND);
    T* gD = grad_D_partial ? grad_D_partial + b * D : nullptr;
    if (gD) std::memset(gD, 0, sizeof(T) * D);
    copy_or_zero(g, grad_final ? grad_final + b * ND : nullptr, ND);
    for (int64_t k = K - 1; k >= 0; --k) {
      const int64_t start = k * chunk;
      const int64_t end = chunk_end(start, chunk, length);
      const T* h_entry = entry + (b * K + k) * ND;
      // recompute the chunk's states
      for (int64_t t = start; t < end; ++t) {
        const T* dt_t = dt + (b * length + t) * D;
        const T* x_t = x + (b * length + t) * D;
        const T* B_t = Bm + (b * length + t) * N;
        const T* prev = t == start ? h_entry : states + (t - start - 1) * ND;
        T* cur = states + (t - start) * ND;
        T* decay = decays + (t - start) * ND;
        for (int64_t n = 0; n < N; ++n) {
          const T Bn = B_t[n];
          const T* A_n = At + n * D;
          T* decay_n = decay + n * D;
#pragma omp simd
          for (int64_t d = 0; d < D; ++d) decay_n[d] = dt_t[d] * A_n[d];
          exp_in_place(decay_n, D);
#pragma omp simd
          for (int64_t d = 0; d < D; ++d)
            cur[n * D + d] = decay_n[d] * prev[n * D + d] + dt_t[d] * x_t[d] * Bn;
        }
      }
      // walk the chunk backwards
      for (int64_t t = end - 1; t >= start; --t) {
        const int64_t row = b * length + t;
        const T* dt_t = dt + row * D;
        const T* x_t = x + row * D;
        const T* B_t = Bm + row * N;
        const T* C_t = Cm + row * N;
        const T* go_t = grad_out + row * D;
        const T* gy_t = go_t;
        if (z) {  // through the gate: out = y * silu(z)
          const T* z_t = z + row * D;
          const T* y_t = y + row * D;
          T* gz_t = grad_z + row * D;
#pragma omp simd
          for (int64_t d = 0; d < D; ++d) {
            T sg = sigmoid(z_t[d]);
            gy[d] = go_t[d] * z_t[d] * sg;
            gz_t[d] = go_t[d] * y_t[d] * sg * (T(1) + z_t[d] * (T(1) - sg));
          }
          gy_t = gy;
        }
        const T* cur = states + (t - start) * ND;
        const T* decay = decays + (t - start) * ND;
        const T* prev = t == start ? h_entry : states + (t - start - 1) * ND;
#pragma omp simd
        for (int64_t d = 0; d < D; ++d) dtx[d] = dt_t[d] * x_t[d];
        const ScanAdjointStep<T> r{At, cur, decay, prev, g, gA, dt_t, x_t, dtx, gy_t, B_t, C_t,
                                   Dskip, grad_x + row * D, grad_dt + row * D, gD, N, D};
        scan_adjoint_step(r, C_lanes, B_lanes);
        sum_each_row(C_lanes, N, grad_C + row * N);
        sum_each_row(B_lanes, N, grad_B + row * N);
      }
    }
    if (grad_h0) std::memcpy(grad_h0 + b * ND, g, sizeof(T) * ND);
  }
}

// ---------------------------------------------------------------------------------------------
// Mamba-2 with a scalar decay per head: the recurrence of the SSD, walked step by step.
//   s_t = exp(dt_t A) s_{t-1} + (dt_t x_t) B_t^T  (P x N per head),  y_t = s_t C_t + D x_t.

// one sequence's SSD state between the layout the ops exchange, (H, P, N), and the one the
// forward walks, (H, N, P)
template <typename T>
void heads_pn_to_np(const T* pn, T* np, int64_t H, int64_t P, int64_t N) {
  for (int64_t h = 0; h < H; ++h)
    for (int64_t p = 0; p < P; ++p)
      for (int64_t n = 0; n < N; ++n) np[(h * N + n) * P + p] = pn[(h * P + p) * N + n];
}

template <typename T>
void heads_np_to_pn(const T* np, T* pn, int64_t H, int64_t P, int64_t N) {
  for (int64_t h = 0; h < H; ++h)
    for (int64_t n = 0; n < N; ++n)
      for (int64_t p = 0; p < P; ++p) pn[(h * P + p) * N + n] = np[(h * N + n) * P + p];
}

// One head's step over head-dim lanes [p0, p0 + w): s <- a s + u B^T, y = s C + D x, with the
// state s_h laid out (N, P). The outputs accumulate over n in registers, so no horizontal sum
// is taken (the (P, N) layout needs one per p). Width > 0 fixes w at compile time (a full
// vector); 0 takes w_tail, the remainder of a head dim that is not a multiple of the vector.
template <typename T, int64_t Width>
inline void ssd_step_lanes(T* s_h, const T* x_h, T* y_h, const T* B_g, const T* C_g, T a,
                           T dt_h, T d_skip, int64_t P, int64_t N, int64_t p0, int64_t w_tail) {
  const int64_t w = Width > 0 ? Width : w_tail;
  T u[kLanes<T>], acc[kLanes<T>];
  for (int64_t l = 0; l < w; ++l) {
    u[l] = dt_h * x_h[p0 + l];
    acc[l] = d_skip * x_h[p0 + l];
  }
  for (int64_t n = 0; n < N; ++n) {
    const T bn = B_g[n], cn = C_g[n];
    T* s_n = s_h + n * P + p0;
#pragma omp simd
    for (int64_t l = 0; l < w; ++l) {
      const T v = a * s_n[l] + u[l] * bn;
      s_n[l] = v;
      acc[l] += v * cn;
    }
  }
  for (int64_t l = 0; l < w; ++l) y_h[p0 + l] = acc[l];
}

template <typename T>
void ssd_fwd(const T* x, const T* dt, const T* A, const T* Bm, const T* Cm, const T* Dskip,
             const T* h0, T* y, T* final_state, T* entry, int64_t batch, int64_t length,
             int64_t H, int64_t P, int64_t G, int64_t N, int64_t chunk, int threads) {
  const int64_t K = (length + chunk - 1) / chunk;
  const int64_t S = H * P * N;  // one sequence's state
  const int64_t R = H / G;
  constexpr int64_t W = kLanes<T>;
#pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1)
  for (int64_t b = 0; b < batch; ++b) {
    thread_local Scratch<T> scratch;
    T* s = scratch.get(S);  // the running state, (H, N, P)
    if (h0) heads_pn_to_np(h0 + b * S, s, H, P, N);
    else std::memset(s, 0, sizeof(T) * S);
    for (int64_t t = 0; t < length; ++t) {
      if (t % chunk == 0) heads_np_to_pn(s, entry + (b * K + t / chunk) * S, H, P, N);
      const int64_t row = b * length + t;
      for (int64_t h = 0; h < H; ++h) {
        const T dt_h = dt[row * H + h];
        const T a = exp_of(dt_h * A[h]);
        const T* B_g = Bm + (row * G + h / R) * N;
        const T* C_g = Cm + (row * G + h / R) * N;
        const T* x_h = x + (row * H + h) * P;
        T* y_h = y + (row * H + h) * P;
        T* s_h = s + h * N * P;
        const T d_skip = Dskip ? Dskip[h] : T(0);
        int64_t p0 = 0;
        for (; p0 + W <= P; p0 += W)
          ssd_step_lanes<T, W>(s_h, x_h, y_h, B_g, C_g, a, dt_h, d_skip, P, N, p0, W);
        if (p0 < P)
          ssd_step_lanes<T, 0>(s_h, x_h, y_h, B_g, C_g, a, dt_h, d_skip, P, N, p0, P - p0);
      }
    }
    heads_np_to_pn(s, final_state + b * S, H, P, N);
  }
}

// One head's backward step at t over a block of state lanes [n0, n0 + w), every row p of the
// head in turn: the adjoint g <- a (g + C gy_p), dL/dC and dL/dB summed over p in registers
// (stored once per block, not read and written once per p as when p was the outer loop: the
// backward 1.18-1.32x), dL/du_p folded to one vector per row p in u_lanes (set by the first
// block, First, added to by the others: no clearing pass) and dL/da by lane.
template <typename T>
struct SsdAdjointHead {
  const T *cur, *prev;  // the head's (P, N) states at t and t - 1
  T* g;                 // its (P, N) adjoint
  const T *gy, *x;      // its (P,) output gradient and input at t
  const T *B_g, *C_g;
  T *gB_g, *gC_g;
  T dt, a;
  int64_t P, N;
};

template <typename T>
constexpr int64_t kSsdDecayLanes = 4 * kLanes<T>;  // dL/da by lane: the widest block

template <typename T>
inline T sum_ssd_decay(const T* lanes) {
  T sum = 0;
  for (int64_t v = 0; v < kSsdDecayLanes<T>; v += kLanes<T>) sum += sum_lanes(lanes + v);
  return sum;
}

// Block is the lanes per block; Width = Block fixes w at compile time, 0 takes w_tail, the
// remainder of a state size that is not a multiple of the block.
template <typename T, int64_t Block, int64_t Width, bool First>
inline void ssd_adjoint_lanes(const SsdAdjointHead<T>& r, int64_t n0, int64_t w_tail,
                              T* u_lanes, T* decay_lanes) {
  constexpr int64_t V = kLanes<T>;
  const int64_t w = Width > 0 ? Width : w_tail;
  T gC[Block] = {}, gB[Block] = {};
  for (int64_t p = 0; p < r.P; ++p) {
    const T gy = r.gy[p], u = r.dt * r.x[p];
    const int64_t off = p * r.N + n0;
    T du[Block] = {};  // lanes past w stay 0
#pragma omp simd
    for (int64_t l = 0; l < w; ++l) {
      gC[l] += r.cur[off + l] * gy;
      const T gn = r.g[off + l] + r.C_g[n0 + l] * gy;  // dL/ds_t, all paths
      gB[l] += gn * u;
      du[l] = gn * r.B_g[n0 + l];
      decay_lanes[l] += gn * r.prev[off + l];
      r.g[off + l] = r.a * gn;  // carried to step t-1
    }
    T* u_p = u_lanes + p * V;
#pragma omp simd
    for (int64_t l = 0; l < V; ++l) {
      T folded = First ? T(0) : u_p[l];
      for (int64_t v = 0; v < Block; v += V) folded += du[v + l];
      u_p[l] = folded;
    }
  }
  for (int64_t l = 0; l < w; ++l) {
    r.gC_g[n0 + l] += gC[l];
    r.gB_g[n0 + l] += gB[l];
  }
}

// All state lanes of one head's step, in the widest blocks that divide N: four vectors stream
// a row of the state (N = 64) whole in one pass over p (the backward 1.1x over two passes of
// two); else two vectors and a remainder.
template <typename T>
inline void ssd_adjoint_step(const SsdAdjointHead<T>& r, T* u_lanes, T* decay_lanes) {
  constexpr int64_t V = kLanes<T>;
  const auto block = [&](auto lanes, auto width, auto first, int64_t n0, int64_t w) {
    ssd_adjoint_lanes<T, lanes.value, width.value, first.value>(r, n0, w, u_lanes, decay_lanes);
  };
  if (r.N % (4 * V) == 0) in_blocks<4 * V>(r.N, block);
  else if (r.N % (2 * V) == 0) in_blocks<2 * V>(r.N, block);
  else if (r.N % V == 0) in_blocks<V>(r.N, block);
  else in_blocks<2 * V>(r.N, block);  // with a remainder
}

// As for the selective scan: chunks in reverse, each chunk's states recomputed from its entry
// state, then the adjoint g_t = C_t gy_t + a_{t+1} g_{t+1} walked back. Heads are independent,
// so each is walked on its own: its adjoint (P x N) stays in L1 and a chunk of its states in
// L2, where all heads' chunk states (chunk x H x P x N: 2 MB at 4 heads of 32 x 64) did not.
// grad_A_partial and grad_D_partial are (B, H), summed by the caller.
template <typename T>
void ssd_bwd(const T* x, const T* dt, const T* A, const T* Bm, const T* Cm, const T* Dskip,
             const T* entry, const T* grad_y, const T* grad_final, T* grad_x, T* grad_dt,
             T* grad_A_partial, T* grad_B, T* grad_C, T* grad_D_partial, T* grad_h0,
             int64_t batch, int64_t length, int64_t H, int64_t P, int64_t G, int64_t N,
             int64_t chunk, int threads) {
  const int64_t K = (length + chunk - 1) / chunk;
  const int64_t S = H * P * N;  // one sequence's state
  const int64_t HS = P * N;     // one head's
  const int64_t R = H / G;
  constexpr int64_t V = kLanes<T>;
#pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1)
  for (int64_t b = 0; b < batch; ++b) {
    thread_local Scratch<T> scratch;
    T* work = scratch.get(HS * (chunk + 1) + chunk + P * V + P);
    T* g = work;                      // (P, N) adjoint carried backwards
    T* states = work + HS;            // (chunk, P, N)
    T* u_lanes = states + chunk * HS;  // (P, kLanes) dL/du by lane, per step
    T* g_u = u_lanes + P * V;         // (P,) dL/du, per step
    T* decays = g_u + P;              // (chunk,)
    T* gA = grad_A_partial + b * H;
    T* gD = grad_D_partial ? grad_D_partial + b * H : nullptr;
    std::memset(gA, 0, sizeof(T) * H);
    if (gD) std::memset(gD, 0, sizeof(T) * H);
    std::memset(grad_B + b * length * G * N, 0, sizeof(T) * length * G * N);
    std::memset(grad_C + b * length * G * N, 0, sizeof(T) * length * G * N);
    for (int64_t h = 0; h < H; ++h) {
      const T d_skip = Dskip ? Dskip[h] : T(0);
      copy_or_zero(g, grad_final ? grad_final + b * S + h * HS : nullptr, HS);
      for (int64_t k = K - 1; k >= 0; --k) {
        const int64_t start = k * chunk;
        const int64_t end = chunk_end(start, chunk, length);
        const T* s_entry = entry + (b * K + k) * S + h * HS;
        for (int64_t t = start; t < end; ++t) {  // recompute the chunk's states
          const int64_t row = b * length + t;
          const T* prev = t == start ? s_entry : states + (t - start - 1) * HS;
          T* cur = states + (t - start) * HS;
          const T dt_h = dt[row * H + h];
          const T a = exp_of(dt_h * A[h]);
          decays[t - start] = a;
          const T* B_g = Bm + (row * G + h / R) * N;
          for (int64_t p = 0; p < P; ++p) {
            const T u = dt_h * x[(row * H + h) * P + p];
#pragma omp simd
            for (int64_t n = 0; n < N; ++n) cur[p * N + n] = a * prev[p * N + n] + u * B_g[n];
          }
        }
        for (int64_t t = end - 1; t >= start; --t) {
          const int64_t row = b * length + t;
          const T* prev = t == start ? s_entry : states + (t - start - 1) * HS;
          const T* cur = states + (t - start) * HS;
          const T dt_h = dt[row * H + h];
          const T a = decays[t - start];
          const T* B_g = Bm + (row * G + h / R) * N;
          const T* C_g = Cm + (row * G + h / R) * N;
          T* gB_g = grad_B + (row * G + h / R) * N;
          T* gC_g = grad_C + (row * G + h / R) * N;
          T decay_lanes[kSsdDecayLanes<T>] = {};  // dL/da by lane, summed once per step
          const int64_t at0 = (row * H + h) * P;
          const SsdAdjointHead<T> r{cur, prev, g, grad_y + at0, x + at0, B_g, C_g, gB_g, gC_g,
                                    dt_h, a, P, N};
          ssd_adjoint_step(r, u_lanes, decay_lanes);
          sum_each_row(u_lanes, P, g_u);  // dL/du_p
          const T* gy_h = grad_y + at0;
          const T* x_h = x + at0;
          T* gx_h = grad_x + at0;
          const T g_dt = sum_by_lanes<T>(P, [=](int64_t p) {
            gx_h[p] = g_u[p] * dt_h + gy_h[p] * d_skip;
            return g_u[p] * x_h[p];
          });
          // summed in lanes, once per step: a sum kept in gD[h] was a chain of store-to-load
          // forwards through memory, one per p
          const T g_d = sum_by_lanes<T>(P, [=](int64_t p) { return gy_h[p] * x_h[p]; });
          if (gD) gD[h] += g_d;
          const T g_decay = sum_ssd_decay(decay_lanes);
          const T g_log_decay = g_decay * a;  // dL/d(dt A)
          grad_dt[row * H + h] = g_dt + g_log_decay * A[h];
          gA[h] += g_log_decay * dt_h;
        }
      }
      if (grad_h0) std::memcpy(grad_h0 + b * S + h * HS, g, sizeof(T) * HS);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Diagonal linear recurrence h_t = a_t * h_{t-1} + b_t (RG-LRU).

template <typename T>
void linear_scan_fwd(const T* a, const T* bx, const T* h0, T* h, int64_t batch, int64_t length,
                     int64_t C, int threads) {
#pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1)
  for (int64_t b = 0; b < batch; ++b) {
    const T* a_b = a + b * length * C;
    const T* x_b = bx + b * length * C;
    T* h_b = h + b * length * C;
    if (h0) {
      const T* init = h0 + b * C;
#pragma omp simd
      for (int64_t c = 0; c < C; ++c) h_b[c] = a_b[c] * init[c] + x_b[c];
    } else {
      std::memcpy(h_b, x_b, sizeof(T) * C);
    }
    for (int64_t t = 1; t < length; ++t) {
      const T* a_t = a_b + t * C;
      const T* x_t = x_b + t * C;
      const T* prev = h_b + (t - 1) * C;
      T* cur = h_b + t * C;
#pragma omp simd
      for (int64_t c = 0; c < C; ++c) cur[c] = a_t[c] * prev[c] + x_t[c];
    }
  }
}

// g_t = grad_h_t + a_{t+1} g_{t+1};  grad_b_t = g_t;  grad_a_t = g_t h_{t-1};  grad_h0 = a_0 g_0.
template <typename T>
void linear_scan_bwd(const T* a, const T* h, const T* h0, const T* grad_h, T* grad_a, T* grad_b,
                     T* grad_h0, int64_t batch, int64_t length, int64_t C, int threads) {
#pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1)
  for (int64_t b = 0; b < batch; ++b) {
    const int64_t base = b * length * C;
    const T* a_b = a + base;
    const T* h_b = h + base;
    const T* gh_b = grad_h + base;
    T* ga_b = grad_a + base;
    T* g_b = grad_b + base;
    std::memcpy(g_b + (length - 1) * C, gh_b + (length - 1) * C, sizeof(T) * C);
    for (int64_t t = length - 2; t >= 0; --t) {
      const T* a_next = a_b + (t + 1) * C;
      const T* g_next = g_b + (t + 1) * C;
      const T* gh_t = gh_b + t * C;
      T* g_t = g_b + t * C;
#pragma omp simd
      for (int64_t c = 0; c < C; ++c) g_t[c] = gh_t[c] + a_next[c] * g_next[c];
    }
    for (int64_t t = 1; t < length; ++t) {
      const T* g_t = g_b + t * C;
      const T* prev = h_b + (t - 1) * C;
      T* ga_t = ga_b + t * C;
#pragma omp simd
      for (int64_t c = 0; c < C; ++c) ga_t[c] = g_t[c] * prev[c];
    }
    if (h0) {
      const T* init = h0 + b * C;
#pragma omp simd
      for (int64_t c = 0; c < C; ++c) ga_b[c] = g_b[c] * init[c];
    } else {
      std::memset(ga_b, 0, sizeof(T) * C);
    }
    if (grad_h0) {
      T* gh0 = grad_h0 + b * C;
#pragma omp simd
      for (int64_t c = 0; c < C; ++c) gh0[c] = a_b[c] * g_b[c];
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Depthwise causal conv, optionally followed by silu:
//   s_t = bias + sum_j wt[j] * xp_{t+j},  xp = [history, x],  y_t = s_t or silu(s_t).

template <typename T>
inline const T* conv_input(const T* x_b, const T* hist_b, int64_t i, int64_t hist, int64_t C) {
  // row i of [history; x] for one sequence; rows before the history are never asked for
  return i < hist ? hist_b + i * C : x_b + (i - hist) * C;
}

template <typename T>
void conv_pre(const T* x_b, const T* hist_b, const T* wt, const T* bias, T* s_t, int64_t t,
              int64_t K, int64_t C) {
#pragma omp simd
  for (int64_t c = 0; c < C; ++c) s_t[c] = bias ? bias[c] : T(0);
  for (int64_t j = 0; j < K; ++j) {
    const T* in = conv_input(x_b, hist_b, t + j, K - 1, C);
    const T* w = wt + j * C;
#pragma omp simd
    for (int64_t c = 0; c < C; ++c) s_t[c] += w[c] * in[c];
  }
}

template <typename T>
void causal_conv_fwd_any(const T* x, const T* history, const T* wt, const T* bias, T* y,
                     int64_t batch, int64_t length, int64_t C, int64_t K, int silu,
                     int threads) {
#pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1)
  for (int64_t b = 0; b < batch; ++b) {
    const T* x_b = x + b * length * C;
    const T* hist_b = history + b * (K - 1) * C;
    for (int64_t t = 0; t < length; ++t) {
      T* y_t = y + (b * length + t) * C;
      conv_pre(x_b, hist_b, wt, bias, y_t, t, K, C);
      if (silu) {
#pragma omp simd
        for (int64_t c = 0; c < C; ++c) y_t[c] = y_t[c] * sigmoid(y_t[c]);
      }
    }
  }
}

// The common widths (2-4: Mamba's, the RG-LRU's, Hyena's short convs) with the width and the
// silu fixed at compile time: each output's taps sum in a register and the silu is taken there,
// one store per output, where the loop over a runtime width passes over the row once per tap
// (GCC does not vectorise a runtime-length tap loop inside the channel loop). A missing bias
// reads zeros.
template <typename T, int KW, bool Silu>
void causal_conv_fwd_fixed(const T* x, const T* history, const T* wt, const T* bias, T* y,
                           int64_t batch, int64_t length, int64_t C, int threads) {
  std::vector<T> zeros(bias ? 0 : C, T(0));
  const T* b0 = bias ? bias : zeros.data();
#pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1)
  for (int64_t b = 0; b < batch; ++b) {
    const T* x_b = x + b * length * C;
    const T* hist_b = history + b * (KW - 1) * C;
    for (int64_t t = 0; t < length; ++t) {
      const T* in[KW];
      for (int j = 0; j < KW; ++j) in[j] = conv_input(x_b, hist_b, t + j, KW - 1, C);
      T* y_t = y + (b * length + t) * C;
#pragma omp simd
      for (int64_t c = 0; c < C; ++c) {
        T s = b0[c];
        for (int j = 0; j < KW; ++j) s += wt[j * C + c] * in[j][c];
        y_t[c] = Silu ? s * sigmoid(s) : s;
      }
    }
  }
}

template <typename T>
void causal_conv_fwd(const T* x, const T* history, const T* wt, const T* bias, T* y,
                     int64_t batch, int64_t length, int64_t C, int64_t K, int silu,
                     int threads) {
#define HNAS_CONV_FWD(KW, SILU) \
  return causal_conv_fwd_fixed<T, KW, SILU>(x, history, wt, bias, y, batch, length, C, threads)
  switch (K * 2 + (silu ? 1 : 0)) {
    case 4: HNAS_CONV_FWD(2, false);
    case 5: HNAS_CONV_FWD(2, true);
    case 6: HNAS_CONV_FWD(3, false);
    case 7: HNAS_CONV_FWD(3, true);
    case 8: HNAS_CONV_FWD(4, false);
    case 9: HNAS_CONV_FWD(4, true);
    default: causal_conv_fwd_any(x, history, wt, bias, y, batch, length, C, K, silu, threads);
  }
#undef HNAS_CONV_FWD
}

// grad_wt_partial (B, K, C) and grad_bias_partial (B, C) are per sequence, summed by the caller.
template <typename T>
void causal_conv_bwd_any(const T* x, const T* history, const T* wt, const T* bias, const T* grad_y,
                     T* grad_x, T* grad_history, T* grad_wt_partial, T* grad_bias_partial,
                     int64_t batch, int64_t length, int64_t C, int64_t K, int silu,
                     int threads) {
  const int64_t hist = K - 1;
#pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1)
  for (int64_t b = 0; b < batch; ++b) {
    thread_local Scratch<T> scratch;
    T* gs = scratch.get((length + hist) * C);  // dL/ds, with K-1 zero rows after the end
    const T* x_b = x + b * length * C;
    const T* hist_b = history + b * hist * C;
    T* gw = grad_wt_partial + b * K * C;
    T* gb = grad_bias_partial + b * C;
    std::memset(gw, 0, sizeof(T) * K * C);
    std::memset(gb, 0, sizeof(T) * C);
    std::memset(gs + length * C, 0, sizeof(T) * hist * C);
    for (int64_t t = 0; t < length; ++t) {
      T* gs_t = gs + t * C;
      const T* gy_t = grad_y + (b * length + t) * C;
      if (silu) {
        conv_pre(x_b, hist_b, wt, bias, gs_t, t, K, C);  // recompute s_t in place
#pragma omp simd
        for (int64_t c = 0; c < C; ++c) {
          T sg = sigmoid(gs_t[c]);
          gs_t[c] = gy_t[c] * sg * (T(1) + gs_t[c] * (T(1) - sg));
        }
      } else {
        std::memcpy(gs_t, gy_t, sizeof(T) * C);
      }
#pragma omp simd
      for (int64_t c = 0; c < C; ++c) gb[c] += gs_t[c];
      for (int64_t j = 0; j < K; ++j) {
        const T* in = conv_input(x_b, hist_b, t + j, hist, C);
        T* gw_j = gw + j * C;
#pragma omp simd
        for (int64_t c = 0; c < C; ++c) gw_j[c] += gs_t[c] * in[c];
      }
    }
    // input row i feeds s_{i-j} through tap j
    for (int64_t i = 0; i < length + hist; ++i) {
      T* out;
      if (i < hist) {
        if (!grad_history) continue;
        out = grad_history + (b * hist + i) * C;
      } else {
        out = grad_x + (b * length + i - hist) * C;
      }
#pragma omp simd
      for (int64_t c = 0; c < C; ++c) out[c] = 0;
      for (int64_t j = 0; j < K; ++j) {
        const int64_t t = i - j;
        if (t < 0 || t >= length) continue;
        const T* w = wt + j * C;
        const T* g = gs + t * C;
#pragma omp simd
        for (int64_t c = 0; c < C; ++c) out[c] += w[c] * g[c];
      }
    }
  }
}

// The common widths at compile time, in one pass over each sequence: at input row i, dL/ds_i
// (the pre-activation recomputed in a register, through the silu) is kept in a buffer padded
// with K-1 zero rows at each end and summed into the weight and bias gradients, then input row
// i's gradient sum_j wt[j] dL/ds_{i-j} is complete (every s it feeds is at or before i).
template <typename T, int KW, bool Silu>
void causal_conv_bwd_fixed(const T* x, const T* history, const T* wt, const T* bias,
                           const T* grad_y, T* grad_x, T* grad_history, T* grad_wt_partial,
                           T* grad_bias_partial, int64_t batch, int64_t length, int64_t C,
                           int threads) {
  constexpr int64_t hist = KW - 1;
  std::vector<T> zeros(bias ? 0 : C, T(0));
  const T* b0 = bias ? bias : zeros.data();
#pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1)
  for (int64_t b = 0; b < batch; ++b) {
    thread_local Scratch<T> scratch;
    T* gs = scratch.get((length + 2 * hist) * C);  // row hist + t: dL/ds_t
    const T* x_b = x + b * length * C;
    const T* hist_b = history + b * hist * C;
    T* gw = grad_wt_partial + b * KW * C;
    T* gb = grad_bias_partial + b * C;
    std::memset(gw, 0, sizeof(T) * KW * C);
    std::memset(gb, 0, sizeof(T) * C);
    std::memset(gs, 0, sizeof(T) * hist * C);
    std::memset(gs + (hist + length) * C, 0, sizeof(T) * hist * C);
    for (int64_t i = 0; i < length + hist; ++i) {
      if (i < length) {  // s_i: its gradient, and its share of the weight and bias gradients
        const T* in[KW];
        for (int j = 0; j < KW; ++j) in[j] = conv_input(x_b, hist_b, i + j, hist, C);
        const T* gy_i = grad_y + (b * length + i) * C;
        T* gs_i = gs + (hist + i) * C;
#pragma omp simd
        for (int64_t c = 0; c < C; ++c) {
          T g = gy_i[c];
          if (Silu) {
            T pre = b0[c];
            for (int j = 0; j < KW; ++j) pre += wt[j * C + c] * in[j][c];
            const T sg = sigmoid(pre);
            g *= sg * (T(1) + pre * (T(1) - sg));
          }
          gs_i[c] = g;
          gb[c] += g;
          for (int j = 0; j < KW; ++j) gw[j * C + c] += g * in[j][c];
        }
      }
      T* out;  // input row i of [history; x]
      if (i < hist) {
        if (!grad_history) continue;
        out = grad_history + (b * hist + i) * C;
      } else {
        out = grad_x + (b * length + i - hist) * C;
      }
      const T* g_i = gs + (hist + i) * C;  // dL/ds_{i-j} at g_i - j C
#pragma omp simd
      for (int64_t c = 0; c < C; ++c) {
        T sum = T(0);
        for (int j = 0; j < KW; ++j) sum += wt[j * C + c] * g_i[c - j * C];
        out[c] = sum;
      }
    }
  }
}

template <typename T>
void causal_conv_bwd(const T* x, const T* history, const T* wt, const T* bias, const T* grad_y,
                     T* grad_x, T* grad_history, T* grad_wt_partial, T* grad_bias_partial,
                     int64_t batch, int64_t length, int64_t C, int64_t K, int silu,
                     int threads) {
#define HNAS_CONV_BWD(KW, SILU)                                                               \
  return causal_conv_bwd_fixed<T, KW, SILU>(x, history, wt, bias, grad_y, grad_x, grad_history, \
                                            grad_wt_partial, grad_bias_partial, batch, length,  \
                                            C, threads)
  switch (K * 2 + (silu ? 1 : 0)) {
    case 4: HNAS_CONV_BWD(2, false);
    case 5: HNAS_CONV_BWD(2, true);
    case 6: HNAS_CONV_BWD(3, false);
    case 7: HNAS_CONV_BWD(3, true);
    case 8: HNAS_CONV_BWD(4, false);
    case 9: HNAS_CONV_BWD(4, true);
    default:
      causal_conv_bwd_any(x, history, wt, bias, grad_y, grad_x, grad_history, grad_wt_partial,
                          grad_bias_partial, batch, length, C, K, silu, threads);
  }
#undef HNAS_CONV_BWD
}

// ---------------------------------------------------------------------------------------------
// Elementwise and row-wise ops around the GEMMs, each one pass over memory where PyTorch takes
// three to five (and at the models' sizes, 64-352 wide, its per-op cost is comparable).
//
// Gated unit with silu:  h = silu(g) * u,  rows x F each (contiguous).
//   dL/du = gh * silu(g),  dL/dg = gh * u * s (1 + g (1 - s)),  s = sigmoid(g).

constexpr int64_t kBlock = 4096;  // elements per thread's turn in the elementwise ops

// body(start, end) over the blocks of kBlock elements of 0..n, the blocks split over threads.
template <typename Body>
inline void over_blocks(int64_t n, int threads, Body body) {
#pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1)
  for (int64_t start = 0; start < n; start += kBlock) body(start, chunk_end(start, kBlock, n));
}

template <typename T>
void glu_silu_fwd(const T* g, const T* u, T* h, int64_t n, int threads) {
  over_blocks(n, threads, [=](int64_t start, int64_t end) {
#pragma omp simd
    for (int64_t i = start; i < end; ++i) h[i] = g[i] * sigmoid(g[i]) * u[i];
  });
}

template <typename T>
void glu_silu_bwd(const T* g, const T* u, const T* gh, T* grad_g, T* grad_u, int64_t n,
                  int threads) {
  over_blocks(n, threads, [=](int64_t start, int64_t end) {
#pragma omp simd
    for (int64_t i = start; i < end; ++i) {
      T s = sigmoid(g[i]);
      T silu = g[i] * s;
      grad_u[i] = gh[i] * silu;
      grad_g[i] = gh[i] * u[i] * (s + silu * (T(1) - s));
    }
  });
}

// GeGLU with the tanh GELU: gelu(x) = x (1 + tanh(v)) / 2 = x s, s = sigmoid(2 v),
// v = c0 (x + c1 x^3). 1 + tanh(v) = 2 sigmoid(2 v) exactly, and the sigmoid form keeps full
// precision where 1 + tanh(v) cancels (v near -8). gelu'(x) = s + x s (1 - s) 2 c0 (1 + 3 c1 x^2),
// with 1 - s = e s, e = exp(-2 v), where s >= 1/2: no cancellation where s rounds to 1 either.
constexpr double kGeluC0 = 0.7978845608028654;  // sqrt(2 / pi)
constexpr double kGeluC1 = 0.044715;

template <typename T>
inline T gelu_tanh_exp(T x) {  // e = exp(-2 v)
  return exp_of(T(-2) * T(kGeluC0) * (x + T(kGeluC1) * x * x * x));
}

template <typename T>
void glu_gelu_tanh_fwd(const T* g, const T* u, T* h, int64_t n, int threads) {
  over_blocks(n, threads, [=](int64_t start, int64_t end) {
#pragma omp simd
    for (int64_t i = start; i < end; ++i) h[i] = g[i] / (T(1) + gelu_tanh_exp(g[i])) * u[i];
  });
}

template <typename T>
void glu_gelu_tanh_bwd(const T* g, const T* u, const T* gh, T* grad_g, T* grad_u, int64_t n,
                       int threads) {
  const T c0 = T(kGeluC0), c1 = T(kGeluC1);
  over_blocks(n, threads, [=](int64_t start, int64_t end) {
#pragma omp simd
    for (int64_t i = start; i < end; ++i) {
      const T x = g[i];
      const T e = gelu_tanh_exp(x);
      const T s = T(1) / (T(1) + e);
      grad_u[i] = gh[i] * x * s;
      // 1 - s without cancellation: e s where s >= 1/2 (there e <= 1); 1 - s below, where e can
      // overflow (fp64) and 1 - s is exact enough
      const T below = T(1) - s, above = e * s;  // both computed: the select then vectorises
      const T one_minus_s = s < T(0.5) ? below : above;
      const T slope = s + x * (one_minus_s * s) * T(2) * c0 * (T(1) + T(3) * c1 * x * x);
      grad_g[i] = gh[i] * u[i] * slope;
    }
  });
}

// softplus(x) = log(1 + e^x) = max(x, 0) + log(1 + e^-|x|), and x itself above 20 (torch's
// threshold); its derivative is sigmoid(x) (1 above the threshold).
// y = softplus(x) over n values (y may be x), decay: n values of work memory for e^-|x| (two
// loops, as GCC vectorises exp and log1p only apart).
template <typename T>
inline void softplus_span(const T* x, T* y, T* decay, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) decay[i] = exp_of(-std::abs(x[i]));
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) {
    const T v = x[i];
    const T soft = (v > T(0) ? v : T(0)) + log1p_of(decay[i]);
    y[i] = v > T(20) ? v : soft;
  }
}

// gx = gy * softplus'(x) over n values (gx may be x or gy).
template <typename T>
inline void softplus_slope_span(const T* x, const T* gy, T* gx, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) gx[i] = x[i] > T(20) ? gy[i] : gy[i] * sigmoid(x[i]);
}

template <typename T>
void softplus_fwd(const T* x, T* y, int64_t n, int threads) {
  over_blocks(n, threads, [=](int64_t start, int64_t end) {
    T decay[kBlock];
    softplus_span(x + start, y + start, decay, end - start);
  });
}

template <typename T>
void softplus_bwd(const T* x, const T* gy, T* gx, int64_t n, int threads) {
  over_blocks(n, threads, [=](int64_t start, int64_t end) {
    softplus_slope_span(x + start, gy + start, gx + start, end - start);
  });
}

// ---------------------------------------------------------------------------------------------
// Block-diagonal linear (the RG-LRU's two gates): x (rows, H I), W (H, I, J), bias (H J) or
// null, y (rows, H J) with y[r, h J + j] = bias[h J + j] + sum_i x[r, h I + i] W[h, i, j].
// At the proxies' blocks (I = J = 16) a batched GEMM spends its time in call overhead and the
// (rows, H, I) <-> (H, rows, I) copies around it (einsum's path: 20 GFLOP/s fwd + bwd); here
// each head's output lanes for kBlockRows rows accumulate in registers over i. The backward's
// dL/dx is the same product with dL/dy and W transposed per head, (H, J, I).
constexpr int64_t kBlockRows = 4;

// Rows [r0, r0 + kBlockRows) (clamped to the last row, whose duplicates are not stored), head h,
// output lanes [j0, j0 + w) with w = Width (a whole vector) or w_tail.
template <typename T, int64_t Width>
inline void block_diagonal_lanes(const T* x, const T* W, const T* bias, T* y, int64_t rows,
                                 int64_t r0, int64_t h, int64_t H, int64_t I, int64_t J,
                                 int64_t j0, int64_t w_tail) {
  const int64_t w = Width > 0 ? Width : w_tail;
  const T* x_rows[kBlockRows];
  for (int64_t rr = 0; rr < kBlockRows; ++rr)
    x_rows[rr] = x + (r0 + rr < rows ? r0 + rr : rows - 1) * H * I + h * I;
  T acc[kBlockRows][kLanes<T>];
  for (int64_t rr = 0; rr < kBlockRows; ++rr)
    for (int64_t l = 0; l < w; ++l) acc[rr][l] = bias ? bias[h * J + j0 + l] : T(0);
  for (int64_t i = 0; i < I; ++i) {
    const T* W_i = W + (h * I + i) * J + j0;
    for (int64_t rr = 0; rr < kBlockRows; ++rr) {
      const T xv = x_rows[rr][i];
#pragma omp simd
      for (int64_t l = 0; l < w; ++l) acc[rr][l] += xv * W_i[l];
    }
  }
  for (int64_t rr = 0; rr < kBlockRows && r0 + rr < rows; ++rr)
    std::memcpy(y + (r0 + rr) * H * J + h * J + j0, acc[rr], sizeof(T) * w);
}

template <typename T>
void block_diagonal_fwd(const T* x, const T* W, const T* bias, T* y, int64_t rows, int64_t H,
                        int64_t I, int64_t J, int threads) {
  constexpr int64_t L = kLanes<T>;
#pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1)
  for (int64_t r0 = 0; r0 < rows; r0 += kBlockRows) {
    for (int64_t h = 0; h < H; ++h) {
      int64_t j0 = 0;
      for (; j0 + L <= J; j0 += L)
        block_diagonal_lanes<T, L>(x, W, bias, y, rows, r0, h, H, I, J, j0, L);
      if (j0 < J) block_diagonal_lanes<T, 0>(x, W, bias, y, rows, r0, h, H, I, J, j0, J - j0);
    }
  }
}

// dL/dW[h, i0 + k, j0 + l] += sum over rows [r_begin, r_end) of x[r, h I + i0 + k] gy[r, h J + j0 + l]
// for k < kBlockRows (rows of W past I clamped, not stored) and l < w: the sums stay in
// registers down the rows.
template <typename T, int64_t Width>
inline void block_diagonal_weight_lanes(const T* x, const T* gy, T* gW, int64_t r_begin,
                                        int64_t r_end, int64_t h, int64_t H, int64_t I,
                                        int64_t J, int64_t i0, int64_t j0, int64_t w_tail) {
  const int64_t w = Width > 0 ? Width : w_tail;
  int64_t col[kBlockRows];
  for (int64_t k = 0; k < kBlockRows; ++k) col[k] = h * I + (i0 + k < I ? i0 + k : I - 1);
  T acc[kBlockRows][kLanes<T>] = {};
  for (int64_t r = r_begin; r < r_end; ++r) {
    const T* x_r = x + r * H * I;
    const T* gy_r = gy + r * H * J + h * J + j0;
    for (int64_t k = 0; k < kBlockRows; ++k) {
      const T xv = x_r[col[k]];
#pragma omp simd
      for (int64_t l = 0; l < w; ++l) acc[k][l] += xv * gy_r[l];
    }
  }
  for (int64_t k = 0; k < kBlockRows && i0 + k < I; ++k) {
    T* gW_row = gW + (h * I + i0 + k) * J + j0;
#pragma omp simd
    for (int64_t l = 0; l < w; ++l) gW_row[l] += acc[k][l];
  }
}

// grad_x = the forward's product of gy with Wt (H, J, I); grad_W_partial (threads, H, I, J) and
// grad_bias_partial (threads, H J) or null: per thread sums over its rows, added by the caller.
template <typename T>
void block_diagonal_bwd(const T* x, const T* Wt, const T* gy, T* grad_x, T* grad_W_partial,
                        T* grad_bias_partial, int64_t rows, int64_t H, int64_t I, int64_t J,
                        int threads) {
  block_diagonal_fwd<T>(gy, Wt, nullptr, grad_x, rows, H, J, I, threads);
  std::memset(grad_W_partial, 0, sizeof(T) * threads * H * I * J);
  if (grad_bias_partial) std::memset(grad_bias_partial, 0, sizeof(T) * threads * H * J);
  constexpr int64_t L = kLanes<T>;
#pragma omp parallel num_threads(threads) if (threads > 1)
  {
    const int64_t me = thread_index(), team = team_size();
    const int64_t r_begin = rows * me / team, r_end = rows * (me + 1) / team;
    T* gW = grad_W_partial + me * H * I * J;
    if (grad_bias_partial) {
      T* gb = grad_bias_partial + me * H * J;
      for (int64_t r = r_begin; r < r_end; ++r) {
#pragma omp simd
        for (int64_t k = 0; k < H * J; ++k) gb[k] += gy[r * H * J + k];
      }
    }
    for (int64_t h = 0; h < H; ++h) {
      for (int64_t i0 = 0; i0 < I; i0 += kBlockRows) {
        int64_t j0 = 0;
        for (; j0 + L <= J; j0 += L)
          block_diagonal_weight_lanes<T, L>(x, gy, gW, r_begin, r_end, h, H, I, J, i0, j0, L);
        if (j0 < J)
          block_diagonal_weight_lanes<T, 0>(x, gy, gW, r_begin, r_end, h, H, I, J, i0, j0,
                                            J - j0);
      }
    }
  }
}

// Hyena's long causal conv, summed directly: y_t = sum_{k <= t} h_k u_{t-k} over one sequence's
// (L, C), vectorised over channels. O(L^2 C) against the FFT's O(L log L C), but at the
// proxies' lengths (up to a few hundred) the FFT's zero padding, strided copies and complex
// buffers cost more than the products (`trials.ops.conv` sets the length up to which this
// runs). kLongConvBlock outputs are summed at once, each in its own registers, so that a tap
// h_k is loaded once for all of them.
constexpr int64_t kLongConvBlock = 8;

// Outputs [t0, t0 + NT) of y_t = sum_k h_k u_{t-k} on lanes [c0, c0 + w): u and y walked with
// time strides su, sy (negative for a sequence walked backwards). NT = 0: nt outputs, known
// at run time (a sequence shorter than a block).
template <typename T, int64_t Width, int64_t NT>
inline void long_conv_block(const T* u, int64_t su, const T* h, T* y, int64_t sy, int64_t C,
                            int64_t c0, int64_t w_tail, int64_t t0, int64_t nt_tail) {
  constexpr int64_t W = kLanes<T>;
  constexpr int64_t B = NT > 0 ? NT : kLongConvBlock;
  const int64_t w = Width > 0 ? Width : w_tail;
  const int64_t nt = NT > 0 ? NT : nt_tail;
  T acc[B][W] = {};
  for (int64_t k = 0; k <= t0; ++k) {  // every output of the block has u_{t-k}
    const T* hk = h + k * C + c0;
    const T* uk = u + (t0 - k) * su + c0;
    for (int64_t j = 0; j < nt; ++j) {
#pragma omp simd
      for (int64_t l = 0; l < w; ++l) acc[j][l] += hk[l] * uk[j * su + l];
    }
  }
  for (int64_t k = t0 + 1; k < t0 + nt; ++k) {  // the triangle: outputs t >= k only
    const T* hk = h + k * C + c0;
    for (int64_t j = k - t0; j < nt; ++j) {
      const T* us = u + (t0 + j - k) * su + c0;
#pragma omp simd
      for (int64_t l = 0; l < w; ++l) acc[j][l] += hk[l] * us[l];
    }
  }
  for (int64_t j = 0; j < nt; ++j) {
    T* yt = y + (t0 + j) * sy + c0;
#pragma omp simd
    for (int64_t l = 0; l < w; ++l) yt[l] = acc[j][l];
  }
}

// The whole sequence on lanes [c0, c0 + w). The last block is moved back to end at L - 1: it
// writes some outputs the block before wrote already, with the same sums.
template <typename T, int64_t Width>
inline void long_conv_lanes(const T* u, int64_t su, const T* h, T* y, int64_t sy, int64_t L,
                            int64_t C, int64_t c0, int64_t w) {
  constexpr int64_t NB = kLongConvBlock;
  if (L < NB) {
    long_conv_block<T, Width, 0>(u, su, h, y, sy, C, c0, w, 0, L);
    return;
  }
  for (int64_t t0 = 0; t0 < L; t0 += NB)
    long_conv_block<T, Width, NB>(u, su, h, y, sy, C, c0, w, t0 + NB <= L ? t0 : L - NB, NB);
}

template <typename T>
void long_conv_sequence(const T* u, int64_t su, const T* h, T* y, int64_t sy, int64_t L,
                        int64_t C) {
  constexpr int64_t W = kLanes<T>;
  int64_t c0 = 0;
  for (; c0 + W <= C; c0 += W) long_conv_lanes<T, W>(u, su, h, y, sy, L, C, c0, W);
  if (c0 < C) long_conv_lanes<T, 0>(u, su, h, y, sy, L, C, c0, C - c0);
}

// u, y (B, L, C); h (L, C): y_t = sum_{k <= t} h_k u_{t-k}.
template <typename T>
void long_conv_fwd(const T* u, const T* h, T* y, int64_t batch, int64_t L, int64_t C,
                   int threads) {
#pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1)
  for (int64_t b = 0; b < batch; ++b)
    long_conv_sequence<T>(u + b * L * C, C, h, y + b * L * C, C, L, C);
}

// Taps [k0, k0 + NB) of dL/dh_k = sum_t gy_t u_{t-k} over one sequence, added to gh; with
// `first` > 0, only taps k0 + first.. are added (the last block, moved back as above).
template <typename T, int64_t Width, int64_t NT>
inline void long_conv_filter_block(const T* u, const T* gy, T* gh, int64_t L, int64_t C,
                                   int64_t c0, int64_t w_tail, int64_t k0, int64_t nk_tail,
                                   int64_t first) {
  constexpr int64_t W = kLanes<T>;
  constexpr int64_t B = NT > 0 ? NT : kLongConvBlock;
  const int64_t w = Width > 0 ? Width : w_tail;
  const int64_t nk = NT > 0 ? NT : nk_tail;
  T acc[B][W] = {};
  for (int64_t t = k0; t < k0 + nk - 1 && t < L; ++t) {  // the triangle: taps k <= t only
    const T* gt = gy + t * C + c0;
    for (int64_t j = 0; j <= t - k0; ++j) {
      const T* us = u + (t - k0 - j) * C + c0;
#pragma omp simd
      for (int64_t l = 0; l < w; ++l) acc[j][l] += gt[l] * us[l];
    }
  }
  for (int64_t t = k0 + nk - 1; t < L; ++t) {  // every tap of the block has u_{t-k}
    const T* gt = gy + t * C + c0;
    const T* ut = u + (t - k0) * C + c0;
    for (int64_t j = 0; j < nk; ++j) {
#pragma omp simd
      for (int64_t l = 0; l < w; ++l) acc[j][l] += gt[l] * ut[l - j * C];
    }
  }
  for (int64_t j = first; j < nk; ++j) {
    T* g = gh + (k0 + j) * C + c0;
#pragma omp simd
    for (int64_t l = 0; l < w; ++l) g[l] += acc[j][l];
  }
}

template <typename T, int64_t Width>
inline void long_conv_filter_lanes(const T* u, const T* gy, T* gh, int64_t L, int64_t C,
                                   int64_t c0, int64_t w) {
  constexpr int64_t NB = kLongConvBlock;
  if (L < NB) {
    long_conv_filter_block<T, Width, 0>(u, gy, gh, L, C, c0, w, 0, L, 0);
    return;
  }
  for (int64_t k0 = 0; k0 < L; k0 += NB) {
    if (k0 + NB <= L) long_conv_filter_block<T, Width, NB>(u, gy, gh, L, C, c0, w, k0, NB, 0);
    else long_conv_filter_block<T, Width, NB>(u, gy, gh, L, C, c0, w, L - NB, NB, k0 - (L - NB));
  }
}

// dL/du_s = sum_{k} h_k gy_{s+k}: the same sum as the forward's on both sequences walked from
// their ends. dL/dh_k = sum_{b, t} gy_t u_{t-k}: grad_h_partial (threads, L, C), one per
// thread, summed by the caller.
template <typename T>
void long_conv_bwd(const T* u, const T* h, const T* gy, T* grad_u, T* grad_h_partial,
                   int64_t batch, int64_t L, int64_t C, int threads) {
  constexpr int64_t W = kLanes<T>;
  std::memset(grad_h_partial, 0, sizeof(T) * threads * L * C);
#pragma omp parallel num_threads(threads) if (threads > 1)
  {
    T* gh = grad_h_partial + thread_index() * L * C;
#pragma omp for schedule(static)
    for (int64_t b = 0; b < batch; ++b) {
      const T* ub = u + b * L * C;
      const T* gb = gy + b * L * C;
      const int64_t last = (L - 1) * C;
      long_conv_sequence<T>(gb + last, -C, h, grad_u + b * L * C + last, -C, L, C);
      int64_t c0 = 0;
      for (; c0 + W <= C; c0 += W) long_conv_filter_lanes<T, W>(ub, gb, gh, L, C, c0, W);
      if (c0 < C) long_conv_filter_lanes<T, 0>(ub, gb, gh, L, C, c0, C - c0);
    }
  }
}

// Mamba-1's step size, dt = softplus(x W^T + b), in one pass each way: at the models' width the
// rank R of the (rows, R) x is 1-8, where a GEMM library runs the (rows, R) x (R, D) products
// far below its peak, and the softplus, its gradient and the bias gradient would each be one
// more pass over a (rows, D) activation.
//   x (rows, R) at row stride x_stride (x_proj's output read in place); Wt (R, D), the transpose
//   of the (D, R) weight; bias (D,) or null; y, gy (rows, D); grad_x (rows, R), contiguous.
// Backward with pre = x W^T + b recomputed per row and gz = gy softplus'(pre):
//   dL/dx = gz W,  dL/dWt = sum_rows x^T gz,  dL/db = sum_rows gz.
// grad_Wt_partial (threads, R, D) and grad_bias_partial (threads, D): one per thread, summed by
// the caller; grad_bias_partial may be null (no bias).

// The ranks four at a time (then one at a time): one pass over a row of D for four ranks, the
// sums in registers, where a pass per rank would load and store the row R times.

template <typename T>  // pre = base + sum_{k<4} x[k] Wt[k, :]  (base may be pre)
inline void add_4_ranks(const T* x, const T* Wt, const T* base, T* pre, int64_t D) {
  const T x0 = x[0], x1 = x[1], x2 = x[2], x3 = x[3];
  const T *w0 = Wt, *w1 = Wt + D, *w2 = Wt + 2 * D, *w3 = Wt + 3 * D;
#pragma omp simd
  for (int64_t d = 0; d < D; ++d)
    pre[d] = base[d] + x0 * w0[d] + x1 * w1[d] + x2 * w2[d] + x3 * w3[d];
}

template <typename T>  // pre = base + x w
inline void add_rank(T x, const T* w, const T* base, T* pre, int64_t D) {
#pragma omp simd
  for (int64_t d = 0; d < D; ++d) pre[d] = base[d] + x * w[d];
}

template <typename T>  // pre = bias + x_row Wt (bias null: zeros)
inline void linear_row(const T* x_row, const T* Wt, const T* bias, T* pre, int64_t R,
                       int64_t D) {
  const T* base = bias;
  if (!base) {
    std::memset(pre, 0, sizeof(T) * D);
    base = pre;
  }
  int64_t r = 0;
  for (; r + 4 <= R; r += 4, base = pre) add_4_ranks(x_row + r, Wt + r * D, base, pre, D);
  for (; r < R; ++r, base = pre) add_rank(x_row[r], Wt + r * D, base, pre, D);
  if (base != pre) std::memcpy(pre, base, sizeof(T) * D);  // R = 0
}

template <typename T>  // grad_x[k] = g . Wt[k, :],  gW[k, :] += x[k] g  for k < 4
inline void grads_4_ranks(const T* x, const T* Wt, const T* g, T* gW, T* grad_x, int64_t D) {
  const T x0 = x[0], x1 = x[1], x2 = x[2], x3 = x[3];
  const T *w0 = Wt, *w1 = Wt + D, *w2 = Wt + 2 * D, *w3 = Wt + 3 * D;
  T *gw0 = gW, *gw1 = gW + D, *gw2 = gW + 2 * D, *gw3 = gW + 3 * D;
  // the four sums by lane over whole vectors (see sum_lanes), the remainder into lane 0
  constexpr int64_t W = kLanes<T>;
  T s0[W] = {}, s1[W] = {}, s2[W] = {}, s3[W] = {};
  const auto step = [&](int64_t d, int64_t l) {
    const T gd = g[d];
    s0[l] += gd * w0[d], s1[l] += gd * w1[d], s2[l] += gd * w2[d], s3[l] += gd * w3[d];
    gw0[d] += x0 * gd, gw1[d] += x1 * gd, gw2[d] += x2 * gd, gw3[d] += x3 * gd;
  };
  const int64_t whole = D / W * W;
  for (int64_t d0 = 0; d0 < whole; d0 += W) {
#pragma omp simd
    for (int64_t l = 0; l < W; ++l) step(d0 + l, l);
  }
  for (int64_t d = whole; d < D; ++d) step(d, 0);
  grad_x[0] = sum_lanes(s0), grad_x[1] = sum_lanes(s1);
  grad_x[2] = sum_lanes(s2), grad_x[3] = sum_lanes(s3);
}

template <typename T>  // returns g . w;  gw += x g
inline T grads_rank(T x, const T* w, const T* g, T* gw, int64_t D) {
  return sum_by_lanes<T>(D, [=](int64_t d) {
    gw[d] += x * g[d];
    return g[d] * w[d];
  });
}

template <typename T>
void softplus_linear_fwd(const T* x, int64_t x_stride, const T* Wt, const T* bias, T* y,
                         int64_t rows, int64_t R, int64_t D, int threads) {
#pragma omp parallel num_threads(threads) if (threads > 1)
  {
    thread_local Scratch<T> scratch;
    T* decay = scratch.get(D);
#pragma omp for schedule(static)
    for (int64_t row = 0; row < rows; ++row) {
      T* y_row = y + row * D;  // holds the pre-activation, then its softplus
      linear_row(x + row * x_stride, Wt, bias, y_row, R, D);
      softplus_span(y_row, y_row, decay, D);
    }
  }
}

template <typename T>
void softplus_linear_bwd(const T* x, int64_t x_stride, const T* Wt, const T* bias, const T* gy,
                         T* grad_x, T* grad_Wt_partial, T* grad_bias_partial, int64_t rows,
                         int64_t R, int64_t D, int threads) {
  std::memset(grad_Wt_partial, 0, sizeof(T) * threads * R * D);
  if (grad_bias_partial) std::memset(grad_bias_partial, 0, sizeof(T) * threads * D);
#pragma omp parallel num_threads(threads) if (threads > 1)
  {
    const int64_t me = thread_index();
    T* gW = grad_Wt_partial + me * R * D;
    T* gb = grad_bias_partial ? grad_bias_partial + me * D : nullptr;
    thread_local Scratch<T> scratch;
    T* gz = scratch.get(D);
#pragma omp for schedule(static)
    for (int64_t row = 0; row < rows; ++row) {
      const T* x_row = x + row * x_stride;
      linear_row(x_row, Wt, bias, gz, R, D);
      softplus_slope_span(gz, gy + row * D, gz, D);
      const T* g = gz;
      if (gb) {
#pragma omp simd
        for (int64_t d = 0; d < D; ++d) gb[d] += g[d];
      }
      T* gx_row = grad_x + row * R;
      int64_t r = 0;
      for (; r + 4 <= R; r += 4) grads_4_ranks(x_row + r, Wt + r * D, g, gW + r * D, gx_row + r, D);
      for (; r < R; ++r) gx_row[r] = grads_rank(x_row[r], Wt + r * D, g, gW + r * D, D);
    }
  }
}

// RMSNorm over rows of `width`: y = x r w with r = 1 / sqrt(mean(x^2) + eps) (kept per row for
// the backward pass). Backward with x_hat = x r:
//   dL/dw = sum_rows gy x_hat,  dL/dx = r (gy w - x_hat mean(gy w x_hat)).
// grad_w_partial (threads, width): one row per thread, summed by the caller.
//
// The pre-norm residual add fused in front (`delta` not null): x <- x + delta, written to
// `sum`, then normed; the backward pass adds `grad_sum` (dL/d sum from the residual stream's
// other uses; may be null) to dL/dx, which is then dL/dx and dL/d delta alike. One sweep where
// the add and the norm took one each way, and no separate pass for autograd's sum of the two
// gradients.

template <typename T>
void rms_norm_fwd(const T* x, const T* delta, const T* w, T* sum, T* y, T* inv_rms, int64_t rows,
                  int64_t width, T eps, int threads) {
#pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1)
  for (int64_t r = 0; r < rows; ++r) {
    const T* x_r = x + r * width;
    if (delta) {
      const T* delta_r = delta + r * width;
      T* sum_r = sum + r * width;
#pragma omp simd
      for (int64_t i = 0; i < width; ++i) sum_r[i] = x_r[i] + delta_r[i];
      x_r = sum_r;
    }
    T* y_r = y + r * width;
    // a plain sum of squares: GCC's own reduction is faster here than the lanes' (0.93x)
    T sq = 0;
#pragma omp simd reduction(+ : sq)
    for (int64_t i = 0; i < width; ++i) sq += x_r[i] * x_r[i];
    const T scale = T(1) / std::sqrt(sq / T(width) + eps);
    inv_rms[r] = scale;
#pragma omp simd
    for (int64_t i = 0; i < width; ++i) y_r[i] = x_r[i] * scale * w[i];
  }
}

template <typename T>
void rms_norm_bwd(const T* x, const T* w, const T* inv_rms, const T* gy, const T* grad_sum,
                  T* grad_x, T* grad_w_partial, int64_t rows, int64_t width, int threads) {
  std::memset(grad_w_partial, 0, sizeof(T) * threads * width);
#pragma omp parallel num_threads(threads) if (threads > 1)
  {
    T* gw = grad_w_partial + static_cast<int64_t>(thread_index()) * width;
#pragma omp for schedule(static)
    for (int64_t r = 0; r < rows; ++r) {
      const T* x_r = x + r * width;
      const T* g_r = gy + r * width;
      T* gx_r = grad_x + r * width;
      const T scale = inv_rms[r];
      const T dot = sum_by_lanes<T>(width, [=](int64_t i) {
        const T x_hat = x_r[i] * scale;
        gw[i] += g_r[i] * x_hat;
        return g_r[i] * w[i] * x_hat;
      }) / T(width);
      if (grad_sum) {
        const T* gs_r = grad_sum + r * width;
#pragma omp simd
        for (int64_t i = 0; i < width; ++i)
          gx_r[i] = scale * (g_r[i] * w[i] - x_r[i] * scale * dot) + gs_r[i];
      } else {
#pragma omp simd
        for (int64_t i = 0; i < width; ++i)
          gx_r[i] = scale * (g_r[i] * w[i] - x_r[i] * scale * dot);
      }
    }
  }
}

// e^y - 1 to full relative precision near 0: its Taylor series to y^8 where |y| < 1/2 (the
// first term left out is below 1e-8 of the sum there), e^y - 1 beyond, where nothing cancels.
// No log: GCC vectorises exp_fast and log_fast only in separate loops.
inline float expm1_of(float y) {
  const float series =
      y * (1.0f + y * (1.0f / 2 + y * (1.0f / 6 + y * (1.0f / 24 + y * (1.0f / 120 + y * (
          1.0f / 720 + y * (1.0f / 5040 + y * (1.0f / 40320))))))));
  const float direct = exp_fast(y) - 1.0f;
  return std::abs(y) < 0.5f ? series : direct;
}
inline double expm1_of(double y) { return std::expm1(y); }

// The RG-LRU's gates (Griffin), elementwise over rows of width w, from the pre-activations of
// the two gates ga, gx, the conv output x and one coefficient per channel, coef = -c
// softplus(-Lambda) <= 0:
//   r = sigmoid(ga), i = sigmoid(gx), log a = coef r, a = e^(log a),
//   m = sqrt(max(1 - a^2, floor)) with 1 - a^2 = -expm1(2 log a), b = m i x.
// Backward: dL/dlog a = ga_bar a - gb i x a^2 / m (the second term 0 where the floor holds),
// dL/dga = dL/dlog a coef r (1 - r), dL/dcoef = sum of dL/dlog a r, dL/dgx = gb m x i (1 - i),
// dL/dx = gb m i. grad_coef_partial is (threads, w), summed by the caller.
template <typename T>
inline void rglru_gate_values(T ga, T gx, T coef, T floor, T& r, T& i, T& a, T& m,
                              T& one_minus_a2) {
  r = sigmoid(ga);
  i = sigmoid(gx);
  const T log_a = coef * r;
  a = exp_of(log_a);
  one_minus_a2 = -expm1_of(T(2) * log_a);
  m = std::sqrt(one_minus_a2 > floor ? one_minus_a2 : floor);
}

template <typename T>
void rglru_gates_fwd(const T* ga, const T* gx, const T* x, const T* coef, T* a_out, T* b_out,
                     int64_t rows, int64_t width, T floor, int threads) {
#pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1)
  for (int64_t row = 0; row < rows; ++row) {
    const int64_t off = row * width;
#pragma omp simd
    for (int64_t c = 0; c < width; ++c) {
      T r, i, a, m, q;
      rglru_gate_values(ga[off + c], gx[off + c], coef[c], floor, r, i, a, m, q);
      a_out[off + c] = a;
      b_out[off + c] = m * i * x[off + c];
    }
  }
}

template <typename T>
void rglru_gates_bwd(const T* ga, const T* gx, const T* x, const T* coef, const T* grad_a,
                     const T* grad_b, T* grad_ga, T* grad_gx, T* grad_x, T* grad_coef_partial,
                     int64_t rows, int64_t width, T floor, int threads) {
  std::memset(grad_coef_partial, 0, sizeof(T) * threads * width);
#pragma omp parallel num_threads(threads) if (threads > 1)
  {
    T* gc = grad_coef_partial + static_cast<int64_t>(thread_index()) * width;
#pragma omp for schedule(static)
    for (int64_t row = 0; row < rows; ++row) {
      const int64_t off = row * width;
#pragma omp simd
      for (int64_t c = 0; c < width; ++c) {
        T r, i, a, m, q;
        const T xv = x[off + c];
        rglru_gate_values(ga[off + c], gx[off + c], coef[c], floor, r, i, a, m, q);
        const T gb = grad_b[off + c];
        const T slope_m = gb * i * xv * a * a / m;  // m >= sqrt(floor) > 0
        const T through_m = q > floor ? slope_m : T(0);  // computed first: the select vectorises
        const T g_log_a = grad_a[off + c] * a - through_m;
        gc[c] += g_log_a * r;
        grad_ga[off + c] = g_log_a * coef[c] * r * (T(1) - r);
        grad_gx[off + c] = gb * m * xv * i * (T(1) - i);
        grad_x[off + c] = gb * m * i;
      }
    }
  }
}

// Rotary embeddings on x (B, L, H, hd), positions along L: channel i < rd/2 of each head pairs
// with i + rd/2 and turns by the angle of (t, i), whose cos and sin are rows of (L, rd/2)
// tables; channels rd.. pass unchanged. sign -1 turns by the opposite angle (the backward).
template <typename T>
void rope(const T* x, const T* cos_t, const T* sin_t, T* out, int64_t batch, int64_t length,
          int64_t heads, int64_t head_dim, int64_t rotary_dim, T sign, int threads) {
  const int64_t half = rotary_dim / 2;
#pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1)
  for (int64_t row = 0; row < batch * length; ++row) {
    const T* c = cos_t + (row % length) * half;
    const T* s = sin_t + (row % length) * half;
    for (int64_t h = 0; h < heads; ++h) {
      const T* x_h = x + (row * heads + h) * head_dim;
      T* o_h = out + (row * heads + h) * head_dim;
#pragma omp simd
      for (int64_t i = 0; i < half; ++i) {
        const T x1 = x_h[i], x2 = x_h[i + half], sn = sign * s[i];
        o_h[i] = x1 * c[i] - x2 * sn;
        o_h[i + half] = x1 * sn + x2 * c[i];
      }
      for (int64_t i = rotary_dim; i < head_dim; ++i) o_h[i] = x_h[i];
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Causal attention at small head dims, forward and backward, one (batch, KV head) slice per
// thread: the slice's keys and values (N x hd, packed, a few KiB to a few hundred) stay in
// cache while every query head of its group (GQA: query head h reads KV head h / group) walks
// them.
//   s_ij = scale q_i . k_j for keys j in [lo(i), i], lo(i) = 0 (causal) or i - window + 1;
//   o_i = sum_j softmax_j(s_i) v_j,  lse_i = log sum_j exp(s_ij) kept for the backward pass.
// Forward: a block of W queries (one vector: 16 floats, 8 doubles) against chunks of
// kChunkKeys keys with an online softmax (running maximum and sum per query, the partial
// outputs rescaled when the maximum grows). A chunk's scores come kRows keys at a time, each a
// vector over the block's queries (queries transposed: one vector load and kRows products per
// channel); masks, maxima and sums run down the lanes, so there is no horizontal reduction
// anywhere; o_i is then a sum of value rows weighted by the query's lane. Keys after the
// block, and before its window, are never computed.
// Backward, with D_i = dO_i . O_i, p_ij = exp(s_ij - lse_i), ds_ij = p_ij (dO_i . v_j - D_i):
//   dQ_i = scale sum_j ds_ij k_j,  dK_j = scale sum_i ds_ij q_i,  dV_j = sum_i p_ij dO_i,
// by tiles of kTileKeys keys x kTileQueries queries (the queries at or after the keys): the
// tile's scores and dO_i . v_j over vectors of queries (q and dO transposed), p and ds, then
// the three sums of rows, each reading the tile as weights.
// The head dim is a template argument (kernels for 8, 16, 32 and 64) and the arithmetic is on
// GCC/Clang vector types of 64 bytes (a whole row when it is shorter): the accumulators of a
// block of rows stay in registers, which the compiler does not do for loops of runtime length.
// Strides (in elements; the head dim is contiguous): per tensor (batch, head, position), in
// `strides` in the order q, k, v, o for the forward and q, k, v, o, dO, dQ, dK, dV backward.

constexpr int64_t kRows = 8;          // keys whose scores are computed together
constexpr int64_t kTileKeys = 16;     // backward tile: keys (a multiple of kRows); 32 made
                                      // the banded backward 1.08x slower (at window 64, a
                                      // third of its scores fell outside the band)
constexpr int64_t kTileQueries = 64;  // backward tile: queries (a multiple of every width)
constexpr int64_t kChunkKeys = 128;   // forward: keys per step of the online softmax

template <typename T, int Bytes>
struct VecOf;
template <>
struct VecOf<float, 32> { typedef float type __attribute__((vector_size(32))); };
template <>
struct VecOf<float, 64> { typedef float type __attribute__((vector_size(64))); };
template <>
struct VecOf<double, 64> { typedef double type __attribute__((vector_size(64))); };

template <typename T, int HD>
struct Lanes {
  static constexpr int kBytes = HD * int(sizeof(T)) < 64 ? HD * int(sizeof(T)) : 64;
  using Vec = typename VecOf<T, kBytes>::type;
  static constexpr int kWidth = kBytes / int(sizeof(T));  // values per vector
  static constexpr int kPerRow = HD / kWidth;             // vectors per row of HD values
  // rows summed together: 8 chains of products to cover the latency, 16 accumulators at most
  // (half the 512-bit register file); a divisor of kRows and of W
  static constexpr int kSumRows = kPerRow >= 8 ? 2 : (kPerRow >= 4 ? 4 : 8);
};

template <typename V, typename T>
inline V load(const T* p) {
  V v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

template <typename T, typename V>
inline void store(T* p, V v) { std::memcpy(p, &v, sizeof v); }

inline int64_t round_up(int64_t n, int64_t m) { return (n + m - 1) / m * m; }

struct View {  // a (batch, head, position, hd) tensor whose head dim is contiguous
  int64_t batch, head, pos;
  template <typename T>
  T* rows(T* base, int64_t b, int64_t h) const { return base + b * batch + h * head; }
};

inline View view_at(const int64_t* strides, int which) {
  return View{strides[3 * which], strides[3 * which + 1], strides[3 * which + 2]};
}

inline int64_t first_key(int64_t i, int64_t window) {
  return window > 0 && i - window + 1 > 0 ? i - window + 1 : 0;
}

// out (HD x npad) = the transpose of n rows of HD values `pos` apart, zeros after column n.
template <typename T, int HD>
inline void transpose_rows(const T* rows, int64_t pos, int64_t n, int64_t npad, T* out) {
  for (int64_t i = 0; i < n; ++i)
    for (int d = 0; d < HD; ++d) out[d * npad + i] = rows[i * pos + d];
  for (int d = 0; d < HD; ++d) std::memset(out + d * npad + n, 0, sizeof(T) * (npad - n));
}

// out (npad x HD) = n rows of HD values `pos` apart, packed, then zero rows; and back.
template <typename T, int HD>
inline void pack_rows(const T* rows, int64_t pos, int64_t n, int64_t npad, T* out) {
  for (int64_t i = 0; i < n; ++i) std::memcpy(out + i * HD, rows + i * pos, sizeof(T) * HD);
  std::memset(out + n * HD, 0, sizeof(T) * (npad - n) * HD);
}

template <typename T, int HD>
inline void unpack_rows(const T* packed, int64_t n, int64_t pos, T* rows) {
  for (int64_t i = 0; i < n; ++i) std::memcpy(rows + i * pos, packed + i * HD, sizeof(T) * HD);
}

// acc[r] = sum_j w[r * w_row + j * w_step] rows_j for r < R, over n rows `pos` apart.
template <typename T, int HD, int R>
inline void weighted_sums(const T* w, int64_t w_row, int64_t w_step, const T* rows,
                          int64_t pos, int64_t n,
                          typename Lanes<T, HD>::Vec (&acc)[R][Lanes<T, HD>::kPerRow]) {
  using Vec = typename Lanes<T, HD>::Vec;
  constexpr int W = Lanes<T, HD>::kWidth, DV = Lanes<T, HD>::kPerRow;
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < DV; ++c) acc[r][c] = Vec{};
  for (int64_t j = 0; j < n; ++j) {
    Vec row[DV];
    for (int c = 0; c < DV; ++c) row[c] = load<Vec>(rows + j * pos + c * W);
    for (int r = 0; r < R; ++r) {
      const T weight = w[r * w_row + j * w_step];
      for (int c = 0; c < DV; ++c) acc[r][c] += row[c] * weight;
    }
  }
}

// out += factor * acc (one row of HD values).
template <typename T, int HD>
inline void add_row(T* out, const typename Lanes<T, HD>::Vec* acc, T factor) {
  using Vec = typename Lanes<T, HD>::Vec;
  constexpr int W = Lanes<T, HD>::kWidth;
  for (int c = 0; c < Lanes<T, HD>::kPerRow; ++c)
    store(out + c * W, load<Vec>(out + c * W) + acc[c] * factor);
}

// The online softmax's weights for `rows` keys of one block of W queries (a row of t per key,
// a lane per query): t <- exp(t - top), where unseen keys (-inf) give 0, and sum += t by lane.
template <typename T, int W>
inline void softmax_weights(T* t, int64_t rows, const T* top, T* sum) {
  T shift[W];
  for (int l = 0; l < W; ++l) shift[l] = top[l] == -INFINITY ? T(0) : top[l];  // all unseen
  for (int64_t j = 0; j < rows; ++j) {
#pragma omp simd
    for (int l = 0; l < W; ++l) t[j * W + l] -= shift[l];
  }
  exp_in_place(t, rows * W);
  for (int64_t j = 0; j < rows; ++j) {
#pragma omp simd
    for (int l = 0; l < W; ++l) sum[l] += t[j * W + l];
  }
}

#ifdef __AVX512F__
// One pass with the exp in registers, where the generic version walks t three times: the
// forward 1.07x at seq 256, 1.08x at 1024.
template <>
inline void softmax_weights<float, 16>(float* t, int64_t rows, const float* top, float* sum) {
  const __m512 top_v = _mm512_loadu_ps(top);
  const __m512 shift = _mm512_maskz_mov_ps(
      _mm512_cmp_ps_mask(top_v, _mm512_set1_ps(-INFINITY), _CMP_NEQ_UQ), top_v);
  __m512 total = _mm512_loadu_ps(sum);
  for (int64_t j = 0; j < rows; ++j) {
    const __m512 weight = exp_lanes(_mm512_sub_ps(_mm512_loadu_ps(t + j * 16), shift));
    _mm512_storeu_ps(t + j * 16, weight);
    total = _mm512_add_ps(total, weight);
  }
  _mm512_storeu_ps(sum, total);
}
#endif

template <typename T, int HD>
void attention_fwd(const T* q, const T* k, const T* v, T* o, T* lse, const int64_t* strides,
                   int64_t batch, int64_t heads, int64_t kv_heads, int64_t length,
                   int64_t window, T scale, int threads) {
  using L = Lanes<T, HD>;
  using Vec = typename L::Vec;
  constexpr int W = L::kWidth, DV = L::kPerRow, R = L::kSumRows;
  const View Q = view_at(strides, 0), K = view_at(strides, 1), V = view_at(strides, 2),
             O = view_at(strides, 3);
  const int64_t group = heads / kv_heads;
  const int64_t npad = round_up(length, kTileQueries) + kRows;  // rows a block may reach
#pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1)
  for (int64_t slice = 0; slice < batch * kv_heads; ++slice) {
    const int64_t b = slice / kv_heads, g = slice % kv_heads;
    thread_local Scratch<T> scratch;
    T* kp = scratch.get(3 * HD * npad + (kChunkKeys + kRows) * W + W * HD);
    T* vp = kp + HD * npad;          // (npad, HD) keys and values packed
    T* qt = vp + HD * npad;          // (HD, npad) one head's queries transposed
    T* t = qt + HD * npad;           // (chunk keys, W) scores, then weights
    T* acc_o = t + (kChunkKeys + kRows) * W;  // (W, HD) the block's outputs, unnormalised
    pack_rows<T, HD>(K.rows(k, b, g), K.pos, length, npad, kp);
    pack_rows<T, HD>(V.rows(v, b, g), V.pos, length, npad, vp);
    for (int64_t h = g * group; h < (g + 1) * group; ++h) {
      transpose_rows<T, HD>(Q.rows(q, b, h), Q.pos, length, npad, qt);
      T* o_rows = O.rows(o, b, h);
      T* lse_h = lse + (b * heads + h) * length;
      for (int64_t i0 = 0; i0 < length; i0 += W) {  // W queries, one per lane
        const int64_t rows = i0 + W <= length ? W : length - i0;
        const int64_t lo = first_key(i0, window), hi = i0 + rows;  // the block's keys
        T top[W], sum[W], scale_old[W];
        for (int l = 0; l < W; ++l) top[l] = -INFINITY, sum[l] = 0;
        std::memset(acc_o, 0, sizeof(T) * W * HD);
        for (int64_t c0 = lo; c0 < hi; c0 += kChunkKeys) {  // online softmax over chunks
          const int64_t c1 = chunk_end(c0, kChunkKeys, hi);
          for (int64_t jr = c0; jr < c1; jr += kRows) {
            Vec sc[kRows] = {};
            for (int d = 0; d < HD; ++d) {
              const Vec qv = load<Vec>(qt + d * npad + i0);
              for (int r = 0; r < kRows; ++r) sc[r] += qv * kp[(jr + r) * HD + d];
            }
            for (int r = 0; r < kRows; ++r) store(t + (jr - c0 + r) * W, sc[r] * scale);
          }
          // -inf where the key is not the query's (or the lane is past the sequence): its
          // weight is then exactly 0
          T chunk_top[W];
          for (int l = 0; l < W; ++l) chunk_top[l] = -INFINITY;
          for (int64_t j = c0; j < c1; ++j) {
            T* t_j = t + (j - c0) * W;
#pragma omp simd
            for (int l = 0; l < W; ++l) {
              const int64_t i = i0 + l;
              const bool seen = j <= i && i < length && (window <= 0 || i - j < window);
              const T x = seen ? t_j[l] : -INFINITY;
              t_j[l] = x;
              chunk_top[l] = x > chunk_top[l] ? x : chunk_top[l];
            }
          }
#pragma omp simd
          for (int l = 0; l < W; ++l) {
            const T next = chunk_top[l] > top[l] ? chunk_top[l] : top[l];
            scale_old[l] = next == -INFINITY ? T(1) : exp_of(top[l] - next);
            sum[l] *= scale_old[l];
            top[l] = next;
          }
          softmax_weights<T, W>(t, c1 - c0, top, sum);
          for (int64_t l0 = 0; l0 < rows; l0 += R) {  // acc_o_i += sum_j p_ij v_j
            Vec acc[R][DV];
            weighted_sums<T, HD, R>(t + l0, 1, W, vp + c0 * HD, HD, c1 - c0, acc);
            for (int64_t l = l0; l < l0 + R && l < rows; ++l) {
              T* acc_l = acc_o + l * HD;
              if (c0 > lo) {
                for (int c = 0; c < DV; ++c)
                  store(acc_l + c * W, load<Vec>(acc_l + c * W) * scale_old[l]);
              }
              add_row<T, HD>(acc_l, acc[l - l0], T(1));
            }
          }
        }
        T inv[W];
#pragma omp simd
        for (int l = 0; l < W; ++l) {
          const T total = sum[l] > T(0) ? sum[l] : T(1);  // lanes past the sequence
          inv[l] = T(1) / total;
          sum[l] = top[l] + log_of(total);
        }
        std::memcpy(lse_h + i0, sum, sizeof(T) * rows);
        for (int64_t l = 0; l < rows; ++l) {
          T* o_i = o_rows + (i0 + l) * O.pos;
          const T* acc_l = acc_o + l * HD;
          for (int c = 0; c < DV; ++c) store(o_i + c * W, load<Vec>(acc_l + c * W) * inv[l]);
        }
      }
    }
  }
}

template <typename T, int HD>
void attention_bwd(const T* q, const T* k, const T* v, const T* o, const T* grad_o,
                   const T* lse, T* grad_q, T* grad_k, T* grad_v, const int64_t* strides,
                   int64_t batch, int64_t heads, int64_t kv_heads, int64_t length,
                   int64_t window, T scale, int threads) {
  using L = Lanes<T, HD>;
  using Vec = typename L::Vec;
  constexpr int W = L::kWidth, R = L::kSumRows;
  constexpr int64_t TQ = kTileQueries;
  const View Q = view_at(strides, 0), K = view_at(strides, 1), V = view_at(strides, 2),
             O = view_at(strides, 3), GO = view_at(strides, 4), GQ = view_at(strides, 5),
             GK = view_at(strides, 6), GV = view_at(strides, 7);
  const int64_t group = heads / kv_heads;
  const int64_t npad = round_up(length, TQ);  // a multiple of W, kRows and R
  const int64_t tile = kTileKeys * TQ;
#pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1)
  for (int64_t slice = 0; slice < batch * kv_heads; ++slice) {
    const int64_t b = slice / kv_heads, g = slice % kv_heads;
    thread_local Scratch<T> scratch;
    T* kp = scratch.get(9 * HD * npad + 2 * npad + 2 * tile);
    T* vp = kp + HD * npad;      // (npad, HD) keys and values packed
    T* qp = vp + HD * npad;      // (npad, HD) one head's queries and dO packed,
    T* gop = qp + HD * npad;
    T* qt = gop + HD * npad;     // (HD, npad) and transposed
    T* got = qt + HD * npad;
    T* gkp = got + HD * npad;    // (npad, HD) dK, dV, dQ accumulated packed
    T* gvp = gkp + HD * npad;
    T* gqp = gvp + HD * npad;
    T* lse_h = gqp + HD * npad;  // (npad,) lse_i
    T* delta = lse_h + npad;     // (npad,) dO_i . O_i
    T* p_tile = delta + npad;    // (keys, TQ) scores, then p
    T* ds_tile = p_tile + tile;  // (keys, TQ) dO.v, then ds
    pack_rows<T, HD>(K.rows(k, b, g), K.pos, length, npad, kp);
    pack_rows<T, HD>(V.rows(v, b, g), V.pos, length, npad, vp);
    std::memset(gkp, 0, sizeof(T) * 2 * HD * npad);
    for (int64_t h = g * group; h < (g + 1) * group; ++h) {
      const T* o_rows = O.rows(o, b, h);
      const T* go_rows = GO.rows(grad_o, b, h);
      pack_rows<T, HD>(Q.rows(q, b, h), Q.pos, length, npad, qp);
      pack_rows<T, HD>(go_rows, GO.pos, length, npad, gop);
      transpose_rows<T, HD>(qp, HD, npad, npad, qt);
      transpose_rows<T, HD>(gop, HD, npad, npad, got);
      std::memset(gqp, 0, sizeof(T) * HD * npad);
      std::memcpy(lse_h, lse + (b * heads + h) * length, sizeof(T) * length);
      for (int64_t i = 0; i < length; ++i) {
        const T* o_i = o_rows + i * O.pos;
        const T* go_i = gop + i * HD;
        delta[i] = sum_by_lanes<T>(HD, [=](int64_t d) { return go_i[d] * o_i[d]; });
      }
      for (int64_t i = length; i < npad; ++i) lse_h[i] = delta[i] = 0;
      for (int64_t j0 = 0; j0 < length; j0 += kTileKeys) {
        const int64_t j1 = chunk_end(j0, kTileKeys, length);
        // the queries that see any of these keys: j0 .. (last key + window - 1)
        const int64_t i_end = window > 0 && j1 - 1 + window < length ? j1 - 1 + window : length;
        for (int64_t i0 = j0; i0 < i_end; i0 += TQ) {
          const int64_t nq = chunk_end(i0, TQ, i_end) - i0;
          const int64_t nqv = round_up(nq, W);
          for (int64_t jr = j0; jr < j1; jr += kRows) {  // scores and dO_i . v_j, kRows keys
            const T* k_block = kp + jr * HD;
            const T* v_block = vp + jr * HD;
            for (int64_t c = 0; c < nqv; c += W) {
              Vec sc[kRows] = {}, dp[kRows] = {};
              for (int d = 0; d < HD; ++d) {
                const Vec qv = load<Vec>(qt + d * npad + i0 + c);
                const Vec gv = load<Vec>(got + d * npad + i0 + c);
                for (int r = 0; r < kRows; ++r) {
                  sc[r] += qv * k_block[r * HD + d];
                  dp[r] += gv * v_block[r * HD + d];
                }
              }
              for (int r = 0; r < kRows; ++r) {
                store(p_tile + (jr - j0 + r) * TQ + c, sc[r]);
                store(ds_tile + (jr - j0 + r) * TQ + c, dp[r]);
              }
            }
          }
          // p and ds; zero where the key is not seen (no test at all where every key is)
          const bool all_seen = i0 >= j1 - 1 && i0 + nqv <= length
                                && (window <= 0 || i0 + nqv - 1 - j0 < window);
          for (int64_t j = j0; j < j1; ++j) {
            T* p_j = p_tile + (j - j0) * TQ - i0;
            T* ds_j = ds_tile + (j - j0) * TQ - i0;
#pragma omp simd
            for (int64_t i = i0; i < i0 + nqv; ++i) {
              const bool seen =
                  all_seen || (i >= j && i < length && (window <= 0 || i - j < window));
              p_j[i] = seen ? p_j[i] * scale - lse_h[i] : -INFINITY;
            }
            exp_in_place(p_j + i0, nqv);
#pragma omp simd
            for (int64_t i = i0; i < i0 + nqv; ++i) ds_j[i] = p_j[i] * (ds_j[i] - delta[i]);
          }
          for (int64_t jr = j0; jr < j1; jr += R) {  // dV_j, dK_j: sums over the queries
            Vec acc_v[R][L::kPerRow], acc_k[R][L::kPerRow];
            const T* p_r = p_tile + (jr - j0) * TQ;
            const T* ds_r = ds_tile + (jr - j0) * TQ;
            weighted_sums<T, HD, R>(p_r, TQ, 1, gop + i0 * HD, HD, nq, acc_v);
            weighted_sums<T, HD, R>(ds_r, TQ, 1, qp + i0 * HD, HD, nq, acc_k);
            for (int64_t r = 0; r < R; ++r) {  // rows past the keys: zeros, never written out
              add_row<T, HD>(gvp + (jr + r) * HD, acc_v[r], T(1));
              add_row<T, HD>(gkp + (jr + r) * HD, acc_k[r], scale);
            }
          }
          for (int64_t ir = 0; ir < nq; ir += R) {  // dQ_i: sums over the tile's keys
            Vec acc[R][L::kPerRow];
            weighted_sums<T, HD, R>(ds_tile + ir, 1, TQ, kp + j0 * HD, HD, j1 - j0, acc);
            for (int64_t r = 0; r < R; ++r)
              add_row<T, HD>(gqp + (i0 + ir + r) * HD, acc[r], scale);
          }
        }
      }
      unpack_rows<T, HD>(gqp, length, GQ.pos, GQ.rows(grad_q, b, h));
    }
    unpack_rows<T, HD>(gkp, length, GK.pos, GK.rows(grad_k, b, g));
    unpack_rows<T, HD>(gvp, length, GV.pos, GV.rows(grad_v, b, g));
  }
}

// The head dims with a kernel: the entry points return 0 after running it, 1 for any other.
#define HNAS_FOR_HEAD_DIMS(CALL) \
  switch (hd) {                  \
    case 8: CALL(8); return 0;   \
    case 16: CALL(16); return 0; \
    case 32: CALL(32); return 0; \
    case 64: CALL(64); return 0; \
    default: return 1;           \
  }

template <typename T>
int attention_fwd_any(const T* q, const T* k, const T* v, T* o, T* lse, const int64_t* strides,
                      int64_t batch, int64_t heads, int64_t kv_heads, int64_t length,
                      int64_t hd, int64_t window, T scale, int threads) {
#define HNAS_FWD(HD) attention_fwd<T, HD>(q, k, v, o, lse, strides, batch, heads, kv_heads, \
                                          length, window, scale, threads)
  HNAS_FOR_HEAD_DIMS(HNAS_FWD)
#undef HNAS_FWD
}

template <typename T>
int attention_bwd_any(const T* q, const T* k, const T* v, const T* o, const T* grad_o,
                      const T* lse, T* grad_q, T* grad_k, T* grad_v, const int64_t* strides,
                      int64_t batch, int64_t heads, int64_t kv_heads, int64_t length,
                      int64_t hd, int64_t window, T scale, int threads) {
#define HNAS_BWD(HD) attention_bwd<T, HD>(q, k, v, o, grad_o, lse, grad_q, grad_k, grad_v, \
                                          strides, batch, heads, kv_heads, length, window, \
                                          scale, threads)
  HNAS_FOR_HEAD_DIMS(HNAS_BWD)
#undef HNAS_BWD
}

}  // namespace

// C entry points: one per op, pass and dtype (f32, f64). Null pointers mean "absent".
#define HNAS_EXPORT extern "C" __attribute__((visibility("default")))

#define HNAS_SELECTIVE_SCAN(SUFFIX, T)                                                        \
  HNAS_EXPORT void hnas_selective_scan_fwd_##SUFFIX(                                           \
      const T* x, const T* dt, const T* At, const T* Bm, const T* Cm, const T* Dskip,          \
      const T* z, const T* h0, T* y, T* out, T* final_state, T* entry, int64_t batch,          \
      int64_t length, int64_t D, int64_t N, int64_t chunk, int threads) {                      \
    selective_scan_fwd<T>(x, dt, At, Bm, Cm, Dskip, z, h0, y, out, final_state, entry, batch,  \
                          length, D, N, chunk, threads);                                       \
  }                                                                                            \
  HNAS_EXPORT void hnas_selective_scan_bwd_##SUFFIX(                                           \
      const T* x, const T* dt, const T* At, const T* Bm, const T* Cm, const T* Dskip,          \
      const T* z, const T* y, const T* entry, const T* grad_out, const T* grad_final,          \
      T* grad_x, T* grad_dt, T* grad_At_partial, T* grad_B, T* grad_C, T* grad_D_partial,      \
      T* grad_z, T* grad_h0, int64_t batch, int64_t length, int64_t D, int64_t N,              \
      int64_t chunk, int threads) {                                                            \
    selective_scan_bwd<T>(x, dt, At, Bm, Cm, Dskip, z, y, entry, grad_out, grad_final, grad_x, \
                          grad_dt, grad_At_partial, grad_B, grad_C, grad_D_partial, grad_z,    \
                          grad_h0, batch, length, D, N, chunk, threads);                       \
  }

#define HNAS_LINEAR_SCAN(SUFFIX, T)                                                            \
  HNAS_EXPORT void hnas_linear_scan_fwd_##SUFFIX(const T* a, const T* bx, const T* h0, T* h,  \
                                                 int64_t batch, int64_t length, int64_t C,     \
                                                 int threads) {                                \
    linear_scan_fwd<T>(a, bx, h0, h, batch, length, C, threads);                               \
  }                                                                                            \
  HNAS_EXPORT void hnas_linear_scan_bwd_##SUFFIX(const T* a, const T* h, const T* h0,          \
                                                 const T* grad_h, T* grad_a, T* grad_b,        \
                                                 T* grad_h0, int64_t batch, int64_t length,    \
                                                 int64_t C, int threads) {                     \
    linear_scan_bwd<T>(a, h, h0, grad_h, grad_a, grad_b, grad_h0, batch, length, C, threads);  \
  }

#define HNAS_CAUSAL_CONV(SUFFIX, T)                                                            \
  HNAS_EXPORT void hnas_causal_conv_fwd_##SUFFIX(const T* x, const T* history, const T* wt,    \
                                                 const T* bias, T* y, int64_t batch,           \
                                                 int64_t length, int64_t C, int64_t K,         \
                                                 int silu, int threads) {                      \
    causal_conv_fwd<T>(x, history, wt, bias, y, batch, length, C, K, silu, threads);           \
  }                                                                                            \
  HNAS_EXPORT void hnas_causal_conv_bwd_##SUFFIX(                                              \
      const T* x, const T* history, const T* wt, const T* bias, const T* grad_y, T* grad_x,    \
      T* grad_history, T* grad_wt_partial, T* grad_bias_partial, int64_t batch,                \
      int64_t length, int64_t C, int64_t K, int silu, int threads) {                           \
    causal_conv_bwd<T>(x, history, wt, bias, grad_y, grad_x, grad_history, grad_wt_partial,    \
                       grad_bias_partial, batch, length, C, K, silu, threads);                 \
  }

#define HNAS_SSD(SUFFIX, T)                                                                    \
  HNAS_EXPORT void hnas_ssd_fwd_##SUFFIX(                                                      \
      const T* x, const T* dt, const T* A, const T* Bm, const T* Cm, const T* Dskip,           \
      const T* h0, T* y, T* final_state, T* entry, int64_t batch, int64_t length, int64_t H,   \
      int64_t P, int64_t G, int64_t N, int64_t chunk, int threads) {                           \
    ssd_fwd<T>(x, dt, A, Bm, Cm, Dskip, h0, y, final_state, entry, batch, length, H, P, G, N,  \
               chunk, threads);                                                                \
  }                                                                                            \
  HNAS_EXPORT void hnas_ssd_bwd_##SUFFIX(                                                      \
      const T* x, const T* dt, const T* A, const T* Bm, const T* Cm, const T* Dskip,           \
      const T* entry, const T* grad_y, const T* grad_final, T* grad_x, T* grad_dt,             \
      T* grad_A_partial, T* grad_B, T* grad_C, T* grad_D_partial, T* grad_h0, int64_t batch,   \
      int64_t length, int64_t H, int64_t P, int64_t G, int64_t N, int64_t chunk,               \
      int threads) {                                                                           \
    ssd_bwd<T>(x, dt, A, Bm, Cm, Dskip, entry, grad_y, grad_final, grad_x, grad_dt,            \
               grad_A_partial, grad_B, grad_C, grad_D_partial, grad_h0, batch, length, H, P,   \
               G, N, chunk, threads);                                                          \
  }

// For the tests of exp itself: x <- exp(x) in place, by exp_in_place (whole = 1) or by exp_of
// one value at a time (whole = 0: exp_fast for float, as the loops GCC vectorises use it).
#define HNAS_EXP(SUFFIX, T)                                                                    \
  HNAS_EXPORT void hnas_exp_##SUFFIX(T* x, int64_t n, int whole) {                             \
    if (whole) {                                                                               \
      exp_in_place<T>(x, n);                                                                   \
    } else {                                                                                   \
      for (int64_t i = 0; i < n; ++i) x[i] = exp_of(x[i]);                                     \
    }                                                                                          \
  }

#define HNAS_AROUND_GEMMS(SUFFIX, T)                                                           \
  HNAS_EXPORT void hnas_glu_silu_fwd_##SUFFIX(const T* g, const T* u, T* h, int64_t n,         \
                                              int threads) {                                   \
    glu_silu_fwd<T>(g, u, h, n, threads);                                                      \
  }                                                                                            \
  HNAS_EXPORT void hnas_glu_silu_bwd_##SUFFIX(const T* g, const T* u, const T* gh, T* grad_g,  \
                                              T* grad_u, int64_t n, int threads) {             \
    glu_silu_bwd<T>(g, u, gh, grad_g, grad_u, n, threads);                                     \
  }                                                                                            \
  HNAS_EXPORT void hnas_glu_gelu_tanh_fwd_##SUFFIX(const T* g, const T* u, T* h, int64_t n,    \
                                                   int threads) {                              \
    glu_gelu_tanh_fwd<T>(g, u, h, n, threads);                                                 \
  }                                                                                            \
  HNAS_EXPORT void hnas_glu_gelu_tanh_bwd_##SUFFIX(const T* g, const T* u, const T* gh,        \
                                                   T* grad_g, T* grad_u, int64_t n,            \
                                                   int threads) {                              \
    glu_gelu_tanh_bwd<T>(g, u, gh, grad_g, grad_u, n, threads);                                \
  }                                                                                            \
  HNAS_EXPORT void hnas_rms_norm_fwd_##SUFFIX(const T* x, const T* w, T* y, T* inv_rms,        \
                                              int64_t rows, int64_t width, double eps,         \
                                              int threads) {                                   \
    rms_norm_fwd<T>(x, nullptr, w, nullptr, y, inv_rms, rows, width, static_cast<T>(eps),      \
                    threads);                                                                  \
  }                                                                                            \
  HNAS_EXPORT void hnas_rms_norm_bwd_##SUFFIX(const T* x, const T* w, const T* inv_rms,        \
                                              const T* gy, T* grad_x, T* grad_w_partial,       \
                                              int64_t rows, int64_t width, int threads) {      \
    rms_norm_bwd<T>(x, w, inv_rms, gy, nullptr, grad_x, grad_w_partial, rows, width, threads); \
  }                                                                                            \
  HNAS_EXPORT void hnas_add_rms_norm_fwd_##SUFFIX(const T* x, const T* delta, const T* w,      \
                                                  T* sum, T* y, T* inv_rms, int64_t rows,      \
                                                  int64_t width, double eps, int threads) {    \
    rms_norm_fwd<T>(x, delta, w, sum, y, inv_rms, rows, width, static_cast<T>(eps), threads);  \
  }                                                                                            \
  HNAS_EXPORT void hnas_add_rms_norm_bwd_##SUFFIX(                                             \
      const T* sum, const T* w, const T* inv_rms, const T* gy, const T* grad_sum, T* grad_x,   \
      T* grad_w_partial, int64_t rows, int64_t width, int threads) {                           \
    rms_norm_bwd<T>(sum, w, inv_rms, gy, grad_sum, grad_x, grad_w_partial, rows, width,        \
                    threads);                                                                  \
  }                                                                                            \
  HNAS_EXPORT void hnas_rglru_gates_fwd_##SUFFIX(                                              \
      const T* ga, const T* gx, const T* x, const T* coef, T* a, T* b, int64_t rows,           \
      int64_t width, double floor, int threads) {                                              \
    rglru_gates_fwd<T>(ga, gx, x, coef, a, b, rows, width, T(floor), threads);                 \
  }                                                                                            \
  HNAS_EXPORT void hnas_rglru_gates_bwd_##SUFFIX(                                              \
      const T* ga, const T* gx, const T* x, const T* coef, const T* grad_a, const T* grad_b,   \
      T* grad_ga, T* grad_gx, T* grad_x, T* grad_coef_partial, int64_t rows, int64_t width,    \
      double floor, int threads) {                                                             \
    rglru_gates_bwd<T>(ga, gx, x, coef, grad_a, grad_b, grad_ga, grad_gx, grad_x,              \
                       grad_coef_partial, rows, width, T(floor), threads);                     \
  }                                                                                            \
  HNAS_EXPORT void hnas_softplus_fwd_##SUFFIX(const T* x, T* y, int64_t n, int threads) {     \
    softplus_fwd<T>(x, y, n, threads);                                                         \
  }                                                                                            \
  HNAS_EXPORT void hnas_softplus_bwd_##SUFFIX(const T* x, const T* gy, T* gx, int64_t n,       \
                                              int threads) {                                   \
    softplus_bwd<T>(x, gy, gx, n, threads);                                                    \
  }                                                                                            \
  HNAS_EXPORT void hnas_rope_##SUFFIX(const T* x, const T* cos_t, const T* sin_t, T* out,     \
                                      int64_t batch, int64_t length, int64_t heads,            \
                                      int64_t head_dim, int64_t rotary_dim, int sign,          \
                                      int threads) {                                           \
    rope<T>(x, cos_t, sin_t, out, batch, length, heads, head_dim, rotary_dim,                  \
            static_cast<T>(sign), threads);                                                    \
  }

#define HNAS_SOFTPLUS_LINEAR(SUFFIX, T)                                                        \
  HNAS_EXPORT void hnas_softplus_linear_fwd_##SUFFIX(                                          \
      const T* x, const T* Wt, const T* bias, T* y, int64_t x_stride, int64_t rows, int64_t R, \
      int64_t D, int threads) {                                                                \
    softplus_linear_fwd<T>(x, x_stride, Wt, bias, y, rows, R, D, threads);                     \
  }                                                                                            \
  HNAS_EXPORT void hnas_softplus_linear_bwd_##SUFFIX(                                          \
      const T* x, const T* Wt, const T* bias, const T* gy, T* grad_x, T* grad_Wt_partial,      \
      T* grad_bias_partial, int64_t x_stride, int64_t rows, int64_t R, int64_t D,              \
      int threads) {                                                                           \
    softplus_linear_bwd<T>(x, x_stride, Wt, bias, gy, grad_x, grad_Wt_partial,                 \
                           grad_bias_partial, rows, R, D, threads);                            \
  }

#define HNAS_LONG_CONV(SUFFIX, T)                                                              \
  HNAS_EXPORT void hnas_long_conv_fwd_##SUFFIX(const T* u, const T* h, T* y, int64_t batch,      \
                                               int64_t L, int64_t C, int threads) {             \
    long_conv_fwd<T>(u, h, y, batch, L, C, threads);                                           \
  }                                                                                            \
  HNAS_EXPORT void hnas_long_conv_bwd_##SUFFIX(const T* u, const T* h, const T* gy, T* grad_u, \
                                               T* grad_h_partial, int64_t batch, int64_t L,     \
                                               int64_t C, int threads) {                        \
    long_conv_bwd<T>(u, h, gy, grad_u, grad_h_partial, batch, L, C, threads);                  \
  }

#define HNAS_BLOCK_DIAGONAL(SUFFIX, T)                                                         \
  HNAS_EXPORT void hnas_block_diagonal_fwd_##SUFFIX(const T* x, const T* W, const T* bias,     \
                                                    T* y, int64_t rows, int64_t H, int64_t I,  \
                                                    int64_t J, int threads) {                  \
    block_diagonal_fwd<T>(x, W, bias, y, rows, H, I, J, threads);                              \
  }                                                                                            \
  HNAS_EXPORT void hnas_block_diagonal_bwd_##SUFFIX(                                           \
      const T* x, const T* Wt, const T* gy, T* grad_x, T* grad_W_partial,                      \
      T* grad_bias_partial, int64_t rows, int64_t H, int64_t I, int64_t J, int threads) {      \
    block_diagonal_bwd<T>(x, Wt, gy, grad_x, grad_W_partial, grad_bias_partial, rows, H, I, J, \
                          threads);                                                            \
  }

#define HNAS_ATTENTION(SUFFIX, T)                                                              \
  HNAS_EXPORT int hnas_attention_fwd_##SUFFIX(                                                 \
      const T* q, const T* k, const T* v, T* o, T* lse, const int64_t* strides, int64_t batch, \
      int64_t heads, int64_t kv_heads, int64_t length, int64_t hd, int64_t window,             \
      double scale, int threads) {                                                             \
    return attention_fwd_any<T>(q, k, v, o, lse, strides, batch, heads, kv_heads, length, hd,  \
                                window, static_cast<T>(scale), threads);                       \
  }                                                                                            \
  HNAS_EXPORT int hnas_attention_bwd_##SUFFIX(                                                \
      const T* q, const T* k, const T* v, const T* o, const T* grad_o, const T* lse,           \
      T* grad_q, T* grad_k, T* grad_v, const int64_t* strides, int64_t batch, int64_t heads,   \
      int64_t kv_heads, int64_t length, int64_t hd, int64_t window, double scale,              \
      int threads) {                                                                           \
    return attention_bwd_any<T>(q, k, v, o, grad_o, lse, grad_q, grad_k, grad_v, strides,      \
                                batch, heads, kv_heads, length, hd, window,                    \
                                static_cast<T>(scale), threads);                               \
  }

HNAS_SELECTIVE_SCAN(f32, float)
HNAS_SELECTIVE_SCAN(f64, double)
HNAS_LINEAR_SCAN(f32, float)
HNAS_LINEAR_SCAN(f64, double)
HNAS_CAUSAL_CONV(f32, float)
HNAS_CAUSAL_CONV(f64, double)
HNAS_SSD(f32, float)
HNAS_SSD(f64, double)
HNAS_AROUND_GEMMS(f32, float)
HNAS_AROUND_GEMMS(f64, double)
HNAS_SOFTPLUS_LINEAR(f32, float)
HNAS_SOFTPLUS_LINEAR(f64, double)
HNAS_ATTENTION(f32, float)
HNAS_ATTENTION(f64, double)
HNAS_EXP(f32, float)
HNAS_LONG_CONV(f32, float)
HNAS_LONG_CONV(f64, double)
HNAS_EXP(f64, double)
HNAS_BLOCK_DIAGONAL(f32, float)
HNAS_BLOCK_DIAGONAL(f64, double)

// A version number that the loader checks, so that a stale cached library is never used.
HNAS_EXPORT int hnas_kernels_abi() { return 14; }
