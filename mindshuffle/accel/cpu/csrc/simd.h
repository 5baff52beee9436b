// mindshuffle native kernels: vectors of VW floats with GCC vector extensions (AVX-512, AVX or SSE, whatever
// -march gives), and unaligned loads and stores of them.
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
