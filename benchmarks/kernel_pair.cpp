// Driver of kernel_pair.py: two versions of trials/ops/native/scan_kernels.cpp (their export
// blocks cut off), each included in its own namespace, timed in turn in one process: the
// selective scan's, the SSD's, RMSNorm's, causal attention's (head dim 16) and the causal
// conv's (with silu) forward and backward passes on the same data, alternating
// which version goes first each round. Prints one line per pass: the median of the per-round
// ratios baseline time / current time, with the lowest and highest.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>
#ifdef _OPENMP
#include <omp.h>
#endif
#ifdef __AVX512F__
#include <immintrin.h>  // before the namespaces: the kernels include it
#endif

namespace baseline {
#include "baseline_kernels.cpp"
}
namespace current {
#include "current_kernels.cpp"
}

using Clock = std::chrono::steady_clock;
using Vec = std::vector<float>;

static Vec filled(int64_t n, float lo, float hi, std::mt19937& gen) {
  std::uniform_real_distribution<float> dist(lo, hi);
  Vec v(n);
  for (auto& e : v) e = dist(gen);
  return v;
}

struct Timing {
  double forward = 1e30, backward = 1e30;
};

// Mamba-1: x, dt, z (B, L, D), At (N, D), B and C (B, L, N), a gate and a skip, no h0.
struct ScanData {
  int64_t B, L, D, N, chunk = 32, K;
  Vec x, dt, At, Bm, Cm, Dk, z, go, y, out, fin, entry, gx, gdt, gA, gB, gC, gD, gz;
  ScanData(int64_t b, int64_t l, int64_t d, int64_t n) : B(b), L(l), D(d), N(n) {
    std::mt19937 gen(0);
    K = (L + chunk - 1) / chunk;
    x = filled(B * L * D, -1, 1, gen), dt = filled(B * L * D, 1e-3f, 0.1f, gen);
    At = filled(N * D, -16, -1, gen), Bm = filled(B * L * N, -1, 1, gen);
    Cm = filled(B * L * N, -1, 1, gen), Dk = filled(D, -1, 1, gen);
    z = filled(B * L * D, -1, 1, gen), go = filled(B * L * D, -1, 1, gen);
    for (Vec* v : {&y, &out, &gx, &gdt, &gz}) v->resize(B * L * D);
    for (Vec* v : {&gB, &gC}) v->resize(B * L * N);
    fin.resize(B * N * D), entry.resize(B * K * N * D), gA.resize(B * N * D), gD.resize(B * D);
  }
};

template <class Fwd, class Bwd>
void time_scan(Fwd fwd, Bwd bwd, ScanData& s, Timing& best) {
  for (int r = 0; r < 3; ++r) {
    auto t0 = Clock::now();
    fwd(s.x.data(), s.dt.data(), s.At.data(), s.Bm.data(), s.Cm.data(), s.Dk.data(),
        s.z.data(), nullptr, s.y.data(), s.out.data(), s.fin.data(), s.entry.data(), s.B, s.L,
        s.D, s.N, s.chunk, 1);
    auto t1 = Clock::now();
    bwd(s.x.data(), s.dt.data(), s.At.data(), s.Bm.data(), s.Cm.data(), s.Dk.data(),
        s.z.data(), s.y.data(), s.entry.data(), s.go.data(), nullptr, s.gx.data(),
        s.gdt.data(), s.gA.data(), s.gB.data(), s.gC.data(), s.gD.data(), s.gz.data(), nullptr,
        s.B, s.L, s.D, s.N, s.chunk, 1);
    auto t2 = Clock::now();
    best.forward = std::min(best.forward, std::chrono::duration<double>(t1 - t0).count());
    best.backward = std::min(best.backward, std::chrono::duration<double>(t2 - t1).count());
  }
}

