// mindshuffle native kernels: training-mode BatchNorm (batch statistics), NCHW float32, optionally fused with
// the ReLU that follows it, and the ShuffleNet stem's BatchNorm + ReLU + 3x3 stride-2 max pool (padding 1).
// Called by MindSpore as AOT custom operators, like dwconv3x3.cc. Big tensors are split over two threads
// (parallel.h): channels for the statistics and the backward pass, planes for the rest.
//
// BatchNorm as nn.BatchNorm2d trains it: y = gamma * (x - mean) / sqrt(var + eps) + beta with the batch mean
// and biased variance over (N, H, W); moving_mean = momentum * moving_mean + (1 - momentum) * mean and
// moving_variance likewise with the unbiased variance. The backward pass is the usual one through the batch
// statistics; the ReLU mask is recomputed from x with the same expression as the forward (``affine``), so it is
// the forward's exactly and y need not be kept.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "parallel.h"

using mindshuffle::parallel_for;

namespace {

// the pre-activation; one function so that the forward and the backward round identically
inline float affine(float x, float a, float b) { return x * a + b; }

struct Hyper {
  float eps, momentum;
};

// Per-channel batch mean and 1/sqrt(var + eps) of x (N, C, HW), and the updated moving statistics.
void batch_stats(const float *x, int64_t N, int64_t C, int64_t HW, Hyper hp, const float *mm, const float *mv,
                 float *mean, float *rstd, float *new_mm, float *new_mv) {
  const double M = static_cast<double>(N * HW);
  parallel_for(C, N * C * HW, [=](int64_t c_begin, int64_t c_end) {
  for (int64_t c = c_begin; c < c_end; ++c) {
    const float k = x[c * HW];  // shift: sums of (x - k) lose no digits to a large mean
    double s1 = 0, s2 = 0;
    for (int64_t n = 0; n < N; ++n) {
      const float *p = x + (n * C + c) * HW;
      float a1 = 0.f, a2 = 0.f;
#pragma omp simd reduction(+ : a1, a2)
      for (int64_t i = 0; i < HW; ++i) {
        const float d = p[i] - k;
        a1 += d;
        a2 += d * d;
      }
      s1 += a1;
      s2 += a2;
    }
    const double m = s1 / M;
    double var = s2 / M - m * m;
    if (var < 0) var = 0;
    mean[c] = static_cast<float>(k + m);
    rstd[c] = static_cast<float>(1.0 / std::sqrt(var + hp.eps));
    const double unbiased = M > 1 ? var * M / (M - 1) : var;
    new_mm[c] = static_cast<float>(hp.momentum * mm[c] + (1.0 - hp.momentum) * (k + m));
    new_mv[c] = static_cast<float>(hp.momentum * mv[c] + (1.0 - hp.momentum) * unbiased);
  }
  });
}

inline void coeffs(const float *gamma, const float *beta, const float *mean, const float *rstd, int64_t c, float *a,
                   float *b) {
  *a = gamma[c] * rstd[c];
  *b = beta[c] - mean[c] * *a;
}

template <bool RELU>
void bn_forward(const float *x, const float *gamma, const float *beta, const float *mm, const float *mv, Hyper hp,
                float *y, float *mean, float *rstd, float *new_mm, float *new_mv, int64_t N, int64_t C, int64_t HW) {
  batch_stats(x, N, C, HW, hp, mm, mv, mean, rstd, new_mm, new_mv);
  parallel_for(N * C, N * C * HW, [=](int64_t begin, int64_t end) {
    for (int64_t k = begin; k < end; ++k) {
      float a, b;
      coeffs(gamma, beta, mean, rstd, k % C, &a, &b);
      const float *p = x + k * HW;
      float *q = y + k * HW;
#pragma omp simd
      for (int64_t i = 0; i < HW; ++i) {
        const float t = affine(p[i], a, b);
        q[i] = RELU ? (t > 0.f ? t : 0.f) : t;
      }
    }
  });
}

// From sb = sum dy' and sg = sum dy' * (x - mean) over a channel: dgamma, dbeta and dx = a * dy' + c0 + c1 * x
inline void grad_coeffs(float a, float mean, double rstd, double sb, double sg, double M, float *dgamma, float *dbeta,
                        float *c0, float *c1) {
  *dbeta = static_cast<float>(sb);
  *dgamma = static_cast<float>(sg * rstd);
  const double k1 = -static_cast<double>(a) * rstd * rstd * sg / M;
  *c1 = static_cast<float>(k1);
  *c0 = static_cast<float>(-static_cast<double>(a) * sb / M - k1 * mean);
}

// The backward pass channel by channel: sums(n, c, a, b, &s1, &s2) adds sample n's sum dy' and
// sum dy' * (x - mean) of channel c, then apply(n, c, a, b, c0, c1) writes its dx = a * dy' + c0 + c1 * x.
template <class Sums, class Apply>
void backward_channels(const float *gamma, const float *beta, const float *mean, const float *rstd, float *dgamma,
                       float *dbeta, int64_t N, int64_t C, int64_t HW, Sums sums, Apply apply) {
  const double M = static_cast<double>(N * HW);
  parallel_for(C, N * C * HW, [&](int64_t c_begin, int64_t c_end) {
  for (int64_t c = c_begin; c < c_end; ++c) {
    float a, b;
    coeffs(gamma, beta, mean, rstd, c, &a, &b);
    double sb = 0, sg = 0;
    for (int64_t n = 0; n < N; ++n) {
      float s1 = 0.f, s2 = 0.f;
      sums(n, c, a, b, &s1, &s2);
      sb += s1;
      sg += s2;
    }
    float c0, c1;
    grad_coeffs(a, mean[c], rstd[c], sb, sg, M, &dgamma[c], &dbeta[c], &c0, &c1);
    for (int64_t n = 0; n < N; ++n) apply(n, c, a, b, c0, c1);
  }
  });
}

// dx = a * (dy' - mean(dy') - xhat * mean(dy' * xhat)), dbeta = sum dy', dgamma = sum dy' * xhat,
// with dy' = dy masked by the ReLU and xhat = (x - mean) * rstd
template <bool RELU>
void bn_backward(const float *dy, const float *x, const float *gamma, const float *beta, const float *mean,
                 const float *rstd, float *dx, float *dgamma, float *dbeta, int64_t N, int64_t C, int64_t HW) {
  auto sums = [=](int64_t n, int64_t c, float a, float b, float *s1, float *s2) {
    const float *g = dy + (n * C + c) * HW, *p = x + (n * C + c) * HW;
    const float m = mean[c];
    float a1 = 0.f, a2 = 0.f;
#pragma omp simd reduction(+ : a1, a2)
    for (int64_t i = 0; i < HW; ++i) {
      const float d = RELU ? (affine(p[i], a, b) > 0.f ? g[i] : 0.f) : g[i];
      a1 += d;
      a2 += d * (p[i] - m);
    }
    *s1 = a1;
    *s2 = a2;
  };
  auto apply = [=](int64_t n, int64_t c, float a, float b, float c0, float c1) {
    const float *g = dy + (n * C + c) * HW, *p = x + (n * C + c) * HW;
    float *q = dx + (n * C + c) * HW;
#pragma omp simd
    for (int64_t i = 0; i < HW; ++i) {
      const float d = RELU ? (affine(p[i], a, b) > 0.f ? g[i] : 0.f) : g[i];
      q[i] = a * d + c0 + c1 * p[i];
    }
  };
  backward_channels(gamma, beta, mean, rstd, dgamma, dbeta, N, C, HW, sums, apply);
}

// ---- stem: BatchNorm + ReLU + max pool 3x3, stride 2, padding 1 -------------------------------------------
// The pool takes, in each window, the element with the largest pre-activation t = a * z + b (ReLU is monotonic,
// so relu(max t) is the max of the ReLU outputs; the -inf padding never wins). idx keeps that element's index in
// its plane for the backward pass.

inline int64_t pooled(int64_t size) { return (size - 1) / 2 + 1; }

// one row r (W wide, flat index base) into the running column maxima of the even and odd columns
inline void column_max(const float *r, float a, float b, int32_t base, int64_t W, float *ev, int32_t *evi, float *od,
                       int32_t *odi, bool first) {
#pragma omp simd
  for (int64_t j = 0; j < (W + 1) / 2; ++j) {
    const float t = affine(r[2 * j], a, b);
    const bool up = first || t > ev[j];
    ev[j] = up ? t : ev[j];
    evi[j] = up ? base + static_cast<int32_t>(2 * j) : evi[j];
  }
#pragma omp simd
  for (int64_t j = 0; j < W / 2; ++j) {
    const float t = affine(r[2 * j + 1], a, b);
    const bool up = first || t > od[j];
    od[j] = up ? t : od[j];
    odi[j] = up ? base + static_cast<int32_t>(2 * j + 1) : odi[j];
  }
}

void stem_forward(const float *z, const float *gamma, const float *beta, const float *mm, const float *mv, Hyper hp,
                  float *out, float *mean, float *rstd, float *new_mm, float *new_mv, int32_t *idx, int64_t N,
                  int64_t C, int64_t H, int64_t W) {
  const int64_t HW = H * W, Ho = pooled(H), Wo = pooled(W);
  batch_stats(z, N, C, HW, hp, mm, mv, mean, rstd, new_mm, new_mv);
  const int64_t We = (W + 1) / 2, Wd = W / 2;
  parallel_for(N * C, N * C * HW, [=](int64_t begin, int64_t end) {
    std::vector<float> fbuf(We + Wd + 2, -INFINITY);
    std::vector<int32_t> ibuf(We + Wd + 2, 0);
    float *ev = fbuf.data(), *od = ev + We;
    int32_t *evi = ibuf.data(), *odi = evi + We;
    for (int64_t k = begin; k < end; ++k) {
      float a, b;
      coeffs(gamma, beta, mean, rstd, k % C, &a, &b);
      const float *p = z + k * HW;
      float *o = out + k * Ho * Wo;
      int32_t *ix = idx + k * Ho * Wo;
      for (int64_t oh = 0; oh < Ho; ++oh) {
        // per column, the largest pre-activation over the window's rows, kept in two arrays: even columns
        // (ev) and odd ones (od, shifted by one with -inf at both ends), so that window ow is od[ow], ev[ow],
        // od[ow + 1] - contiguous in ow
        const int64_t h0 = oh * 2 - 1 < 0 ? 0 : oh * 2 - 1, h1 = oh * 2 + 2 > H ? H : oh * 2 + 2;
        column_max(p + h0 * W, a, b, static_cast<int32_t>(h0 * W), W, ev, evi, od + 1, odi + 1, true);
        for (int64_t h = h0 + 1; h < h1; ++h)
          column_max(p + h * W, a, b, static_cast<int32_t>(h * W), W, ev, evi, od + 1, odi + 1, false);
        float *orow = o + oh * Wo;
        int32_t *irow = ix + oh * Wo;
#pragma omp simd
        for (int64_t ow = 0; ow < Wo; ++ow) {
          const float m0 = od[ow], m1 = ev[ow], m2 = od[ow + 1];
          const bool u1 = m1 > m0;
          float best = u1 ? m1 : m0;
          int32_t at = u1 ? evi[ow] : odi[ow];
          const bool u2 = m2 > best;
          best = u2 ? m2 : best;
          at = u2 ? odi[ow + 1] : at;
          orow[ow] = best > 0.f ? best : 0.f;
          irow[ow] = at;
        }
      }
    }
  });
}

void stem_backward(const float *dout, const float *z, const int32_t *idx, const float *gamma, const float *beta,
                   const float *mean, const float *rstd, float *dz, float *dgamma, float *dbeta, int64_t N, int64_t C,
                   int64_t H, int64_t W) {
  const int64_t HW = H * W, P = pooled(H) * pooled(W);
  auto sums = [=](int64_t n, int64_t c, float a, float b, float *s1, float *s2) {
    const float *g = dout + (n * C + c) * P, *p = z + (n * C + c) * HW;
    const int32_t *ix = idx + (n * C + c) * P;
    const float m = mean[c];
    float a1 = 0.f, a2 = 0.f;
#pragma omp simd reduction(+ : a1, a2)
    for (int64_t i = 0; i < P; ++i) {
      const float v = p[ix[i]];
      const float d = affine(v, a, b) > 0.f ? g[i] : 0.f;
      a1 += d;
      a2 += d * (v - m);
    }
    *s1 = a1;
    *s2 = a2;
  };
  // dense part first, then the pooled gradients into the elements the pool took
  auto apply = [=](int64_t n, int64_t c, float a, float b, float c0, float c1) {
    const float *g = dout + (n * C + c) * P, *p = z + (n * C + c) * HW;
    const int32_t *ix = idx + (n * C + c) * P;
    float *q = dz + (n * C + c) * HW;
#pragma omp simd
    for (int64_t i = 0; i < HW; ++i) q[i] = c0 + c1 * p[i];
    for (int64_t i = 0; i < P; ++i) {
      if (affine(p[ix[i]], a, b) > 0.f) q[ix[i]] += a * g[i];
    }
  };
  backward_channels(gamma, beta, mean, rstd, dgamma, dbeta, N, C, HW, sums, apply);
}

inline Hyper hyper(void *p) {
  const float *h = static_cast<const float *>(p);
  return Hyper{h[0], h[1]};
}

}  // namespace

