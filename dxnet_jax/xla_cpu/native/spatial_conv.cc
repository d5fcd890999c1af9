// Stride-1 'SAME' kxk convolution of NHWC float32 images, and its kernel gradient, for XLA:CPU.
//
// Why: XLA:CPU has no fast kernel for the dense layers' narrow 3x3 convolution (48 -> 12
// channels); written as one product and k*k shifted sums (ops/spatial.py) it still took twice
// oneDNN's time. Here each output tile of R pixels x B vector blocks of channels is accumulated
// in registers over the k*k taps and the input channels, reading a task's rows of the input
// once copied with a zero border: no im2col copy, no product array, no border checks. The data
// gradient is this same convolution with the kernel flipped and transposed (done by the caller). The kernel gradient sums outer products of input
// pixels (vectors of input channels) and output-gradient values, per task, then adds the
// tasks' partial sums in order.
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
constexpr int kMaxPixels = 8;  // output pixels per register tile
constexpr int kMaxBlocks = 3;  // vector blocks of output channels per register tile
#elif defined(__AVX__)
constexpr int kMaxPixels = 6;
constexpr int kMaxBlocks = 2;
#else
constexpr int kMaxPixels = 4;
constexpr int kMaxBlocks = 2;
#endif

struct ConvShape {
  int64_t n, h, w, cin, cout, k, pad;
  int64_t cout_padded;  // output channels rounded up to whole vectors (zero kernel columns)
  int64_t padded_w() const { return w + 2 * pad; }
};

