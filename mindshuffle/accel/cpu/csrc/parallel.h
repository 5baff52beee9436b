// mindshuffle native kernels: split a loop over threads when it is big enough to pay for the thread starts.
// No spinning and no pool: the other parts run on new std::threads that are joined, so nothing is left
// running between kernels (MindSpore's own thread pool runs the ops in between).
//
// How many: MINDSHUFFLE_THREADS if set, else the CPUs this process may run on, at most 8. The kernels are
// memory-bound; on the project's idle 2-core machine two threads made ShuffleNet V2 x1.0 inference ~1.5x and a
// training step ~1.2x faster than one (bench/RESULTS.md). With one thread the native kernels that replace
// several MindSpore ops (which use every core) can even be slower than those ops. On a machine shared with
// other busy processes a split loop waits for its slowest part, so MINDSHUFFLE_THREADS=1 can be faster there;
// distributed CPU runs (several ranks on one machine) default to 1 (mindshuffle.engine). Results do not depend
// on the thread count: every split is over independent planes or channels.
#pragma once
#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <thread>
#include <vector>
#ifdef __linux__
#include <sched.h>
#endif

namespace mindshuffle {

inline int kernel_threads() {
  static const int n = [] {
    int cpus = static_cast<int>(std::thread::hardware_concurrency());
#ifdef __linux__
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof(set), &set) == 0) cpus = CPU_COUNT(&set);
#endif
    const char *env = std::getenv("MINDSHUFFLE_THREADS");
    int want = env && std::atoi(env) > 0 ? std::atoi(env) : std::min(cpus, 8);
    return std::max(1, std::min(want, 64));
  }();
  return n;
}

// f(begin, end) over [0, n) in contiguous parts; ``work`` is the number of elements the whole loop touches
template <class F>
void parallel_for(int64_t n, int64_t work, F f) {
  constexpr int64_t kMinWork = int64_t(1) << 17;  // per thread, ~0.5 MB of float32: less does not pay a start
  const int64_t t = std::min<int64_t>({kernel_threads(), n, work / kMinWork});
  if (t < 2) {
    f(int64_t(0), n);
    return;
  }
  std::vector<std::thread> others;
  others.reserve(t - 1);
  for (int64_t i = 1; i < t; ++i) others.emplace_back([&f, i, t, n] { f(n * i / t, n * (i + 1) / t); });
  f(int64_t(0), n / t);
  for (auto &th : others) th.join();
}

}  // namespace mindshuffle
