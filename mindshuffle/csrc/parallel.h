// mindshuffle native kernels: split a loop over two threads when it is big enough to pay for a thread start.
// No spinning and no pool: the second half runs on a new std::thread and is joined, so on a busy machine the
// worst case should be the serial time plus the start. Serial unless MINDSHUFFLE_THREADS=2: on the idle 2-core
// machine two threads made the ShuffleNet V2 training step ~15% faster, but with another job running the step
// took up to 2x longer (a half waits for a core; the join waits for it), so it is opt-in.
#pragma once
#include <cstdint>
#include <cstdlib>
#include <thread>

namespace mindshuffle {

inline int kernel_threads() {
  static const int n = [] {
    const char *env = std::getenv("MINDSHUFFLE_THREADS");
    int want = env ? std::atoi(env) : 1;
    const int hw = static_cast<int>(std::thread::hardware_concurrency());
    if (hw > 0 && want > hw) want = hw;
    return want < 1 ? 1 : (want > 2 ? 2 : want);
  }();
  return n;
}

// f(begin, end) over [0, n); ``work`` is the number of elements the whole loop touches
template <class F>
void parallel_for(int64_t n, int64_t work, F f) {
  constexpr int64_t kMinWork = int64_t(1) << 18;  // ~1 MB of float32: below this a thread start costs too much
  if (n < 2 || work < kMinWork || kernel_threads() < 2) {
    f(int64_t(0), n);
    return;
  }
  const int64_t mid = n / 2;
  std::thread other([&f, mid, n] { f(mid, n); });
  f(int64_t(0), mid);
  other.join();
}

}  // namespace mindshuffle
