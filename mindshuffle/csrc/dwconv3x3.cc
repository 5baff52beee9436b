// mindshuffle native kernels: 3x3 depthwise convolution, NCHW float32, padding 1, stride S (1 or 2).
// Forward, input gradient and weight gradient, called by MindSpore as AOT custom operators
// (int f(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, void *stream, void *extra)).
// Each (sample, channel) plane is copied into a zero-bordered scratch plane, so the inner loops have no bounds
// checks and vectorise. Single-threaded by default: on a shared 2-core machine OpenMP barriers cost 20x;
// MINDSHUFFLE_THREADS=2 splits the independent planes (channels for the weight gradient) over two threads
// without spinning (parallel.h).
#include <cstdint>
#include <cstring>
#include <vector>

#include "parallel.h"

using mindshuffle::parallel_for;

namespace {

// copy plane src (H x W) into dst ((H+2) x (W+2)) with a zero border
inline void pad_plane(const float *src, float *dst, int H, int W) {
  const int Wp = W + 2;
  std::memset(dst, 0, sizeof(float) * Wp);
  for (int h = 0; h < H; ++h) {
    float *d = dst + (h + 1) * Wp;
    d[0] = 0.f;
    std::memcpy(d + 1, src + h * W, sizeof(float) * W);
    d[W + 1] = 0.f;
  }
  std::memset(dst + (H + 1) * Wp, 0, sizeof(float) * Wp);
}

template <int S>
void forward(const float *x, const float *w, const float *bias, float *y, int64_t N, int64_t C, int H, int W,
             int Ho, int Wo) {
  const int64_t P = N * C;
  const int Wp = W + 2;
  parallel_for(P, P * H * W, [=](int64_t begin, int64_t end) {
    std::vector<float> buf((H + 2) * Wp);
    float *pad = buf.data();
    for (int64_t p = begin; p < end; ++p) {
      pad_plane(x + p * H * W, pad, H, W);
      const float *k = w + (p % C) * 9;
      const float k0 = k[0], k1 = k[1], k2 = k[2], k3 = k[3], k4 = k[4], k5 = k[5], k6 = k[6], k7 = k[7], k8 = k[8];
      const float b0 = bias ? bias[p % C] : 0.f;
      float *yp = y + p * Ho * Wo;
      for (int oh = 0; oh < Ho; ++oh) {
        const float *r0 = pad + (oh * S) * Wp, *r1 = r0 + Wp, *r2 = r1 + Wp;
        float *yr = yp + oh * Wo;
        for (int ow = 0; ow < Wo; ++ow) {
          const int c = ow * S;
          yr[ow] = b0 + k0 * r0[c] + k1 * r0[c + 1] + k2 * r0[c + 2] + k3 * r1[c] + k4 * r1[c + 1] + k5 * r1[c + 2] +
                   k6 * r2[c] + k7 * r2[c + 1] + k8 * r2[c + 2];
        }
      }
    }
  });
}

template <int S>
void grad_input(const float *dy, const float *w, float *dx, int64_t N, int64_t C, int H, int W, int Ho, int Wo) {
  const int64_t P = N * C;
  const int Wp = W + 2;
  parallel_for(P, P * H * W, [=](int64_t begin, int64_t end) {
    std::vector<float> buf((H + 2) * Wp);
    float *acc = buf.data();
    for (int64_t p = begin; p < end; ++p) {
      const float *g = dy + p * Ho * Wo;
      const float *k = w + (p % C) * 9;
      float *dp = dx + p * H * W;
      if (S == 1) {
        // correlation of the zero-bordered gradient with the flipped kernel
        pad_plane(g, acc, Ho, Wo);
        const float k0 = k[8], k1 = k[7], k2 = k[6], k3 = k[5], k4 = k[4], k5 = k[3], k6 = k[2], k7 = k[1], k8 = k[0];
        for (int h = 0; h < H; ++h) {
          const float *r0 = acc + h * Wp, *r1 = r0 + Wp, *r2 = r1 + Wp;
          float *dr = dp + h * W;
          for (int c = 0; c < W; ++c)
            dr[c] = k0 * r0[c] + k1 * r0[c + 1] + k2 * r0[c + 2] + k3 * r1[c] + k4 * r1[c + 1] + k5 * r1[c + 2] +
                    k6 * r2[c] + k7 * r2[c + 1] + k8 * r2[c + 2];
        }
      } else {
        // scatter into a zero-bordered accumulator, then drop the border
        std::memset(acc, 0, sizeof(float) * (H + 2) * Wp);
        for (int oh = 0; oh < Ho; ++oh) {
          const float *gr = g + oh * Wo;
          for (int i = 0; i < 3; ++i) {
            float *ar = acc + (oh * S + i) * Wp;
            const float a = k[i * 3], b = k[i * 3 + 1], c2 = k[i * 3 + 2];
            for (int ow = 0; ow < Wo; ++ow) {
              const float v = gr[ow];
              float *q = ar + ow * S;
              q[0] += a * v;
              q[1] += b * v;
              q[2] += c2 * v;
            }
          }
        }
        for (int h = 0; h < H; ++h) std::memcpy(dp + h * W, acc + (h + 1) * Wp + 1, sizeof(float) * W);
      }
    }
  });
}

template <int S>
void grad_weight(const float *dy, const float *x, float *dw, int64_t N, int64_t C, int H, int W, int Ho, int Wo) {
  const int Wp = W + 2;
  parallel_for(C, N * C * H * W, [=](int64_t begin, int64_t end) {
    std::vector<float> buf((H + 2) * Wp);
    float *pad = buf.data();
    for (int64_t c = begin; c < end; ++c) {
      double acc[9] = {0, 0, 0, 0, 0, 0, 0, 0, 0};
      for (int64_t n = 0; n < N; ++n) {
        const int64_t p = n * C + c;
        pad_plane(x + p * H * W, pad, H, W);
        const float *g = dy + p * Ho * Wo;
        float s[9] = {0, 0, 0, 0, 0, 0, 0, 0, 0};
        for (int oh = 0; oh < Ho; ++oh) {
          const float *r0 = pad + (oh * S) * Wp, *r1 = r0 + Wp, *r2 = r1 + Wp;
          const float *gr = g + oh * Wo;
          float s0 = 0, s1 = 0, s2 = 0, s3 = 0, s4 = 0, s5 = 0, s6 = 0, s7 = 0, s8 = 0;
#pragma omp simd reduction(+ : s0, s1, s2, s3, s4, s5, s6, s7, s8)
          for (int ow = 0; ow < Wo; ++ow) {
            const int q = ow * S;
            const float v = gr[ow];
            s0 += v * r0[q]; s1 += v * r0[q + 1]; s2 += v * r0[q + 2];
            s3 += v * r1[q]; s4 += v * r1[q + 1]; s5 += v * r1[q + 2];
            s6 += v * r2[q]; s7 += v * r2[q + 1]; s8 += v * r2[q + 2];
          }
          s[0] += s0; s[1] += s1; s[2] += s2; s[3] += s3; s[4] += s4; s[5] += s5; s[6] += s6; s[7] += s7; s[8] += s8;
        }
        for (int t = 0; t < 9; ++t) acc[t] += s[t];
      }
      for (int t = 0; t < 9; ++t) dw[c * 9 + t] = static_cast<float>(acc[t]);
    }
  });
}

}  // namespace