#define MS_AOT(name) extern "C" int name(int, void **p, int *, int64_t **s, const char **, void *, void *)
#define F(i) static_cast<float *>(p[i])

// inputs x (N,C,H,W), gamma, beta, moving_mean, moving_variance (C), hyper (eps, momentum);
// outputs y, batch mean, batch rstd, new moving_mean, new moving_variance
MS_AOT(bn_train_fwd) {
  bn_forward<false>(F(0), F(1), F(2), F(3), F(4), hyper(p[5]), F(6), F(7), F(8), F(9), F(10), s[0][0], s[0][1],
                    s[0][2] * s[0][3]);
  return 0;
}
MS_AOT(bn_relu_train_fwd) {
  bn_forward<true>(F(0), F(1), F(2), F(3), F(4), hyper(p[5]), F(6), F(7), F(8), F(9), F(10), s[0][0], s[0][1],
                   s[0][2] * s[0][3]);
  return 0;
}
// inputs dy, x, gamma, beta, mean, rstd; outputs dx, dgamma, dbeta
MS_AOT(bn_train_bwd) {
  bn_backward<false>(F(0), F(1), F(2), F(3), F(4), F(5), F(6), F(7), F(8), s[1][0], s[1][1], s[1][2] * s[1][3]);
  return 0;
}
MS_AOT(bn_relu_train_bwd) {
  bn_backward<true>(F(0), F(1), F(2), F(3), F(4), F(5), F(6), F(7), F(8), s[1][0], s[1][1], s[1][2] * s[1][3]);
  return 0;
}
// inputs z (N,C,H,W), gamma, beta, moving_mean, moving_variance, hyper;
// outputs pooled (N,C,Ho,Wo), mean, rstd, new moving_mean, new moving_variance, idx (N,C,Ho,Wo) int32
MS_AOT(bn_relu_maxpool_fwd) {
  stem_forward(F(0), F(1), F(2), F(3), F(4), hyper(p[5]), F(6), F(7), F(8), F(9), F(10),
               static_cast<int32_t *>(p[11]), s[0][0], s[0][1], s[0][2], s[0][3]);
  return 0;
}
// inputs dpooled, z, idx, gamma, beta, mean, rstd; outputs dz, dgamma, dbeta
MS_AOT(bn_relu_maxpool_bwd) {
  stem_backward(F(0), F(1), static_cast<int32_t *>(p[2]), F(3), F(4), F(5), F(6), F(7), F(8), F(9), s[1][0],
                s[1][1], s[1][2], s[1][3]);
  return 0;
}
