// The xUnit's depthwise kxk convolution (stride 1, 'SAME', NHWC float32) and its kernel gradient,
// for XLA:CPU.
//
// Why: XLA:CPU's grouped convolution is slow, and the FFT form (ops/depthwise.py) pays for
// transforms, complex products and padding on every call although the filter has only k*k taps
// per channel. Here the channels are the vector lanes: a task copies its rows of the image, with
// a zero border, into a small scratch buffer whose pixels are whole vectors, and each register
// tile of R output pixels of a row loads every input vector once per filter row and uses it for
// all the taps it meets. The data gradient is this convolution with the filter turned by 180
// degrees (done by the caller); the kernel gradient sums input x output-gradient products per
// tap, per task, then adds the tasks' partial sums in order.
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "common.h"

namespace {

using namespace dxnet_native;  // NOLINT: Vec, Load, Store, ParallelFor, ...

#if defined(__AVX512F__)
constexpr int kTilePixels = 8;  // output pixels per register tile (with 9 filter taps held)
#else
constexpr int kTilePixels = 4;
#endif

struct DepthwiseShape {
  int64_t n, h, w, c, kh, kw, ph, pw;
  int64_t c_padded;  // channels rounded up to whole vectors
  int64_t padded_w() const { return w + 2 * pw; }
};

// A task: image n, output rows [h0, h1).
struct Rows {
  int64_t n, h0, h1;
};

Rows TaskRows(const DepthwiseShape& s, int64_t rows_per_task, int64_t task) {
  const int64_t tasks_per_image = (s.h + rows_per_task - 1) / rows_per_task;
  const int64_t n = task / tasks_per_image, h0 = (task % tasks_per_image) * rows_per_task;
  return Rows{n, h0, std::min(s.h, h0 + rows_per_task)};
}

// Input rows [h0 - ph, h1 + ph) of image n into `scratch`, [rows][W + 2pw][c_padded], zeros
// outside the image and in the padding lanes.
void CopyPadded(const DepthwiseShape& s, const float* x, const Rows& rows, float* scratch) {
  const int64_t pixel = s.c_padded, row = s.padded_w() * pixel;
  const int64_t count = rows.h1 - rows.h0 + 2 * s.ph;
  std::memset(scratch, 0, count * row * sizeof(float));
  for (int64_t r = 0; r < count; ++r) {
    const int64_t y = rows.h0 - s.ph + r;
    if (y < 0 || y >= s.h) continue;
    const float* in = x + ((rows.n * s.h + y) * s.w) * s.c;
    float* out = scratch + r * row + s.pw * pixel;
    for (int64_t x0 = 0; x0 < s.w; ++x0)
      std::memcpy(out + x0 * pixel, in + x0 * s.c, s.c * sizeof(float));
  }
}

// Filter [kh, kw, 1, C] as [kh * kw][c_padded], zero padding lanes.
std::vector<float> PackFilter(const DepthwiseShape& s, const float* kernel) {
  std::vector<float> packed(s.kh * s.kw * s.c_padded, 0.0f);
  for (int64_t t = 0; t < s.kh * s.kw; ++t)
    std::memcpy(&packed[t * s.c_padded], kernel + t * s.c, s.c * sizeof(float));
  return packed;
}

void StoreLanes(float* out, Vec v, int64_t valid) {
  if (valid == kLanes) {
    Store(out, v);
  } else {
    float lanes[kLanes];
    Store(lanes, v);
    std::memcpy(out, lanes, valid * sizeof(float));
  }
}

// Output pixels [w0, w0 + R) of one row, channel lanes [lane0, lane0 + kLanes). `in` points at
// the scratch pixel (row of the first filter tap, column w0 of the padded row).
template <int KW, int R>
void DepthwiseTile(const DepthwiseShape& s, const float* in, const float* filter, float* out,
                   int64_t valid) {
  const int64_t pixel = s.c_padded, row = s.padded_w() * pixel;
  Vec acc[R];
  for (int r = 0; r < R; ++r) acc[r] = Vec{};
  for (int64_t i = 0; i < s.kh; ++i) {
    Vec taps[KW];
    for (int j = 0; j < KW; ++j) taps[j] = Load(filter + (i * KW + j) * pixel);
    const float* line = in + i * row;
    for (int j = 0; j < KW; ++j)
      for (int r = 0; r < R; ++r) acc[r] += Load(line + (r + j) * pixel) * taps[j];
  }
  for (int r = 0; r < R; ++r) StoreLanes(out + r * s.c, acc[r], valid);
}

template <int KW>
void DepthwiseRow(const DepthwiseShape& s, const float* scratch_row, const float* packed,
                  float* out_row) {
  for (int64_t lane0 = 0; lane0 < s.c_padded; lane0 += kLanes) {
    const int64_t valid = std::min<int64_t>(kLanes, s.c - lane0);
    const float* filter = packed + lane0;
    int64_t x = 0;
    for (; x + kTilePixels <= s.w; x += kTilePixels)
      DepthwiseTile<KW, kTilePixels>(s, scratch_row + x * s.c_padded + lane0, filter,
                                     out_row + x * s.c + lane0, valid);
    for (; x < s.w; ++x)
      DepthwiseTile<KW, 1>(s, scratch_row + x * s.c_padded + lane0, filter,
                           out_row + x * s.c + lane0, valid);
  }
}

// Kernel gradient of one filter row i over a task's rows, channel lanes [lane0, +kLanes).
template <int KW>
void KernelGradRows(const DepthwiseShape& s, const float* scratch, const float* grad,
                    int64_t rows, int64_t i, int64_t lane0, float* acc_row) {
  const int64_t pixel = s.c_padded, row = s.padded_w() * pixel;
  Vec acc[KW];
  for (int j = 0; j < KW; ++j) acc[j] = Load(acc_row + j * pixel + lane0);
  for (int64_t r = 0; r < rows; ++r) {
    const float* line = scratch + (r + i) * row + lane0;
    const float* g = grad + r * s.w * pixel + lane0;
    for (int64_t x = 0; x < s.w; ++x) {
      const Vec gv = Load(g + x * pixel);
      for (int j = 0; j < KW; ++j) acc[j] += Load(line + (x + j) * pixel) * gv;
    }
  }
  for (int j = 0; j < KW; ++j) Store(acc_row + j * pixel + lane0, acc[j]);
}

ffi::Error CheckShapes(ffi::Buffer<ffi::F32>& x, ffi::Buffer<ffi::F32>& kernel,
                       DepthwiseShape* s) {
  const auto xd = x.dimensions();
  const auto kd = kernel.dimensions();
  if (xd.size() != 4 || kd.size() != 4 || kd[2] != 1 || kd[3] != xd[3] || kd[0] % 2 == 0 ||
      kd[1] % 2 == 0)
    return ffi::Error::InvalidArgument(
        "dxnet_jax native depthwise conv: expected x [N, H, W, C] and a kernel [kh, kw, 1, C] "
        "with odd kh, kw");
  if (kd[1] != 3 && kd[1] != 5 && kd[1] != 7 && kd[1] != 9 && kd[1] != 11)
    return ffi::Error::InvalidArgument(
        "dxnet_jax native depthwise conv: kernel width must be 3, 5, 7, 9 or 11");
  *s = DepthwiseShape{xd[0], xd[1], xd[2], xd[3], kd[0], kd[1], kd[0] / 2, kd[1] / 2,
                      RoundUp(xd[3], kLanes)};
  return ffi::Error::Success();
}

template <typename F>
void DispatchWidth(int64_t kw, F&& f) {
  switch (kw) {
    case 3: f(std::integral_constant<int, 3>()); break;
    case 5: f(std::integral_constant<int, 5>()); break;
    case 7: f(std::integral_constant<int, 7>()); break;
    case 9: f(std::integral_constant<int, 9>()); break;
    case 11: f(std::integral_constant<int, 11>()); break;
  }
}

int64_t ScratchSize(const DepthwiseShape& s, int64_t rows_per_task) {
  return (rows_per_task + 2 * s.ph) * s.padded_w() * s.c_padded;
}

constexpr int kMaxWorkers = 64;

ffi::Error DepthwiseImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x,
                         ffi::Buffer<ffi::F32> kernel, ffi::ResultBuffer<ffi::F32> y) {
  DepthwiseShape s;
  if (ffi::Error error = CheckShapes(x, kernel, &s); error.failure()) return error;
  const std::vector<float> packed = PackFilter(s, kernel.typed_data());
  const int64_t threads = std::max<int64_t>(1, std::min<int64_t>(pool.num_threads(), kMaxWorkers));
  const int64_t rows_per_task = std::max<int64_t>(1, std::min(s.h, RowsPerTask(s.n * s.h, threads)));
  const int64_t tasks = s.n * ((s.h + rows_per_task - 1) / rows_per_task);
  std::vector<float> scratch(threads * ScratchSize(s, rows_per_task));
  const float* in = x.typed_data();
  float* out = y->typed_data();
  ParallelFor(pool, tasks, threads, [&](int64_t task, int worker) {
    const Rows rows = TaskRows(s, rows_per_task, task);
    float* buffer = &scratch[worker * ScratchSize(s, rows_per_task)];
    CopyPadded(s, in, rows, buffer);
    DispatchWidth(s.kw, [&](auto kw) {
      for (int64_t h = rows.h0; h < rows.h1; ++h)
        DepthwiseRow<decltype(kw)::value>(
            s, buffer + (h - rows.h0) * s.padded_w() * s.c_padded, packed.data(),
            out + ((rows.n * s.h + h) * s.w) * s.c);
    });
  });
  return ffi::Error::Success();
}

