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

// pad_plane of max(src + b, 0): the bias and ReLU of the 1x1 conv before, left to this copy (infer.cc)
inline void pad_plane_act(const float *src, float b, float *dst, int H, int W) {
  const int Wp = W + 2;
  std::memset(dst, 0, sizeof(float) * Wp);
  for (int h = 0; h < H; ++h) {
    float *d = dst + (h + 1) * Wp;
    const float *r = src + h * W;
    d[0] = 0.f;
#pragma omp simd
    for (int w = 0; w < W; ++w) d[w + 1] = r[w] + b > 0.f ? r[w] + b : 0.f;
    d[W + 1] = 0.f;
  }
  std::memset(dst + (H + 1) * Wp, 0, sizeof(float) * Wp);
}

// Stride 1 on a zero-bordered plane ((H+2) x Wp, Wp = W + 2) as one flat loop over q = h * Wp + w: the
// positions w >= W are computed and dropped, and every loop is long (small planes vectorise too).
inline int flat_len(int H, int W) { return (H - 1) * (W + 2) + W; }

inline void conv_s1_plane(const float *pad, const float *k, float b0, float *out, int H, int W, float *z) {
  const int Wp = W + 2, L = flat_len(H, W);
  const float k0 = k[0], k1 = k[1], k2 = k[2], k3 = k[3], k4 = k[4], k5 = k[5], k6 = k[6], k7 = k[7], k8 = k[8];
  const float *r0 = pad, *r1 = pad + Wp, *r2 = pad + 2 * Wp;
#pragma omp simd
  for (int q = 0; q < L; ++q)
    z[q] = b0 + k0 * r0[q] + k1 * r0[q + 1] + k2 * r0[q + 2] + k3 * r1[q] + k4 * r1[q + 1] + k5 * r1[q + 2] +
           k6 * r2[q] + k7 * r2[q + 1] + k8 * r2[q + 2];
  for (int h = 0; h < H; ++h) std::memcpy(out + h * W, z + h * Wp, sizeof(float) * W);
}

