// mindshuffle native kernels: vectors of VW floats with GCC/clang vector extensions (AVX-512, AVX, or 4 floats:
// SSE, NEON on aarch64, or scalar code - whatever -march gives; no intrinsics), and unaligned loads and stores.
#pragma once
#include <cstring>

namespace mindshuffle {

#if defined(__AVX512F__)
constexpr int VW = 16;
#elif defined(__AVX__)
constexpr int VW = 8;
#else
constexpr int VW = 4;
#endif
typedef float vf __attribute__((vector_size(VW * sizeof(float))));

inline vf loadu(const float *p) {
  vf v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
inline void storeu(float *p, vf v) { std::memcpy(p, &v, sizeof v); }

}  // namespace mindshuffle