ffi::Error DepthwiseKernelGradImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x,
                                   ffi::Buffer<ffi::F32> grad, ffi::Buffer<ffi::F32> kernel_like,
                                   ffi::ResultBuffer<ffi::F32> kernel_grad) {
  DepthwiseShape s;
  if (ffi::Error error = CheckShapes(x, kernel_like, &s); error.failure()) return error;
  const auto gd = grad.dimensions();
  if (gd.size() != 4 || gd[0] != s.n || gd[1] != s.h || gd[2] != s.w || gd[3] != s.c)
    return ffi::Error::InvalidArgument(
        "dxnet_jax native depthwise conv: gradient shape must equal the input's");
  const int64_t threads = std::max<int64_t>(1, std::min<int64_t>(pool.num_threads(), kMaxWorkers));
  // Tasks independent of the thread count (see kReductionTasks): whole images, or slices of one.
  const int64_t rows_per_task =
      std::max<int64_t>(1, std::min(s.h, CeilDiv(s.n * s.h, kReductionTasks)));
  const int64_t tasks = s.n * CeilDiv(s.h, rows_per_task);
  const int64_t taps = s.kh * s.kw * s.c_padded;
  const int64_t grad_size = rows_per_task * s.w * s.c_padded;
  std::vector<float> scratch(threads * ScratchSize(s, rows_per_task));
  std::vector<float> grad_rows(threads * grad_size);
  std::vector<float> partial(tasks * taps, 0.0f);
  const float* in = x.typed_data();
  const float* g = grad.typed_data();
  ParallelFor(pool, tasks, threads, [&](int64_t task, int worker) {
    const Rows rows = TaskRows(s, rows_per_task, task);
    float* buffer = &scratch[worker * ScratchSize(s, rows_per_task)];
    float* grad_buffer = &grad_rows[worker * grad_size];
    CopyPadded(s, in, rows, buffer);
    const int64_t count = rows.h1 - rows.h0;
    std::memset(grad_buffer, 0, count * s.w * s.c_padded * sizeof(float));
    for (int64_t p = 0; p < count * s.w; ++p)
      std::memcpy(grad_buffer + p * s.c_padded, g + ((rows.n * s.h + rows.h0) * s.w + p) * s.c,
                  s.c * sizeof(float));
    float* acc = &partial[task * taps];
    DispatchWidth(s.kw, [&](auto kw) {
      constexpr int KW = decltype(kw)::value;
      for (int64_t i = 0; i < s.kh; ++i)
        for (int64_t lane0 = 0; lane0 < s.c_padded; lane0 += kLanes)
          KernelGradRows<KW>(s, buffer, grad_buffer, count, i, lane0, acc + i * KW * s.c_padded);
    });
  });
  float* out = kernel_grad->typed_data();
  for (int64_t t = 0; t < s.kh * s.kw; ++t) {
    for (int64_t c = 0; c < s.c; ++c) {
      float sum = 0.0f;
      for (int64_t task = 0; task < tasks; ++task) sum += partial[task * taps + t * s.c_padded + c];
      out[t * s.c + c] = sum;
    }
  }
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(DxnetDepthwiseConv2d, DepthwiseImpl,
                              dxnet_native::ConvolutionBinding());
XLA_FFI_DEFINE_HANDLER_SYMBOL(DxnetDepthwiseConv2dKernelGrad, DepthwiseKernelGradImpl,
                              dxnet_native::KernelGradBinding());
