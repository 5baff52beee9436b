// mindshuffle native kernels for CPU inference of ShuffleNet V2 with its BatchNorms folded, NCHW float32.
//
// MindSpore runs a 1x1 conv's bias and the ReLU after it as two more passes over the map (BiasAdd, ReLU). Here a
// 1x1 conv leaves them out and whichever kernel reads its output next applies act(v) = max(v + bias[c], 0) while
// it copies the map anyway:
// - act_cat_split: the next basic unit's channel shuffle + split over the concat of a unit's two branches;
// - act_cat: the concat at the end of a stage;
// - act_avgpool: the global average pool after conv5;
// - dw3x3_s*_fwd_act (dwconv3x3.cc): the depthwise conv's zero-bordered copy of its input plane.
// stem_conv_pool: conv1 (3x3, stride 2, padding 1) + bias + ReLU + the 3x3 stride-2 max pool (padding 1) in
// one pass: the 112x112 conv map is never written out (MindSpore's conv + MaxPool took ~20 ms of a 110 ms
// ShuffleNet V2 x1.0 forward at batch 32).
// Called by MindSpore as AOT custom operators, like dwconv3x3.cc; no gradients (inference only).
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "parallel.h"
#include "simd.h"

using namespace mindshuffle;  // parallel_for; vf, VW, loadu, storeu

