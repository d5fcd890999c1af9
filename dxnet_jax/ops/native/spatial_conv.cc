// Stride-1 'SAME' kxk convolution of NHWC float32 images, and its kernel gradient, for XLA:CPU.
//
// Why: XLA:CPU has no fast kernel for the dense layers' narrow 3x3 convolution (48 -> 12
// channels); written as one product and k*k shifted sums (ops/spatial.py) it still took twice
// oneDNN's time. Here each output tile of R pixels x B vector blocks of channels is accumulated
// in registers over the k*k taps and the input channels, reading the input where it lies: no
// im2col copy, no product array. The data gradient is this same convolution with the kernel
// flipped and transposed (done by the caller). The kernel gradient sums outer products of input
// pixels and output-gradient pixels, per task, then adds the tasks' partial sums in order.
//
// Built on the machine that runs it (ops/native_build.py), so the vector width and the tile
// sizes below follow the CPU.
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "common.h"

namespace {

using namespace dxnet_native;  // NOLINT: Vec, Load, Store, ParallelFor, ...

#if defined(__AVX512F__)
constexpr int kMaxPixels = 8;   // output pixels per register tile
constexpr int kMaxBlocks = 3;   // vector blocks of output channels per register tile
constexpr int kMaxInputs = 16;  // input channels per kernel-gradient tile (x 1 block)
#elif defined(__AVX__)
constexpr int kMaxPixels = 6;
constexpr int kMaxBlocks = 2;
constexpr int kMaxInputs = 6;
#else
constexpr int kMaxPixels = 4;
constexpr int kMaxBlocks = 2;
constexpr int kMaxInputs = 4;
#endif

struct ConvShape {
  int64_t n, h, w, cin, cout, k, pad;
  int64_t cout_padded;  // output channels rounded up to whole vectors (zero kernel columns)
};

// One register tile of the convolution: output pixels [w0, w0 + R) of row (n, h), channel
// blocks [block, block + B). `Edge` tiles check each tap's column against the image border.
template <int R, int B, bool Edge>
void ConvTile(const ConvShape& s, const float* image, const float* packed, int64_t h, int64_t w0,
              int64_t block, float* out_row) {
  Vec acc[R][B];
  for (int r = 0; r < R; ++r)
    for (int b = 0; b < B; ++b) acc[r][b] = Vec{};
  for (int64_t i = 0; i < s.k; ++i) {
    const int64_t y = h + i - s.pad;
    if (y < 0 || y >= s.h) continue;
    for (int64_t j = 0; j < s.k; ++j) {
      const int64_t x0 = w0 + j - s.pad;
      if (Edge && (x0 < 0 || x0 >= s.w)) continue;  // Edge tiles have R == 1
      const float* in = image + (y * s.w + x0) * s.cin;
      const float* taps = packed + (i * s.k + j) * s.cin * s.cout_padded + block * kLanes;
      for (int64_t c = 0; c < s.cin; ++c) {
        Vec kernel[B];
        for (int b = 0; b < B; ++b) kernel[b] = Load(taps + c * s.cout_padded + b * kLanes);
        for (int r = 0; r < R; ++r) {
          const Vec v = Broadcast(in[r * s.cin + c]);
          for (int b = 0; b < B; ++b) acc[r][b] += v * kernel[b];
        }
      }
    }
  }
  for (int r = 0; r < R; ++r) {
    float* out = out_row + (w0 + r) * s.cout + block * kLanes;
    for (int b = 0; b < B; ++b) {
      const int64_t valid = std::min<int64_t>(kLanes, s.cout - (block + b) * kLanes);
      if (valid == kLanes) {
        Store(out + b * kLanes, acc[r][b]);
      } else {
        float lanes[kLanes];
        Store(lanes, acc[r][b]);
        std::memcpy(out + b * kLanes, lanes, valid * sizeof(float));
      }
    }
  }
}

template <int B>
void ConvPixels(const ConvShape& s, const float* image, const float* packed, int64_t h,
                int64_t w0, int64_t count, int64_t block, float* out_row) {
  for (; count >= kMaxPixels; count -= kMaxPixels, w0 += kMaxPixels)
    ConvTile<kMaxPixels, B, false>(s, image, packed, h, w0, block, out_row);
  switch (count) {
#define DXNET_PIXELS_CASE(R) \
  case R:                    \
    if constexpr (R < kMaxPixels) ConvTile<R, B, false>(s, image, packed, h, w0, block, out_row); \
    break;
    DXNET_PIXELS_CASE(1)
    DXNET_PIXELS_CASE(2)
    DXNET_PIXELS_CASE(3)
    DXNET_PIXELS_CASE(4)
    DXNET_PIXELS_CASE(5)
    DXNET_PIXELS_CASE(6)
    DXNET_PIXELS_CASE(7)
#undef DXNET_PIXELS_CASE
    default:
      break;
  }
}

template <int B>
void ConvRowBlocks(const ConvShape& s, const float* image, const float* packed, int64_t h,
                   int64_t block, float* out_row) {
  // Columns whose window crosses the left or right border go one pixel at a time.
  const int64_t first = std::min(s.pad, s.w), last = std::max(first, s.w - s.pad);
  for (int64_t x = 0; x < first; ++x) ConvTile<1, B, true>(s, image, packed, h, x, block, out_row);
  ConvPixels<B>(s, image, packed, h, first, last - first, block, out_row);
  for (int64_t x = last; x < s.w; ++x) ConvTile<1, B, true>(s, image, packed, h, x, block, out_row);
}

void ConvRow(const ConvShape& s, const float* image, const float* packed, int64_t h,
             float* out_row) {
  const int64_t blocks = s.cout_padded / kLanes;
  for (int64_t block = 0; block < blocks; block += kMaxBlocks) {
    switch (std::min<int64_t>(kMaxBlocks, blocks - block)) {
      case 1: ConvRowBlocks<1>(s, image, packed, h, block, out_row); break;
      case 2: if constexpr (kMaxBlocks >= 2) ConvRowBlocks<2>(s, image, packed, h, block, out_row); break;
      case 3: if constexpr (kMaxBlocks >= 3) ConvRowBlocks<3>(s, image, packed, h, block, out_row); break;
    }
  }
}

ffi::Error CheckShapes(ffi::Buffer<ffi::F32>& x, ffi::Buffer<ffi::F32>& kernel, ConvShape* s) {
  const auto xd = x.dimensions();
  const auto kd = kernel.dimensions();
  if (xd.size() != 4 || kd.size() != 4 || kd[0] != kd[1] || kd[0] % 2 == 0 || kd[2] != xd[3])
    return ffi::Error::InvalidArgument(
        "dxnet_jax native conv: expected x [N, H, W, Cin] and an odd square kernel "
        "[k, k, Cin, Cout]");
  *s = ConvShape{xd[0], xd[1], xd[2], xd[3], kd[3], kd[0], kd[0] / 2, RoundUp(kd[3], kLanes)};
  return ffi::Error::Success();
}

ffi::Error Conv2dImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x,
                      ffi::Buffer<ffi::F32> kernel, ffi::ResultBuffer<ffi::F32> y) {
  ConvShape s;
  if (ffi::Error error = CheckShapes(x, kernel, &s); error.failure()) return error;
  // Kernel columns padded to whole vectors with zeros, so tiles load full vectors.
  std::vector<float> packed(s.k * s.k * s.cin * s.cout_padded, 0.0f);
  const float* w = kernel.typed_data();
  for (int64_t row = 0; row < s.k * s.k * s.cin; ++row)
    std::memcpy(&packed[row * s.cout_padded], w + row * s.cout, s.cout * sizeof(float));
  const float* in = x.typed_data();
  float* out = y->typed_data();
  const int64_t rows = s.n * s.h;
  const int64_t rows_per_task = RowsPerTask(rows, pool.num_threads());
  const int64_t tasks = (rows + rows_per_task - 1) / rows_per_task;
  ParallelFor(pool, tasks, 64, [&](int64_t task, int) {
    const int64_t end = std::min(rows, (task + 1) * rows_per_task);
    for (int64_t row = task * rows_per_task; row < end; ++row) {
      const int64_t n = row / s.h, h = row % s.h;
      ConvRow(s, in + n * s.h * s.w * s.cin, packed.data(), h, out + row * s.w * s.cout);
    }
  });
  return ffi::Error::Success();
}