// Mamba-2: x (B, L, H, P), dt (B, L, H), A and the skip (H,), B and C (B, L, 1, N), no h0.
struct SsdData {
  int64_t B, L, H, P, G = 1, N, chunk = 32, K;
  Vec x, dt, A, Bm, Cm, Dk, gy, y, fin, entry, gx, gdt, gA, gB, gC, gD;
  SsdData(int64_t b, int64_t l, int64_t h, int64_t p, int64_t n) : B(b), L(l), H(h), P(p), N(n) {
    std::mt19937 gen(0);
    K = (L + chunk - 1) / chunk;
    x = filled(B * L * H * P, -1, 1, gen), dt = filled(B * L * H, 1e-3f, 0.1f, gen);
    A = filled(H, -5, -1, gen), Bm = filled(B * L * G * N, -1, 1, gen);
    Cm = filled(B * L * G * N, -1, 1, gen), Dk = filled(H, -1, 1, gen);
    gy = filled(B * L * H * P, -1, 1, gen);
    for (Vec* v : {&y, &gx}) v->resize(B * L * H * P);
    for (Vec* v : {&gB, &gC}) v->resize(B * L * G * N);
    fin.resize(B * H * P * N), entry.resize(B * K * H * P * N), gdt.resize(B * L * H);
    gA.resize(B * H), gD.resize(B * H);
  }
};

template <class Fwd, class Bwd>
void time_ssd(Fwd fwd, Bwd bwd, SsdData& s, Timing& best) {
  for (int r = 0; r < 3; ++r) {
    auto t0 = Clock::now();
    fwd(s.x.data(), s.dt.data(), s.A.data(), s.Bm.data(), s.Cm.data(), s.Dk.data(), nullptr,
        s.y.data(), s.fin.data(), s.entry.data(), s.B, s.L, s.H, s.P, s.G, s.N, s.chunk, 1);
    auto t1 = Clock::now();
    bwd(s.x.data(), s.dt.data(), s.A.data(), s.Bm.data(), s.Cm.data(), s.Dk.data(),
        s.entry.data(), s.gy.data(), nullptr, s.gx.data(), s.gdt.data(), s.gA.data(),
        s.gB.data(), s.gC.data(), s.gD.data(), nullptr, s.B, s.L, s.H, s.P, s.G, s.N, s.chunk,
        1);
    auto t2 = Clock::now();
    best.forward = std::min(best.forward, std::chrono::duration<double>(t1 - t0).count());
    best.backward = std::min(best.backward, std::chrono::duration<double>(t2 - t1).count());
  }
}

// RMSNorm over rows of `width`: x, gy (rows, width), w (width,).
struct NormData {
  int64_t rows, width;
  Vec x, w, gy, y, inv, gx, gw;
  NormData(int64_t r, int64_t wd) : rows(r), width(wd) {
    std::mt19937 gen(0);
    x = filled(rows * width, -1, 1, gen), w = filled(width, 0.5f, 1.5f, gen);
    gy = filled(rows * width, -1, 1, gen);
    y.resize(rows * width), gx.resize(rows * width), inv.resize(rows), gw.resize(width);
  }
};

template <class Fwd, class Bwd>
void time_norm(Fwd fwd, Bwd bwd, NormData& s, Timing& best) {
  for (int r = 0; r < 20; ++r) {  // each pass takes tens of microseconds
    auto t0 = Clock::now();
    fwd(s.x.data(), nullptr, s.w.data(), nullptr, s.y.data(), s.inv.data(), s.rows, s.width,
        1e-5f, 1);
    auto t1 = Clock::now();
    bwd(s.x.data(), s.w.data(), s.inv.data(), s.gy.data(), nullptr, s.gx.data(), s.gw.data(),
        s.rows, s.width, 1);
    auto t2 = Clock::now();
    best.forward = std::min(best.forward, std::chrono::duration<double>(t1 - t0).count());
    best.backward = std::min(best.backward, std::chrono::duration<double>(t2 - t1).count());
  }
}