namespace {

inline float act(float v, float b) {
  const float t = v + b;
  return t > 0.f ? t : 0.f;
}

// channel k of [act(a); act(b)] (per sample) -> e[k / 2] (k even) or o[k / 2] (k odd) when SPLIT, else e[k]
template <bool SPLIT>
void act_concat(const float *a, const float *ba, const float *b, const float *bb, float *e, float *o, int64_t N,
                int64_t Ca, int64_t Cb, int64_t HW) {
  const int64_t C = Ca + Cb;
  parallel_for(N, N * C * HW, [=](int64_t n0, int64_t n1) {
    for (int64_t n = n0; n < n1; ++n) {
      for (int64_t k = 0; k < C; ++k) {
        const float *x = k < Ca ? a + (n * Ca + k) * HW : b + (n * Cb + k - Ca) * HW;
        const float bias = k < Ca ? ba[k] : bb[k - Ca];
        float *y = SPLIT ? (k % 2 ? o : e) + (n * (C / 2) + k / 2) * HW : e + (n * C + k) * HW;
#pragma omp simd
        for (int64_t i = 0; i < HW; ++i) y[i] = act(x[i], bias);
      }
    }
  });
}

// ---- the stem -------------------------------------------------------------------------------------------------
// Register blocking: CB output channels x (even, odd) column vectors of accumulators.
constexpr int CB = VW == 16 ? 8 : 4;

struct Stem {
  int64_t Ci, H, W, Co;
  int64_t Hc, Wc, Hp, Wp;  // conv map and pooled map
  int64_t Ue, Uo;          // even and odd conv columns (Ue == Wp)
  int64_t Uv;              // Ue rounded up to whole vectors
  int64_t Lq;              // floats per tap array
  int64_t row;             // floats per output channel in a conv row: even columns (Uv), a zero, odd columns (Uv)
};

// Conv column c takes padded input columns 2c .. 2c + 2 (P: the input row with one zero each side). Even conv
// columns 2u take P[4u .. 4u + 2], odd ones P[4u + 2 .. 4u + 4]: with the row split by column mod 4,
// Q_k[u] = P[4u + k], every tap of a vector of even (or odd) conv columns is one contiguous load, and the
// pool's stride-2 windows become contiguous too: pooled column px = max(odd[px - 1], even[px], odd[px]).
void load_taps(const Stem &g, const float *x, int64_t r, float *taps) {
  for (int64_t ci = 0; ci < g.Ci; ++ci) {
    for (int ky = 0; ky < 3; ++ky) {
      float *Q = taps + (ci * 3 + ky) * 4 * g.Lq;
      const int64_t iy = 2 * r - 1 + ky;
      if (iy < 0 || iy >= g.H) {
        std::fill(Q, Q + 4 * g.Lq, 0.f);
        continue;
      }
      const float *in = x + (ci * g.H + iy) * g.W;
      for (int k = 0; k < 4; ++k) {
        float *q = Q + k * g.Lq;
        // q[u] = P[4u + k] = in[4u + k - 1] where 0 <= 4u + k - 1 < W
        const int64_t u0 = k == 0 ? 1 : 0, u1 = std::min<int64_t>(g.Lq, (g.W - k) / 4 + 1);
        for (int64_t u = 0; u < u0; ++u) q[u] = 0.f;
        for (int64_t u = u0; u < u1; ++u) q[u] = in[4 * u + k - 1];
        for (int64_t u = std::max(u0, u1); u < g.Lq; ++u) q[u] = 0.f;
      }
    }
  }
}

// One conv row of output channels co0 .. co0 + CB for the vector of even and odd columns at u0, + bias, ReLU
template <int NB>
inline void conv_block(const Stem &g, const float *taps, const float *w, const float *b, int64_t co0, int64_t u0,
                       float *out) {
  vf ev[NB], od[NB];
  for (int j = 0; j < NB; ++j) ev[j] = od[j] = vf{} + b[co0 + j];
  for (int64_t ci = 0; ci < g.Ci; ++ci) {
    for (int ky = 0; ky < 3; ++ky) {
      const float *Q = taps + (ci * 3 + ky) * 4 * g.Lq + u0;
      const vf q0 = loadu(Q), q1 = loadu(Q + g.Lq), q2 = loadu(Q + 2 * g.Lq), q3 = loadu(Q + 3 * g.Lq),
               q4 = loadu(Q + 1);
      const float *k = w + (co0 * g.Ci + ci) * 9 + ky * 3;
      for (int j = 0; j < NB; ++j) {
        const float *kj = k + j * g.Ci * 9;
        ev[j] += q0 * kj[0];
        ev[j] += q1 * kj[1];
        ev[j] += q2 * kj[2];
        od[j] += q2 * kj[0];
        od[j] += q3 * kj[1];
        od[j] += q4 * kj[2];
      }
    }
  }
  for (int j = 0; j < NB; ++j) {
    float *o = out + (co0 + j) * g.row + u0;
    storeu(o, ev[j] > 0.f ? ev[j] : vf{});
    storeu(o + g.Uv + 1, od[j] > 0.f ? od[j] : vf{});
  }
}

void conv_row(const Stem &g, const float *taps, const float *w, const float *b, float *out) {
  for (int64_t u0 = 0; u0 < g.Uv; u0 += VW) {
    int64_t co = 0;
    for (; co + CB <= g.Co; co += CB) conv_block<CB>(g, taps, w, b, co, u0, out);
    for (; co < g.Co; ++co) conv_block<1>(g, taps, w, b, co, u0, out);
  }
  for (int64_t co = 0; co < g.Co; ++co) {
    float *o = out + co * g.row;
    o[g.Uv] = 0.f;                                        // odd[-1]: the pool's left padding
    if (g.Uo < g.Ue) o[g.Uv + 1 + g.Uo] = 0.f;             // odd[Ue - 1] lies past the map: right padding
  }
}

// x (N, Ci, H, W), w (Co, Ci, 3, 3), b (Co) -> y (N, Co, Hp, Wp)
void stem_forward(const float *x, const float *w, const float *b, float *y, int64_t N, const Stem &g) {
  parallel_for(N, N * g.Co * g.Hc * g.Wc, [=, &g](int64_t n0, int64_t n1) {
    std::vector<float> taps(g.Ci * 3 * 4 * g.Lq);
    std::vector<float> rows(3 * g.Co * g.row);  // conv rows r % 3 after bias + ReLU
    std::vector<float> vmax(g.row);
    for (int64_t n = n0; n < n1; ++n) {
      const float *xn = x + n * g.Ci * g.H * g.W;
      int64_t done = -1;  // conv rows up to here are in ``rows``
      for (int64_t py = 0; py < g.Hp; ++py) {
        const int64_t r0 = std::max<int64_t>(0, 2 * py - 1), r1 = std::min<int64_t>(g.Hc - 1, 2 * py + 1);
        for (int64_t r = std::max(r0, done + 1); r <= r1; ++r) {
          load_taps(g, xn, r, taps.data());
          conv_row(g, taps.data(), w, b, rows.data() + (r % 3) * g.Co * g.row);
          done = r;
        }
        for (int64_t co = 0; co < g.Co; ++co) {
          // zero padding equals the pool's -inf padding: the values are >= 0 and every window holds one
          const float *ra = rows.data() + ((r0 % 3) * g.Co + co) * g.row;
          const float *rb = rows.data() + (((r0 + (r1 > r0)) % 3) * g.Co + co) * g.row;
          const float *rc = rows.data() + ((r1 % 3) * g.Co + co) * g.row;
          float *v = vmax.data();
#pragma omp simd
          for (int64_t i = 0; i < g.row; ++i) v[i] = std::max(std::max(ra[i], rb[i]), rc[i]);
          const float *ev = v, *od = v + g.Uv;  // od[px] = odd[px - 1]
          float *out = y + ((n * g.Co + co) * g.Hp + py) * g.Wp;
#pragma omp simd
          for (int64_t px = 0; px < g.Wp; ++px) out[px] = std::max(std::max(od[px], ev[px]), od[px + 1]);
        }
      }
    }
  });
}

}  // namespace