// Kernel gradient tile: input channels [c0, c0 + C) x output blocks [block, block + B) of tap
// (i, j), summed over the columns of one output row whose shifted input column is inside.
template <int C, int B>
void KernelGradTile(const ConvShape& s, const float* in_row, const float* grad_row, int64_t j,
                    int64_t c0, int64_t block, float* acc_tap) {
  Vec acc[C][B];
  for (int c = 0; c < C; ++c)
    for (int b = 0; b < B; ++b) acc[c][b] = Load(acc_tap + (c0 + c) * s.cout_padded + (block + b) * kLanes);
  const int64_t begin = std::max<int64_t>(0, s.pad - j), end = std::min(s.w, s.w + s.pad - j);
  for (int64_t x = begin; x < end; ++x) {
    const float* g = grad_row + x * s.cout_padded + block * kLanes;
    const float* in = in_row + (x + j - s.pad) * s.cin + c0;
    Vec grad[B];
    for (int b = 0; b < B; ++b) grad[b] = Load(g + b * kLanes);
    for (int c = 0; c < C; ++c) {
      const Vec v = Broadcast(in[c]);
      for (int b = 0; b < B; ++b) acc[c][b] += v * grad[b];
    }
  }
  for (int c = 0; c < C; ++c)
    for (int b = 0; b < B; ++b) Store(acc_tap + (c0 + c) * s.cout_padded + (block + b) * kLanes, acc[c][b]);
}