// One register tile of the convolution: output pixels [w0, w0 + R) of one row, channel blocks
// [block, block + B). `rows` is the zero-bordered input (see CopyPadded) at the row of the
// first tap, so no tap needs a border check.
template <int R, int B>
void ConvTile(const ConvShape& s, const float* rows, const float* packed, int64_t w0,
              int64_t block, float* out_row) {
  Vec acc[R][B];
  for (int r = 0; r < R; ++r)
    for (int b = 0; b < B; ++b) acc[r][b] = Vec{};
  for (int64_t i = 0; i < s.k; ++i) {
    for (int64_t j = 0; j < s.k; ++j) {
      const float* in = rows + (i * s.padded_w() + w0 + j) * s.cin;
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
void ConvRowBlocks(const ConvShape& s, const float* rows, const float* packed, int64_t block,
                   float* out_row) {
  int64_t w0 = 0;
  for (; w0 + kMaxPixels <= s.w; w0 += kMaxPixels)
    ConvTile<kMaxPixels, B>(s, rows, packed, w0, block, out_row);
  switch (s.w - w0) {
#define DXNET_PIXELS_CASE(R) \
  case R:                    \
    if constexpr (R < kMaxPixels) ConvTile<R, B>(s, rows, packed, w0, block, out_row); \
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

void ConvRow(const ConvShape& s, const float* rows, const float* packed, float* out_row) {
  const int64_t blocks = s.cout_padded / kLanes;
  for (int64_t block = 0; block < blocks; block += kMaxBlocks) {
    switch (std::min<int64_t>(kMaxBlocks, blocks - block)) {
      case 1: ConvRowBlocks<1>(s, rows, packed, block, out_row); break;
      case 2: if constexpr (kMaxBlocks >= 2) ConvRowBlocks<2>(s, rows, packed, block, out_row); break;
      case 3: if constexpr (kMaxBlocks >= 3) ConvRowBlocks<3>(s, rows, packed, block, out_row); break;
    }
  }
}

// Input rows [h0 - pad, h1 + pad) of image n into `scratch`, [rows][W + 2 pad][Cin], zeros
// outside the image: the tiles then read every tap without a border check.
void CopyPadded(const ConvShape& s, const float* x, int64_t n, int64_t h0, int64_t h1,
                float* scratch) {
  const int64_t row = s.padded_w() * s.cin, count = h1 - h0 + 2 * s.pad;
  for (int64_t r = 0; r < count; ++r) {
    float* out = scratch + r * row;
    const int64_t y = h0 - s.pad + r;
    if (y < 0 || y >= s.h) {
      std::memset(out, 0, row * sizeof(float));
      continue;
    }
    std::memset(out, 0, s.pad * s.cin * sizeof(float));
    std::memcpy(out + s.pad * s.cin, x + ((n * s.h + y) * s.w) * s.cin, s.w * s.cin * sizeof(float));
    std::memset(out + (s.pad + s.w) * s.cin, 0, s.pad * s.cin * sizeof(float));
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
  // Tasks: slices of rows of one image, each copied once with its zero border into scratch.
  const int64_t threads = std::max<int64_t>(1, std::min<int64_t>(pool.num_threads(), 64));
  const int64_t rows_per_task =
      std::max<int64_t>(1, std::min(s.h, RowsPerTask(s.n * s.h, threads)));
  const int64_t slices = CeilDiv(s.h, rows_per_task);
  const int64_t scratch_size = (rows_per_task + 2 * s.pad) * s.padded_w() * s.cin;
  std::vector<float> scratch(threads * scratch_size);
  ParallelFor(pool, s.n * slices, threads, [&](int64_t task, int worker) {
    const int64_t n = task / slices, h0 = (task % slices) * rows_per_task;
    const int64_t h1 = std::min(s.h, h0 + rows_per_task);
    float* rows = &scratch[worker * scratch_size];
    CopyPadded(s, in, n, h0, h1, rows);
    for (int64_t h = h0; h < h1; ++h)
      ConvRow(s, rows + (h - h0) * s.padded_w() * s.cin, packed.data(),
              out + ((n * s.h + h) * s.w) * s.cout);
  });
  return ffi::Error::Success();
}

// Kernel gradient tile, vectorised over input channels: CO output channels x CB vector blocks
// of input channels [block * kLanes, ...) of tap (i, j), summed over a task's rows. `rows` is
// the task's zero-bordered input with channels padded to whole vectors (CopyPadded), so every
// pixel of every row counts and no load crosses a pixel; `acc` is [CO][cin_padded] of this tap.
template <int CO, int CB>
void KernelGradTile(const ConvShape& s, const float* rows, int64_t count, const float* grad,
                    int64_t i, int64_t j, int64_t co0, int64_t block, float* acc_tap) {
  const int64_t cin_padded = RoundUp(s.cin, kLanes), row = s.padded_w() * cin_padded;
  Vec acc[CO][CB];
  for (int o = 0; o < CO; ++o)
    for (int b = 0; b < CB; ++b) acc[o][b] = Load(acc_tap + (co0 + o) * cin_padded + (block + b) * kLanes);
  for (int64_t r = 0; r < count; ++r) {
    const float* in = rows + (r + i) * row + j * cin_padded + block * kLanes;
    const float* g = grad + r * s.w * s.cout + co0;
    for (int64_t x = 0; x < s.w; ++x) {
      Vec v[CB];
      for (int b = 0; b < CB; ++b) v[b] = Load(in + x * cin_padded + b * kLanes);
      for (int o = 0; o < CO; ++o) {
        const Vec go = Broadcast(g[x * s.cout + o]);
        for (int b = 0; b < CB; ++b) acc[o][b] += v[b] * go;
      }
    }
  }
  for (int o = 0; o < CO; ++o)
    for (int b = 0; b < CB; ++b) Store(acc_tap + (co0 + o) * cin_padded + (block + b) * kLanes, acc[o][b]);
}

#if defined(__AVX512F__)
constexpr int kGradOutputs = 6, kGradBlocks = 3;  // 18 accumulators of 32 registers
#else
constexpr int kGradOutputs = 6, kGradBlocks = 2;  // 12 of 16
#endif

template <int CB>
void KernelGradTap(const ConvShape& s, const float* rows, int64_t count, const float* grad,
                   int64_t i, int64_t j, int64_t block, float* acc_tap) {
  int64_t co0 = 0;
  for (; co0 + kGradOutputs <= s.cout; co0 += kGradOutputs)
    KernelGradTile<kGradOutputs, CB>(s, rows, count, grad, i, j, co0, block, acc_tap);
  for (; co0 < s.cout; ++co0) KernelGradTile<1, CB>(s, rows, count, grad, i, j, co0, block, acc_tap);
}

// KernelGradTap for `group` (1 to kGradBlocks) vector blocks of input channels from `block`.
void KernelGradBlocks(const ConvShape& s, const float* rows, int64_t count, const float* grad,
                      int64_t i, int64_t j, int64_t block, int64_t group, float* acc_tap) {
  switch (group) {
    case 1:
      KernelGradTap<1>(s, rows, count, grad, i, j, block, acc_tap);
      break;
    case 2:
      if constexpr (kGradBlocks >= 2) KernelGradTap<2>(s, rows, count, grad, i, j, block, acc_tap);
      break;
    case 3:
      if constexpr (kGradBlocks >= 3) KernelGradTap<3>(s, rows, count, grad, i, j, block, acc_tap);
      break;
  }
}

// Input rows [h0 - pad, h1 + pad) of image n, zero-bordered, channels padded to whole vectors.
void CopyPaddedChannels(const ConvShape& s, const float* x, int64_t n, int64_t h0, int64_t h1,
                        float* scratch) {
  const int64_t cin_padded = RoundUp(s.cin, kLanes), row = s.padded_w() * cin_padded;
  const int64_t count = h1 - h0 + 2 * s.pad;
  std::memset(scratch, 0, count * row * sizeof(float));
  for (int64_t r = 0; r < count; ++r) {
    const int64_t y = h0 - s.pad + r;
    if (y < 0 || y >= s.h) continue;
    const float* in = x + ((n * s.h + y) * s.w) * s.cin;
    float* out = scratch + r * row + s.pad * cin_padded;
    for (int64_t p = 0; p < s.w; ++p)
      std::memcpy(out + p * cin_padded, in + p * s.cin, s.cin * sizeof(float));
  }
}

ffi::Error Conv2dKernelGradImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x,
                                ffi::Buffer<ffi::F32> grad, ffi::Buffer<ffi::F32> kernel_like,
                                ffi::ResultBuffer<ffi::F32> kernel_grad) {
  ConvShape s;
  if (ffi::Error error = CheckShapes(x, kernel_like, &s); error.failure()) return error;
  const auto gd = grad.dimensions();
  if (gd.size() != 4 || gd[0] != s.n || gd[1] != s.h || gd[2] != s.w || gd[3] != s.cout)
    return ffi::Error::InvalidArgument("dxnet_jax native conv: gradient shape must be [N, H, W, Cout]");
  const int64_t threads = std::max<int64_t>(1, std::min<int64_t>(pool.num_threads(), 64));
  const int64_t cin_padded = RoundUp(s.cin, kLanes);
  const int64_t tap_size = s.cout * cin_padded, taps = s.k * s.k * tap_size;
  // Units of work: slices of rows of one image. Tasks: runs of consecutive units, at most
  // kReductionTasks and at least kMinTaskPixels output pixels each, independent of the thread
  // count (see kReductionTasks).
  const int64_t rows_per_unit =
      std::max<int64_t>(1, std::min(s.h, CeilDiv(s.n * s.h, kReductionTasks)));
  const int64_t slices = CeilDiv(s.h, rows_per_unit), units = s.n * slices;
  const int64_t units_per_task = std::max(CeilDiv(units, kReductionTasks),
                                          CeilDiv(kMinTaskPixels, rows_per_unit * s.w));
  const int64_t tasks = CeilDiv(units, units_per_task);
  const int64_t scratch_size = (rows_per_unit + 2 * s.pad) * s.padded_w() * cin_padded;
  std::vector<float> partial(tasks * taps, 0.0f);  // [task][tap][Cout][cin_padded]
  std::vector<float> scratch(threads * scratch_size);
  const float* in = x.typed_data();
  const float* g = grad.typed_data();
  const int64_t blocks = cin_padded / kLanes;
  ParallelFor(pool, tasks, threads, [&](int64_t task, int worker) {
    float* rows = &scratch[worker * scratch_size];
    const int64_t last = std::min(units, (task + 1) * units_per_task);
    for (int64_t unit = task * units_per_task; unit < last; ++unit) {
      const int64_t n = unit / slices, h0 = (unit % slices) * rows_per_unit;
      const int64_t h1 = std::min(s.h, h0 + rows_per_unit);
      CopyPaddedChannels(s, in, n, h0, h1, rows);
      const float* grad_rows = g + ((n * s.h + h0) * s.w) * s.cout;
      for (int64_t i = 0; i < s.k; ++i) {
        for (int64_t j = 0; j < s.k; ++j) {
          float* acc_tap = &partial[task * taps + (i * s.k + j) * tap_size];
          for (int64_t block = 0; block < blocks; block += kGradBlocks)
            KernelGradBlocks(s, rows, h1 - h0, grad_rows, i, j, block,
                             std::min<int64_t>(kGradBlocks, blocks - block), acc_tap);
        }
      }
    }
  });
  // Partial sums added in task order, element by element, then [tap][Cout][Cin] -> [tap][Cin][Cout].
  float* total = partial.data();
  for (int64_t task = 1; task < tasks; ++task) {
    const float* part = &partial[task * taps];
    for (int64_t e = 0; e < taps; ++e) total[e] += part[e];
  }
  float* out = kernel_grad->typed_data();
  for (int64_t t = 0; t < s.k * s.k; ++t)
    for (int64_t co = 0; co < s.cout; ++co)
      for (int64_t ci = 0; ci < s.cin; ++ci)
        out[(t * s.cin + ci) * s.cout + co] = total[t * tap_size + co * cin_padded + ci];
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(DxnetConv2d, Conv2dImpl, dxnet_native::ConvolutionBinding());
XLA_FFI_DEFINE_HANDLER_SYMBOL(DxnetConv2dKernelGrad, Conv2dKernelGradImpl,
                              dxnet_native::KernelGradBinding());