template <int S>
void forward(const float *x, const float *w, const float *bias, float *y, int64_t N, int64_t C, int H, int W,
             int Ho, int Wo, const float *bias_in = nullptr) {
  const int64_t P = N * C;
  const int Wp = W + 2;
  parallel_for(P, P * H * W, [=](int64_t begin, int64_t end) {
    std::vector<float> buf((2 * H + 2) * Wp);
    float *pad = buf.data(), *z = pad + (H + 2) * Wp;
    for (int64_t p = begin; p < end; ++p) {
      if (bias_in)
        pad_plane_act(x + p * H * W, bias_in[p % C], pad, H, W);
      else
        pad_plane(x + p * H * W, pad, H, W);
      const float *k = w + (p % C) * 9;
      const float b0 = bias ? bias[p % C] : 0.f;
      float *yp = y + p * Ho * Wo;
      if (S == 1) {
        conv_s1_plane(pad, k, b0, yp, H, W, z);
        continue;
      }
      const float k0 = k[0], k1 = k[1], k2 = k[2], k3 = k[3], k4 = k[4], k5 = k[5], k6 = k[6], k7 = k[7], k8 = k[8];
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
    std::vector<float> buf((2 * H + 2) * Wp);
    float *acc = buf.data(), *z = acc + (H + 2) * Wp;
    for (int64_t p = begin; p < end; ++p) {
      const float *g = dy + p * Ho * Wo;
      const float *k = w + (p % C) * 9;
      float *dp = dx + p * H * W;
      if (S == 1) {
        // correlation of the zero-bordered gradient with the flipped kernel
        pad_plane(g, acc, Ho, Wo);
        const float flipped[9] = {k[8], k[7], k[6], k[5], k[4], k[3], k[2], k[1], k[0]};
        conv_s1_plane(acc, flipped, 0.f, dp, H, W, z);
      } else {
        // gather: input row h = 2t takes kernel row 1 of output row t; h = 2t + 1 takes kernel row 0 of output
        // row t + 1 and kernel row 2 of row t; likewise for columns. The gradient is copied into a buffer with
        // one zero row and column after it, for the windows that reach past the output.
        const int Wg = Wo + 1;
        for (int oh = 0; oh < Ho; ++oh) {
          std::memcpy(acc + oh * Wg, g + oh * Wo, sizeof(float) * Wo);
          acc[oh * Wg + Wo] = 0.f;
        }
        std::memset(acc + Ho * Wg, 0, sizeof(float) * Wg);
        for (int h = 0; h < H; ++h) {
          const int t = h / 2;
          const bool odd = h & 1;
          // rows ra (kernel row ia) and rb (kernel row ib, weight 0 for even h)
          const float *ra = acc + (odd ? t + 1 : t) * Wg, *rb = acc + t * Wg;
          const float *ka = k + (odd ? 0 : 3), *kb = k + 6;
          const float kb_on = odd ? 1.f : 0.f;
          const float a0 = ka[0], a1 = ka[1], a2 = ka[2], b0 = kb[0] * kb_on, b1 = kb[1] * kb_on, b2 = kb[2] * kb_on;
          float *dr = dp + h * W;
          const int pairs = W / 2;
#pragma omp simd
          for (int m = 0; m < pairs; ++m) {
            dr[2 * m] = a1 * ra[m] + b1 * rb[m];
            dr[2 * m + 1] = a0 * ra[m + 1] + a2 * ra[m] + b0 * rb[m + 1] + b2 * rb[m];
          }
          if (W & 1) dr[W - 1] = a1 * ra[pairs] + b1 * rb[pairs];
        }
      }
    }
  });
}

template <int S>
void grad_weight(const float *dy, const float *x, float *dw, int64_t N, int64_t C, int H, int W, int Ho, int Wo) {
  const int Wp = W + 2;
  parallel_for(C, N * C * H * W, [=](int64_t begin, int64_t end) {
    std::vector<float> buf((2 * H + 2) * Wp, 0.f);
    float *pad = buf.data(), *gz = pad + (H + 2) * Wp;  // gz: the gradient on the flat grid, zero for w >= W
    for (int64_t c = begin; c < end; ++c) {
      double acc[9] = {0, 0, 0, 0, 0, 0, 0, 0, 0};
      for (int64_t n = 0; n < N; ++n) {
        const int64_t p = n * C + c;
        pad_plane(x + p * H * W, pad, H, W);
        const float *g = dy + p * Ho * Wo;
        float s[9] = {0, 0, 0, 0, 0, 0, 0, 0, 0};
        if (S == 1) {
          for (int h = 0; h < H; ++h) std::memcpy(gz + h * Wp, g + h * W, sizeof(float) * W);
          const float *r0 = pad, *r1 = pad + Wp, *r2 = pad + 2 * Wp;
          const int L = flat_len(H, W);
          float s0 = 0, s1 = 0, s2 = 0, s3 = 0, s4 = 0, s5 = 0, s6 = 0, s7 = 0, s8 = 0;
#pragma omp simd reduction(+ : s0, s1, s2, s3, s4, s5, s6, s7, s8)
          for (int q = 0; q < L; ++q) {
            const float v = gz[q];
            s0 += v * r0[q]; s1 += v * r0[q + 1]; s2 += v * r0[q + 2];
            s3 += v * r1[q]; s4 += v * r1[q + 1]; s5 += v * r1[q + 2];
            s6 += v * r2[q]; s7 += v * r2[q + 1]; s8 += v * r2[q + 2];
          }
          acc[0] += s0; acc[1] += s1; acc[2] += s2; acc[3] += s3; acc[4] += s4; acc[5] += s5; acc[6] += s6;
          acc[7] += s7; acc[8] += s8;
          continue;
        }
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
// inference, the input's bias + ReLU applied on the fly: inputs x, bias_in (C), w, bias (C); output y
MS_AOT(dw3x3_s1_fwd_act) {
  forward<1>((float *)p[0], (float *)p[2], (float *)p[3], (float *)p[4], s[0][0], s[0][1], s[0][2], s[0][3], s[4][2],
             s[4][3], (float *)p[1]);
  return 0;
}
MS_AOT(dw3x3_s2_fwd_act) {
  forward<2>((float *)p[0], (float *)p[2], (float *)p[3], (float *)p[4], s[0][0], s[0][1], s[0][2], s[0][3], s[4][2],
             s[4][3], (float *)p[1]);
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
