// mindshuffle native kernels: global average pooling of NCHW float32, x (N, C, H, W) -> y (N, C), and its
// gradient (each plane filled with dy / (H * W)). MindSpore's CPU ReduceMean backward (Tile + RealDiv) is
// several times slower than this fill. Called by MindSpore as AOT custom operators, like dwconv3x3.cc.
#include <cstdint>

#define MS_AOT(name) extern "C" int name(int, void **p, int *, int64_t **s, const char **, void *, void *)

// input x (N,C,H,W); output y (N,C)
MS_AOT(global_avg_pool_fwd) {
  const float *x = static_cast<const float *>(p[0]);
  float *y = static_cast<float *>(p[1]);
  const int64_t P = s[0][0] * s[0][1], HW = s[0][2] * s[0][3];
  for (int64_t k = 0; k < P; ++k) {
    const float *q = x + k * HW;
    float acc = 0.f;
#pragma omp simd reduction(+ : acc)
    for (int64_t i = 0; i < HW; ++i) acc += q[i];
    y[k] = acc / static_cast<float>(HW);
  }
  return 0;
}
// inputs dy (N,C), x (for its shape); output dx (N,C,H,W)
MS_AOT(global_avg_pool_bwd) {
  const float *dy = static_cast<const float *>(p[0]);
  float *dx = static_cast<float *>(p[2]);
  const int64_t P = s[1][0] * s[1][1], HW = s[1][2] * s[1][3];
  for (int64_t k = 0; k < P; ++k) {
    const float v = dy[k] / static_cast<float>(HW);
    float *q = dx + k * HW;
#pragma omp simd
    for (int64_t i = 0; i < HW; ++i) q[i] = v;
  }
  return 0;
}
