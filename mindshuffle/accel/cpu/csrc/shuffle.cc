// mindshuffle native kernels: ShuffleNet V2's channel shuffle fused with the channel split (layers.ChannelSplit),
// NCHW, any 4-byte element type. Split: x (N, C, H, W) -> even channels e and odd channels o (N, C/2, H, W);
// merge (its gradient): e, o -> x. One copy each way, where MindSpore's transpose + split (and its backward,
// concat + transpose) copies twice. The cat_ variants take x as its two concatenated parts [a; b] (a unit's two
// branches), which saves the concat and its backward too. Called by MindSpore as AOT custom operators, like
// dwconv3x3.cc.
#include <cstdint>
#include <cstring>

#include "parallel.h"

namespace {

// channel k of [a (Ca channels); b (Cb channels)] <-> channel k / 2 of e (k even) or o (k odd), per sample
template <bool SPLIT>
void interleave(float *a, float *b, float *e, float *o, int64_t N, int64_t Ca, int64_t Cb, int64_t HW) {
  const int64_t C = Ca + Cb, half = C / 2;
  const size_t bytes = sizeof(float) * HW;
  mindshuffle::parallel_for(N, N * C * HW, [=](int64_t n0, int64_t n1) {
    for (int64_t n = n0; n < n1; ++n) {
      for (int64_t k = 0; k < C; ++k) {
        float *x = k < Ca ? a + (n * Ca + k) * HW : b + (n * Cb + k - Ca) * HW;
        float *y = (k % 2 ? o : e) + (n * half + k / 2) * HW;
        if (SPLIT)
          std::memcpy(y, x, bytes);
        else
          std::memcpy(x, y, bytes);
      }
    }
  });
}

}  // namespace

#define MS_AOT(name) extern "C" int name(int, void **p, int *, int64_t **s, const char **, void *, void *)
#define F(i) static_cast<float *>(p[i])

// input x (N,C,H,W); outputs e, o (N,C/2,H,W)
MS_AOT(shuffle_split) {
  interleave<true>(F(0), nullptr, F(1), F(2), s[0][0], s[0][1], 0, s[0][2] * s[0][3]);
  return 0;
}
// inputs e, o (N,C/2,H,W); output x (N,C,H,W)
MS_AOT(shuffle_merge) {
  interleave<false>(F(2), nullptr, F(0), F(1), s[2][0], s[2][1], 0, s[2][2] * s[2][3]);
  return 0;
}
// inputs a (N,Ca,H,W), b (N,Cb,H,W); outputs e, o (N,(Ca+Cb)/2,H,W)
MS_AOT(cat_shuffle_split) {
  interleave<true>(F(0), F(1), F(2), F(3), s[0][0], s[0][1], s[1][1], s[0][2] * s[0][3]);
  return 0;
}
// inputs e, o, a, b (for their shapes); outputs da, db
MS_AOT(cat_shuffle_merge) {
  interleave<false>(F(4), F(5), F(0), F(1), s[2][0], s[2][1], s[3][1], s[2][2] * s[2][3]);
  return 0;
}