#define MS_AOT(name) extern "C" int name(int, void **p, int *, int64_t **s, const char **, void *, void *)

// inputs x (N,C,H,W), w (C,1,3,3); output y
MS_AOT(dw3x3_s1_fwd) {
  forward<1>((float *)p[0], (float *)p[1], nullptr, (float *)p[2], s[0][0], s[0][1], s[0][2], s[0][3], s[2][2],
             s[2][3]);
  return 0;
}
MS_AOT(dw3x3_s2_fwd) {
  forward<2>((float *)p[0], (float *)p[1], nullptr, (float *)p[2], s[0][0], s[0][1], s[0][2], s[0][3], s[2][2],
             s[2][3]);
  return 0;
}
// inference with a folded BatchNorm: inputs x, w, bias (C); output y
MS_AOT(dw3x3_s1_fwd_bias) {
  forward<1>((float *)p[0], (float *)p[1], (float *)p[2], (float *)p[3], s[0][0], s[0][1], s[0][2], s[0][3], s[3][2],
             s[3][3]);
  return 0;
}
MS_AOT(dw3x3_s2_fwd_bias) {
  forward<2>((float *)p[0], (float *)p[1], (float *)p[2], (float *)p[3], s[0][0], s[0][1], s[0][2], s[0][3], s[3][2],
             s[3][3]);
  return 0;
}
// inputs dy, w, x (for its shape); output dx
MS_AOT(dw3x3_s1_bwd_x) {
  grad_input<1>((float *)p[0], (float *)p[1], (float *)p[3], s[3][0], s[3][1], s[3][2], s[3][3], s[0][2], s[0][3]);
  return 0;
}
MS_AOT(dw3x3_s2_bwd_x) {
  grad_input<2>((float *)p[0], (float *)p[1], (float *)p[3], s[3][0], s[3][1], s[3][2], s[3][3], s[0][2], s[0][3]);
  return 0;
}
// inputs dy, x; output dw (C,1,3,3)
MS_AOT(dw3x3_s1_bwd_w) {
  grad_weight<1>((float *)p[0], (float *)p[1], (float *)p[2], s[1][0], s[1][1], s[1][2], s[1][3], s[0][2], s[0][3]);
  return 0;
}
MS_AOT(dw3x3_s2_bwd_w) {
  grad_weight<2>((float *)p[0], (float *)p[1], (float *)p[2], s[1][0], s[1][1], s[1][2], s[1][3], s[0][2], s[0][3]);
  return 0;
}