// Depthwise causal conv with silu: x, dy (B, L, C), history (B, K-1, C), weight (K, C), bias.
struct ConvData {
  int64_t B, L, C, K;
  Vec x, hist, wt, bias, gy, y, gx, ghist, gw, gb;
  ConvData(int64_t b, int64_t l, int64_t c, int64_t k) : B(b), L(l), C(c), K(k) {
    std::mt19937 gen(0);
    x = filled(B * L * C, -1, 1, gen), hist = filled(B * (K - 1) * C, -1, 1, gen);
    wt = filled(K * C, -1, 1, gen), bias = filled(C, -1, 1, gen);
    gy = filled(B * L * C, -1, 1, gen);
    y.resize(B * L * C), gx.resize(B * L * C), ghist.resize(B * (K - 1) * C);
    gw.resize(B * K * C), gb.resize(B * C);
  }
};

template <class Fwd, class Bwd>
void time_conv(Fwd fwd, Bwd bwd, ConvData& s, Timing& best) {
  for (int r = 0; r < 5; ++r) {
    auto t0 = Clock::now();
    fwd(s.x.data(), s.hist.data(), s.wt.data(), s.bias.data(), s.y.data(), s.B, s.L, s.C, s.K,
        1, 1);
    auto t1 = Clock::now();
    bwd(s.x.data(), s.hist.data(), s.wt.data(), s.bias.data(), s.gy.data(), s.gx.data(),
        s.ghist.data(), s.gw.data(), s.gb.data(), s.B, s.L, s.C, s.K, 1, 1);
    auto t2 = Clock::now();
    best.forward = std::min(best.forward, std::chrono::duration<double>(t1 - t0).count());
    best.backward = std::min(best.backward, std::chrono::duration<double>(t2 - t1).count());
  }
}

// Causal attention at head dim 16: q, k, v, o, dO (B, H, L, 16) contiguous; each query reads
// the last `window` keys (0: all of them).
struct AttentionData {
  static constexpr int HD = 16;
  int64_t B, H, L, window;
  Vec q, k, v, o, go, lse, gq, gk, gv;
  std::vector<int64_t> strides;
  AttentionData(int64_t b, int64_t h, int64_t l, int64_t w) : B(b), H(h), L(l), window(w) {
    std::mt19937 gen(0);
    const int64_t n = B * H * L * HD;
    q = filled(n, -1, 1, gen), k = filled(n, -1, 1, gen), v = filled(n, -1, 1, gen);
    go = filled(n, -1, 1, gen);
    for (Vec* t : {&o, &gq, &gk, &gv}) t->resize(n);
    lse.resize(B * H * L);
    for (int t = 0; t < 8; ++t) strides.insert(strides.end(), {H * L * HD, L * HD, HD});
  }
};

template <class Fwd, class Bwd>
void time_attention(Fwd fwd, Bwd bwd, AttentionData& s, Timing& best) {
  const float scale = 0.25f;  // 1 / sqrt(16)
  for (int r = 0; r < 3; ++r) {
    auto t0 = Clock::now();
    fwd(s.q.data(), s.k.data(), s.v.data(), s.o.data(), s.lse.data(), s.strides.data(), s.B,
        s.H, s.H, s.L, s.window, scale, 1);
    auto t1 = Clock::now();
    bwd(s.q.data(), s.k.data(), s.v.data(), s.o.data(), s.go.data(), s.lse.data(), s.gq.data(),
        s.gk.data(), s.gv.data(), s.strides.data(), s.B, s.H, s.H, s.L, s.window, scale, 1);
    auto t2 = Clock::now();
    best.forward = std::min(best.forward, std::chrono::duration<double>(t1 - t0).count());
    best.backward = std::min(best.backward, std::chrono::duration<double>(t2 - t1).count());
  }
}

static double quantile(std::vector<double> v, double q) {
  std::sort(v.begin(), v.end());
  return v[static_cast<size_t>(q * (v.size() - 1) + 0.5)];
}