constexpr int kGradBlocks = kLanes == 16 ? 1 : 2;  // output blocks per kernel-gradient tile

template <int B>
void KernelGradRowBlocks(const ConvShape& s, const float* in_row, const float* grad_row,
                         int64_t j, int64_t block, float* acc_tap) {
  constexpr int C = std::max(1, kMaxInputs * kGradBlocks / B);
  int64_t c0 = 0;
  for (; c0 + C <= s.cin; c0 += C) KernelGradTile<C, B>(s, in_row, grad_row, j, c0, block, acc_tap);
  for (; c0 < s.cin; ++c0) KernelGradTile<1, B>(s, in_row, grad_row, j, c0, block, acc_tap);
}

ffi::Error Conv2dKernelGradImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x,
                                ffi::Buffer<ffi::F32> grad, ffi::Buffer<ffi::F32> kernel_like,
                                ffi::ResultBuffer<ffi::F32> kernel_grad) {
  ConvShape s;
  if (ffi::Error error = CheckShapes(x, kernel_like, &s); error.failure()) return error;
  const auto gd = grad.dimensions();
  if (gd.size() != 4 || gd[0] != s.n || gd[1] != s.h || gd[2] != s.w || gd[3] != s.cout)
    return ffi::Error::InvalidArgument("dxnet_jax native conv: gradient shape must be [N, H, W, Cout]");
  const int max_workers = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(pool.num_threads(), 64)));
  const int64_t tap_size = s.cin * s.cout_padded, taps = s.k * s.k * tap_size;
  const int64_t rows = s.n * s.h;
  const int64_t rows_per_task = std::max<int64_t>(1, CeilDiv(rows, kReductionTasks));
  const int64_t tasks = CeilDiv(rows, rows_per_task);
  // One partial sum per task (padded columns); one padded gradient row per worker.
  std::vector<float> partial(tasks * taps, 0.0f);
  std::vector<float> grad_rows(max_workers * s.w * s.cout_padded, 0.0f);
  const float* in = x.typed_data();
  const float* g = grad.typed_data();
  const int64_t blocks = s.cout_padded / kLanes;
  ParallelFor(pool, tasks, max_workers, [&](int64_t task, int worker) {
    float* acc = &partial[task * taps];
    float* grad_row = &grad_rows[worker * s.w * s.cout_padded];
    const int64_t end = std::min(rows, (task + 1) * rows_per_task);
    for (int64_t row = task * rows_per_task; row < end; ++row) {
      const int64_t n = row / s.h, h = row % s.h;
      for (int64_t x = 0; x < s.w; ++x)
        std::memcpy(grad_row + x * s.cout_padded, g + (row * s.w + x) * s.cout, s.cout * sizeof(float));
      for (int64_t i = 0; i < s.k; ++i) {
        const int64_t y = h + i - s.pad;
        if (y < 0 || y >= s.h) continue;
        const float* in_row = in + ((n * s.h + y) * s.w) * s.cin;
        for (int64_t j = 0; j < s.k; ++j) {
          float* acc_tap = acc + (i * s.k + j) * tap_size;
          for (int64_t block = 0; block < blocks; block += kGradBlocks) {
            if (kGradBlocks == 2 && blocks - block >= 2)
              KernelGradRowBlocks<kGradBlocks>(s, in_row, grad_row, j, block, acc_tap);
            else
              KernelGradRowBlocks<1>(s, in_row, grad_row, j, block, acc_tap);
          }
        }
      }
    }
  });
  float* out = kernel_grad->typed_data();
  for (int64_t row = 0; row < s.k * s.k * s.cin; ++row) {
    for (int64_t co = 0; co < s.cout; ++co) {
      float sum = 0.0f;
      for (int64_t task = 0; task < tasks; ++task) sum += partial[task * taps + row * s.cout_padded + co];
      out[row * s.cout + co] = sum;
    }
  }
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(DxnetConv2d, Conv2dImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(DxnetConv2dKernelGrad, Conv2dKernelGradImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>());