#define MS_AOT(name) extern "C" int name(int, void **p, int *, int64_t **s, const char **, void *, void *)
#define F(i) static_cast<float *>(p[i])

// inputs a (N,Ca,H,W), ba (Ca), b (N,Cb,H,W), bb (Cb); outputs e, o (N,(Ca+Cb)/2,H,W)
MS_AOT(act_cat_split) {
  act_concat<true>(F(0), F(1), F(2), F(3), F(4), F(5), s[0][0], s[0][1], s[2][1], s[0][2] * s[0][3]);
  return 0;
}
// inputs a, ba, b, bb as above; output y (N,Ca+Cb,H,W)
MS_AOT(act_cat) {
  act_concat<false>(F(0), F(1), F(2), F(3), F(4), nullptr, s[0][0], s[0][1], s[2][1], s[0][2] * s[0][3]);
  return 0;
}
// inputs x (N,C,H,W), b (C); output y (N,C): the mean of act(x) over each plane
MS_AOT(act_avgpool) {
  const float *x = F(0), *b = F(1);
  float *y = F(2);
  const int64_t C = s[0][1], P = s[0][0] * C, HW = s[0][2] * s[0][3];
  for (int64_t k = 0; k < P; ++k) {
    const float *q = x + k * HW, bias = b[k % C];
    float acc = 0.f;
#pragma omp simd reduction(+ : acc)
    for (int64_t i = 0; i < HW; ++i) acc += act(q[i], bias);
    y[k] = acc / static_cast<float>(HW);
  }
  return 0;
}
// inputs x (N,Ci,H,W), w (Co,Ci,3,3), b (Co); output y (N,Co,Hp,Wp)
MS_AOT(stem_conv_pool) {
  Stem g;
  g.Ci = s[0][1];
  g.H = s[0][2];
  g.W = s[0][3];
  g.Co = s[1][0];
  g.Hc = (g.H - 1) / 2 + 1;
  g.Wc = (g.W - 1) / 2 + 1;
  g.Hp = (g.Hc - 1) / 2 + 1;
  g.Wp = (g.Wc - 1) / 2 + 1;
  g.Ue = (g.Wc + 1) / 2;
  g.Uo = g.Wc / 2;
  g.Uv = (g.Ue + VW - 1) / VW * VW;
  g.Lq = g.Uv + VW;
  g.row = 2 * g.Uv + 1;
  stem_forward(F(0), F(1), F(2), F(3), s[0][0], g);
  return 0;
}