// usage: kernel_pair (scan B L D N | ssd B L H P N | rms_norm ROWS WIDTH | attention B H L W |
//                     conv B L C K) ROUNDS
int main(int argc, char** argv) {
  const std::string op = argc > 1 ? argv[1] : "";
  const int count = op == "scan" || op == "conv" || op == "attention" ? 4 : op == "ssd" ? 5 : 2;
  if ((op != "scan" && op != "ssd" && op != "rms_norm" && op != "attention" && op != "conv") ||
      argc != count + 3) {
    std::fprintf(stderr,
                 "usage: kernel_pair (scan B L D N | ssd B L H P N | rms_norm ROWS WIDTH | "
                 "attention B H L W | conv B L C K) ROUNDS\n");
    return 2;
  }
  std::vector<int64_t> dims;
  for (int i = 0; i < count; ++i) dims.push_back(std::atoll(argv[2 + i]));
  const int rounds = std::atoi(argv[2 + count]);
  ScanData* scan = op == "scan" ? new ScanData(dims[0], dims[1], dims[2], dims[3]) : nullptr;
  SsdData* ssd = op == "ssd" ? new SsdData(dims[0], dims[1], dims[2], dims[3], dims[4]) : nullptr;
  NormData* norm = op == "rms_norm" ? new NormData(dims[0], dims[1]) : nullptr;
  AttentionData* attention =
      op == "attention" ? new AttentionData(dims[0], dims[1], dims[2], dims[3]) : nullptr;
  ConvData* conv = op == "conv" ? new ConvData(dims[0], dims[1], dims[2], dims[3]) : nullptr;
  std::vector<double> forward, backward;
  Timing last_base, last_cur;
  for (int round = 0; round < rounds; ++round) {
    Timing base, cur;
    for (int turn = 0; turn < 2; ++turn) {
      const bool base_turn = (turn == 0) == (round % 2 == 0);
      if (scan) {
        if (base_turn) time_scan(baseline::selective_scan_fwd<float>,
                                 baseline::selective_scan_bwd<float>, *scan, base);
        else time_scan(current::selective_scan_fwd<float>, current::selective_scan_bwd<float>,
                       *scan, cur);
      } else if (ssd) {
        if (base_turn) time_ssd(baseline::ssd_fwd<float>, baseline::ssd_bwd<float>, *ssd, base);
        else time_ssd(current::ssd_fwd<float>, current::ssd_bwd<float>, *ssd, cur);
      } else if (conv) {
        if (base_turn) time_conv(baseline::causal_conv_fwd<float>,
                                 baseline::causal_conv_bwd<float>, *conv, base);
        else time_conv(current::causal_conv_fwd<float>, current::causal_conv_bwd<float>, *conv,
                       cur);
      } else if (attention) {
        constexpr int HD = AttentionData::HD;
        if (base_turn) time_attention(baseline::attention_fwd<float, HD>,
                                      baseline::attention_bwd<float, HD>, *attention, base);
        else time_attention(current::attention_fwd<float, HD>, current::attention_bwd<float, HD>,
                            *attention, cur);
      } else {
        if (base_turn) time_norm(baseline::rms_norm_fwd<float>, baseline::rms_norm_bwd<float>,
                                 *norm, base);
        else time_norm(current::rms_norm_fwd<float>, current::rms_norm_bwd<float>, *norm, cur);
      }
    }
    forward.push_back(base.forward / cur.forward);
    backward.push_back(base.backward / cur.backward);
    last_base = base, last_cur = cur;
  }
  const char* passes[] = {"forward", "backward"};
  const std::vector<double>* ratios[] = {&forward, &backward};
  const double base_ms[] = {last_base.forward * 1e3, last_base.backward * 1e3};
  const double cur_ms[] = {last_cur.forward * 1e3, last_cur.backward * 1e3};
  for (int i = 0; i < 2; ++i)
    std::printf("%s %s %.3f %.3f %.3f %.3f %.3f\n", op.c_str(), passes[i], base_ms[i], cur_ms[i],
                quantile(*ratios[i], 0.5), quantile(*ratios[i], 0.0), quantile(*ratios[i], 1.0));
  delete scan;
  delete ssd;
  delete norm;
  delete attention;
  delete conv;
  return 0;
}
