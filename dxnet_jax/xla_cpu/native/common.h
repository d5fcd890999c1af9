// Shared by the native kernels: the CPU's vector type, and work split over XLA's thread pool.
#ifndef DXNET_JAX_XLA_CPU_NATIVE_COMMON_H_
#define DXNET_JAX_XLA_CPU_NATIVE_COMMON_H_

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <immintrin.h>
#include <memory>
#include <thread>

#include "xla/ffi/api/ffi.h"

namespace dxnet_native {

namespace ffi = xla::ffi;

// Floats per vector register: built with -march=native, so this follows the CPU.
#if defined(__AVX512F__)
constexpr int kLanes = 16;
#elif defined(__AVX__)
constexpr int kLanes = 8;
#else
constexpr int kLanes = 4;
#endif

typedef float Vec __attribute__((vector_size(kLanes * sizeof(float))));

inline Vec Load(const float* p) {
  Vec v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

inline void Store(float* p, Vec v) { std::memcpy(p, &v, sizeof(v)); }

// One float in every lane, as a broadcast load where x comes from memory (`Vec{} + x` compiled
// to a scalar add and a register shuffle, which compete with the FMAs for the FP pipes).
inline Vec Broadcast(float x) {
#if defined(__AVX512F__)
  return _mm512_set1_ps(x);
#elif defined(__AVX__)
  return _mm256_set1_ps(x);
#else
  return _mm_set1_ps(x);
#endif
}

inline int64_t RoundUp(int64_t n, int64_t m) { return (n + m - 1) / m * m; }

// Runs body(task, worker) for task in [0, n_tasks) on the caller and on XLA's intra-op pool, and
// returns how many workers took part. Tasks are claimed from a shared counter, so the caller
// never waits on a task nobody has started: a helper the pool runs late finds no task left and
// returns without touching `body` (it owns only the shared state). `worker` is a dense index
// < max_workers, fixed per thread, for per-worker scratch.
template <typename Body>
int ParallelFor(ffi::ThreadPool& pool, int64_t n_tasks, int max_workers, Body&& body) {
  struct State {
    std::atomic<int64_t> next{0};
    std::atomic<int64_t> done{0};
    std::atomic<int> workers{0};
  };
  auto state = std::make_shared<State>();
  auto run = [state, n_tasks, &body]() {
    int worker = -1;
    for (int64_t task; (task = state->next.fetch_add(1)) < n_tasks;) {
      if (worker < 0) worker = state->workers.fetch_add(1);
      body(task, worker);
      state->done.fetch_add(1, std::memory_order_release);
    }
  };
  const int64_t helpers = std::min<int64_t>(
      std::min<int64_t>(pool.num_threads(), max_workers) - 1, n_tasks - 1);
  for (int64_t i = 0; i < helpers; ++i) pool.Schedule(decltype(run)(run));
  run();
  while (state->done.load(std::memory_order_acquire) < n_tasks) std::this_thread::yield();
  return state->workers.load();
}

// Kernel gradients are summed in this many tasks at most, each into its own partial sum, and the
// partial sums are added in task order: the result does not depend on the thread count or on
// which thread ran what, so a resumed training run repeats an uninterrupted one bit for bit.
constexpr int64_t kReductionTasks = 32;
// ... and each such task covers at least this many output pixels, so that small maps do not
// spend more time on zeroing and adding partial sums than on the sums themselves.
constexpr int64_t kMinTaskPixels = 1024;

inline int64_t CeilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Image rows per task: about 8 tasks per thread, so a late or busy thread costs little.
inline int64_t RowsPerTask(int64_t rows, int64_t threads) {
  return std::max<int64_t>(1, rows / (8 * std::max<int64_t>(1, threads)));
}

// The handlers' signatures: a convolution (input, filter -> output) and its kernel gradient
// (input, output gradient, a zero array of the kernel's shape -> kernel gradient), float32.
inline auto ConvolutionBinding() {
  return ffi::Ffi::Bind()
      .Ctx<ffi::ThreadPool>()
      .Arg<ffi::Buffer<ffi::F32>>()
      .Arg<ffi::Buffer<ffi::F32>>()
      .Ret<ffi::Buffer<ffi::F32>>();
}

inline auto KernelGradBinding() {
  return ffi::Ffi::Bind()
      .Ctx<ffi::ThreadPool>()
      .Arg<ffi::Buffer<ffi::F32>>()
      .Arg<ffi::Buffer<ffi::F32>>()
      .Arg<ffi::Buffer<ffi::F32>>()
      .Ret<ffi::Buffer<ffi::F32>>();
}

}  // namespace dxnet_native

#endif  // DXNET_JAX_XLA_CPU_NATIVE_COMMON_H_
