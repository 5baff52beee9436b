// mindshuffle native kernels: ShuffleNet V2's channel shuffle fused with the channel split (layers.ChannelSplit),
// NCHW, any 4-byte element type. Split: x (N, C, H, W) -> even channels a and odd channels b (N, C/2, H, W);
// merge (its gradient): a, b -> x. One copy each way, where MindSpore's transpose + split (and its backward,
// concat + transpose) copies twice. Called by MindSpore as AOT custom operators, like dwconv3x3.cc.
#include <cstdint>
#include <cstring>

namespace {

// plane k of x <-> plane k / 2 of a (k even) or b (k odd), per sample
template <bool SPLIT>
void interleave(float *x, float *a, float *b, int64_t N, int64_t C, int64_t HW) {
  const int64_t half = C / 2;
  const size_t bytes = sizeof(float) * HW;
  for (int64_t n = 0; n < N; ++n) {
    for (int64_t j = 0; j < half; ++j) {
      float *xe = x + (n * C + 2 * j) * HW, *xo = xe + HW;
      float *pa = a + (n * half + j) * HW, *pb = b + (n * half + j) * HW;
      if (SPLIT) {
        std::memcpy(pa, xe, bytes);
        std::memcpy(pb, xo, bytes);
      } else {
        std::memcpy(xe, pa, bytes);
        std::memcpy(xo, pb, bytes);
      }
    }
  }
}

}  // namespace

#define MS_AOT(name) extern "C" int name(int, void **p, int *, int64_t **s, const char **, void *, void *)

// input x (N,C,H,W); outputs a, b (N,C/2,H,W)
MS_AOT(shuffle_split) {
  interleave<true>(static_cast<float *>(p[0]), static_cast<float *>(p[1]), static_cast<float *>(p[2]), s[0][0],
                   s[0][1], s[0][2] * s[0][3]);
  return 0;
}
// inputs a, b (N,C/2,H,W); output x (N,C,H,W)
MS_AOT(shuffle_merge) {
  interleave<false>(static_cast<float *>(p[2]), static_cast<float *>(p[0]), static_cast<float *>(p[1]), s[2][0],
                    s[2][1], s[2][2] * s[2][3]);
  return 0;
}
