// mindshuffle native kernel for CPU inference: the 1x1 convolution (a matrix product per sample), NCHW float32.
//
// Why not MindSpore's Conv2D: on CPU it runs oneDNN on MindSpore's thread pool, whose calling thread waits for
// the pool's workers by spinning on sched_yield. On a machine with as many cores as workers that spinner takes
// a core's share from the workers, and a 1x1 conv of ShuffleNet V2 x1.0 took anywhere between 1x and 2x its
// best time, in long phases (bench/RESULTS.md). Here the work is split over our own threads (parallel.h), which
// never spin.
//
// y[n, co, p] = sum_ci w[co, ci] * x[n, ci, p] (no bias: the reader of y adds it with the ReLU, see infer.cc).
// The columns of all samples form one range j = n * P + p, cut into panels of NR columns: a panel of x is
// copied into a contiguous K x NR block (gathered across a sample boundary when P is not a multiple of NR, so
// a 7x7 map wastes no lanes), and the weights are repacked once per call into MR-row strips, k-major. The
// micro kernel keeps MR x NR sums in registers: per k, two vector loads of x and MR broadcasts of w.
// Summation order over ci is the plain 0..K-1 order, the same for every thread count.
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "parallel.h"
#include "simd.h"

using namespace mindshuffle;  // parallel_for; vf, VW, loadu, storeu

namespace {

constexpr int NR = 2 * VW;  // columns per panel: two vectors
constexpr int MR = 6;       // output channels per strip: 12 vector accumulators

// rows 0..R-1 of strip (K x MR, k-major) times panel (K x NR) -> out[r * ld .. r * ld + NR]
template <int R>
inline void micro(const float *panel, const float *strip, int64_t K, float *out, int64_t ld) {
  vf a0[R], a1[R];
  for (int r = 0; r < R; ++r) a0[r] = a1[r] = vf{};
  for (int64_t k = 0; k < K; ++k) {
    const vf x0 = loadu(panel + k * NR), x1 = loadu(panel + k * NR + VW);
    const float *w = strip + k * MR;
    for (int r = 0; r < R; ++r) {
      a0[r] += x0 * w[r];
      a1[r] += x1 * w[r];
    }
  }
  for (int r = 0; r < R; ++r) {
    storeu(out + r * ld, a0[r]);
    storeu(out + r * ld + VW, a1[r]);
  }
}

// x (N, K, P), w (M, K) -> y (N, M, P)
void conv1x1(const float *x, const float *w, float *y, int64_t N, int64_t K, int64_t M, int64_t P) {
  const int64_t strips = (M + MR - 1) / MR;
  std::vector<float> wp(strips * K * MR, 0.f);  // strip s: wp[(s * K + k) * MR + r] = w[s * MR + r, k]
  for (int64_t m = 0; m < M; ++m)
    for (int64_t k = 0; k < K; ++k) wp[((m / MR) * K + k) * MR + m % MR] = w[m * K + k];
  const int64_t J = N * P, panels = (J + NR - 1) / NR;
  parallel_for(panels, N * (K + M) * P, [=, &wp](int64_t b0, int64_t b1) {
    std::vector<float> panel(K * NR);
    float tile[MR * NR];
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t j0 = b * NR, nc = std::min<int64_t>(NR, J - j0);
      // the panel: columns j0 .. j0 + nc, in runs that stay inside one sample
      const int64_t n = j0 / P, p = j0 % P;
      const bool whole = nc == NR && p + NR <= P;  // all in one sample: vector copies, y written directly
      if (whole) {
        const float *src = x + n * K * P + p;
        for (int64_t k = 0; k < K; ++k) {
          storeu(&panel[k * NR], loadu(src + k * P));
          storeu(&panel[k * NR + VW], loadu(src + k * P + VW));
        }
      }
      for (int64_t c = whole ? nc : 0; c < nc;) {
        const int64_t n = (j0 + c) / P, p = (j0 + c) % P, len = std::min(nc - c, P - p);
        const float *src = x + n * K * P + p;
        for (int64_t k = 0; k < K; ++k) std::memcpy(&panel[k * NR + c], src + k * P, len * sizeof(float));
        c += len;
      }
      if (nc < NR)
        for (int64_t k = 0; k < K; ++k) std::fill(&panel[k * NR + nc], &panel[k * NR + NR], 0.f);
      for (int64_t s = 0; s < strips; ++s) {
        const int64_t m0 = s * MR, rows = std::min<int64_t>(MR, M - m0);
        const float *strip = wp.data() + s * K * MR;
        // a panel inside one sample is written straight into y, others go through ``tile``
        float *out = whole ? y + (n * M + m0) * P + p : tile;
        const int64_t ld = whole ? P : NR;
        if (rows == MR) {
          micro<MR>(panel.data(), strip, K, out, ld);
        } else {
          // a short last strip, one row at a time: row r's weights are strip[k * MR + r]
          for (int64_t r = 0; r < rows; ++r) micro<1>(panel.data(), strip + r, K, out + r * ld, ld);
        }
        if (whole) continue;
        for (int64_t r = 0; r < rows; ++r) {
          for (int64_t c = 0; c < nc;) {
            const int64_t nn = (j0 + c) / P, pp = (j0 + c) % P, len = std::min(nc - c, P - pp);
            std::memcpy(y + (nn * M + m0 + r) * P + pp, tile + r * NR + c, len * sizeof(float));
            c += len;
          }
        }
      }
    }
  });
}

}  // namespace

#define MS_AOT(name) extern "C" int name(int, void **p, int *, int64_t **s, const char **, void *, void *)
#define F(i) static_cast<float *>(p[i])

// inputs x (N,K,H,W), w (M,K,1,1); output y (N,M,H,W)
MS_AOT(conv1x1_fwd) {
  conv1x1(F(0), F(1), F(2), s[0][0], s[0][1], s[1][0], s[0][2] * s[0][3]);
  return 0;
}
