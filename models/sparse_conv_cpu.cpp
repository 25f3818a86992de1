// Two passes of SparseConv2d on the CPU, each one loop where eager PyTorch runs several
// operations (see sparse_conv_cpu.py and docs/decisions.md).
//
// The mask side: whether every pixel is observed, then for every image the number of observed
// pixels in each convolution window (vertical sums over the kernel's rows, then horizontal sums
// over its columns), the new mask min(n, 1), the scale min(n, 1) / max(n, 1) * area and, where
// some pixel is not observed, the masked input x * m, while that image's mask is in cache. The
// same float operations per element as the eager path (window_count, then _mask_and_scale, and
// x * m): the counts are sums of 0/1 values, exact in any order, so both give the same bits.
//
// The backward rescale: grad_y * scale and the bias gradient in one read of grad_y.
//
// And the layer's autograd function, conv(x * m, W) * scale + b with its hand-written backward:
// _SparseConvFunction of sparse_conv.py, the same PyTorch operations in the same order (so the
// same bits), as a C++ autograd function, so that neither pass runs Python per layer call.
#include <torch/extension.h>

#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>
#include <optional>
#include <tuple>
#include <vector>

namespace {

// The helpers below are inlined into vectorized_image, which is compiled once per instruction
// set (AVX-512, AVX2, baseline x86-64) and picked at load time for the CPU it runs on: a
// portable build (no -march=native, the build cache may be shared by different machines)
// that still uses the CPU's full vector width, which halves this pass's time.
#define INLINE [[gnu::always_inline]] inline

struct Geometry {
  int64_t h, w, h_out, w_out, kh, kw, sh, sw, ph, pw, dh, dw;
};

// Whether every pixel of the batch is observed; stops at the first block with one that is not
// (at once for a sparse mask), and tests each block without branches, so that it vectorizes.
template <typename T>
INLINE bool all_observed(const T* __restrict__ m, int64_t size) {
  constexpr int64_t block = 256;
  for (int64_t begin = 0; begin < size; begin += block) {
    const int64_t end = std::min(size, begin + block);
    bool observed = true;
    for (int64_t i = begin; i < end; ++i) observed &= (m[i] == T(1));
    if (!observed) return false;
  }
  return true;
}

// Whether counts_flat applies: stride and dilation 1 and an output as wide as the input ('same'
// padding), every layer of the networks.
INLINE bool flat_geometry(const Geometry& g) {
  return g.sh == 1 && g.sw == 1 && g.dh == 1 && g.dw == 1 && g.w_out == g.w;
}

// Window counts of one image as whole-image shifted adds: a row of 28 pixels is too short for
// per-row loops, whose overhead would cost more than their arithmetic. vertical is an
// (h_out, w) buffer.
template <typename T>
INLINE void counts_flat(const T* __restrict__ m, const Geometry& g, T* __restrict__ vertical,
                        T* __restrict__ counts) {
  // vertical[r, c] = sum over the kernel rows i of m[r - ph + i, c]: for each tap, the output
  // rows whose source row lies inside the image form one contiguous block.
  const int64_t size = g.h_out * g.w;
  std::fill(vertical, vertical + size, T(0));
  for (int64_t i = 0; i < g.kh; ++i) {
    const int64_t first = std::max<int64_t>(0, g.ph - i);
    const int64_t last = std::min<int64_t>(g.h_out, g.h + g.ph - i);
    if (first >= last) continue;
    const T* __restrict__ src = m + (first - g.ph + i) * g.w;
    T* __restrict__ dst = vertical + first * g.w;
    for (int64_t k = 0; k < (last - first) * g.w; ++k) dst[k] += src[k];
  }
  // counts[r, o] = sum over the kernel columns j of vertical[r, o - pw + j], added over the
  // whole image at once; where o - pw + j leaves the row, that add took a pixel of the next or
  // previous row, so the pw columns at either edge are recomputed below.
  std::fill(counts, counts + size, T(0));
  for (int64_t j = 0; j < g.kw; ++j) {
    const int64_t shift = j - g.pw;
    const int64_t first = std::max<int64_t>(0, -shift);
    const int64_t last = std::min<int64_t>(size, size - shift);
    const T* __restrict__ src = vertical + first + shift;
    T* __restrict__ dst = counts + first;
    for (int64_t k = 0; k < last - first; ++k) dst[k] += src[k];
  }
  const int64_t left_end = std::min(g.pw, g.w);  // columns [0, pw) and [w - pw, w)
  const int64_t right_begin = std::max(left_end, g.w - g.pw);
  auto recount = [&](int64_t r, int64_t o) {
    T n = T(0);
    for (int64_t j = 0; j < g.kw; ++j) {
      const int64_t c = o - g.pw + j;
      if (c >= 0 && c < g.w) n += vertical[r * g.w + c];
    }
    counts[r * g.w + o] = n;
  };
  for (int64_t r = 0; r < g.h_out; ++r) {
    for (int64_t o = 0; o < left_end; ++o) recount(r, o);
    for (int64_t o = right_begin; o < g.w; ++o) recount(r, o);
  }
}

// Window counts of one image for any stride, dilation and padding, row by row. row is a
// (w + 2 * pw) buffer whose pw entries on either side stay zero (the padding).
template <typename T>
INLINE void counts_rowwise(const T* __restrict__ m, const Geometry& g, T* __restrict__ row,
                           T* __restrict__ counts) {
  T* __restrict__ inner = row + g.pw;
  for (int64_t r = 0; r < g.h_out; ++r) {
    std::fill(inner, inner + g.w, T(0));
    for (int64_t i = 0; i < g.kh; ++i) {
      const int64_t src_row = r * g.sh - g.ph + i * g.dh;
      if (src_row < 0 || src_row >= g.h) continue;  // a padded row: adds nothing
      const T* __restrict__ src = m + src_row * g.w;
      for (int64_t c = 0; c < g.w; ++c) inner[c] += src[c];
    }
    T* __restrict__ out = counts + r * g.w_out;
    for (int64_t o = 0; o < g.w_out; ++o) out[o] = row[o * g.sw];
    for (int64_t j = 1; j < g.kw; ++j) {
      const T* __restrict__ tap = row + j * g.dw;
      for (int64_t o = 0; o < g.w_out; ++o) out[o] += tap[o * g.sw];
    }
  }
}

// The new mask min(n, 1) and, in place of the counts, the scale min(n, 1) / max(n, 1) * area.
template <typename T>
INLINE void mask_and_scale(int64_t size, T area, T* __restrict__ new_mask,
                           T* __restrict__ scale) {
  for (int64_t k = 0; k < size; ++k) {
    const T n = scale[k];
    const T observed = std::min(n, T(1));
    new_mask[k] = observed;
    scale[k] = observed / std::max(n, T(1)) * area;
  }
}

// One image: counts, new mask and scale. buffer holds h_out * w (flat geometry) or
// w + 2 * pw (row by row) values.
template <typename T>
INLINE void mask_side_image(const T* __restrict__ image, const Geometry& g, T area,
                            T* __restrict__ new_mask, T* __restrict__ scale,
                            T* __restrict__ buffer) {
  if (flat_geometry(g)) {
    counts_flat<T>(image, g, buffer, scale);  // the counts, then the scale in place
  } else {
    counts_rowwise<T>(image, g, buffer, scale);
  }
  mask_and_scale<T>(g.h_out * g.w_out, area, new_mask, scale);
}

// One image's x * m, m shared by the channels: in channels_last (the CPU's layout) each
// position's channels are contiguous, in the contiguous layout each channel's plane is.
template <typename T>
INLINE void mask_input_image(const T* __restrict__ x, const T* __restrict__ m,
                             T* __restrict__ xm, int64_t channels, int64_t plane,
                             bool channels_last) {
  if (channels_last) {
    for (int64_t p = 0; p < plane; ++p) {
      const T observed = m[p];
      for (int64_t c = 0; c < channels; ++c) xm[p * channels + c] = x[p * channels + c] * observed;
    }
  } else {
    for (int64_t c = 0; c < channels; ++c) {
      for (int64_t p = 0; p < plane; ++p) xm[c * plane + p] = x[c * plane + p] * m[p];
    }
  }
}

#if defined(__x86_64__) && defined(__GNUC__)
#define VECTOR_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define VECTOR_CLONES
#endif

VECTOR_CLONES bool vectorized_observed(const float* m, int64_t size) {
  return all_observed<float>(m, size);
}

VECTOR_CLONES bool vectorized_observed(const double* m, int64_t size) {
  return all_observed<double>(m, size);
}

VECTOR_CLONES void vectorized_image(const float* image, const Geometry& g, float area,
                                    float* new_mask, float* scale, float* buffer) {
  mask_side_image<float>(image, g, area, new_mask, scale, buffer);
}

VECTOR_CLONES void vectorized_image(const double* image, const Geometry& g, double area,
                                    double* new_mask, double* scale, double* buffer) {
  mask_side_image<double>(image, g, area, new_mask, scale, buffer);
}

VECTOR_CLONES void vectorized_input(const float* x, const float* m, float* xm, int64_t channels,
                                    int64_t plane, bool channels_last) {
  mask_input_image<float>(x, m, xm, channels, plane, channels_last);
}

VECTOR_CLONES void vectorized_input(const double* x, const double* m, double* xm,
                                    int64_t channels, int64_t plane, bool channels_last) {
  mask_input_image<double>(x, m, xm, channels, plane, channels_last);
}

// The mask side of every image and, where xm is defined, each image's x * m right after its
// mask side, while its mask is in cache.
template <typename T>
void mask_side_batch(const torch::Tensor& m, const Geometry& g, double area,
                     torch::Tensor& new_mask, torch::Tensor& scale, const torch::Tensor& x,
                     torch::Tensor& xm) {
  const int64_t images = m.size(0);
  const T* src = m.data_ptr<T>();
  T* out_mask = new_mask.data_ptr<T>();
  T* out_scale = scale.data_ptr<T>();
  const int64_t in_size = g.h * g.w, out_size = g.h_out * g.w_out;
  const bool masking = xm.defined();
  const int64_t channels = masking ? x.size(1) : 0;
  // Same strides as x (empty_like), contiguous or channels_last: flat offsets correspond.
  const bool channels_last = masking && !x.is_contiguous();
  const T* input = masking ? x.data_ptr<T>() : nullptr;
  T* masked = masking ? xm.data_ptr<T>() : nullptr;
  // Whole images per task, at least ~16k outputs each: a 28x28 batch of 64 is a few tasks.
  const int64_t grain = std::max<int64_t>(1, 16384 / std::max<int64_t>(1, out_size));
  at::parallel_for(0, images, grain, [&](int64_t begin, int64_t end) {
    std::vector<T> buffer(flat_geometry(g) ? g.h_out * g.w : g.w + 2 * g.pw, T(0));
    for (int64_t b = begin; b < end; ++b) {
      vectorized_image(src + b * in_size, g, static_cast<T>(area), out_mask + b * out_size,
                       out_scale + b * out_size, buffer.data());
      if (masking) {
        const int64_t offset = b * in_size * channels;
        vectorized_input(input + offset, src + b * in_size, masked + offset, channels, in_size,
                         channels_last);
      }
    }
  });
}

// (new_mask, scale, full, x * m): x * m only where x is given and some pixel is not observed
// (an undefined tensor, None in Python, otherwise).
std::tuple<torch::Tensor, torch::Tensor, bool, torch::Tensor> mask_side(
    const torch::Tensor& m, const std::optional<torch::Tensor>& x, int64_t kh, int64_t kw,
    int64_t sh, int64_t sw, int64_t ph, int64_t pw, int64_t dh, int64_t dw, int64_t h_out,
    int64_t w_out, double area) {
  TORCH_CHECK(m.device().is_cpu() && m.dim() == 4 && m.size(1) == 1 && m.is_contiguous(),
              "mask_side: m must be a contiguous (N, 1, H, W) CPU tensor");
  if (x.has_value()) {
    TORCH_CHECK(x->device().is_cpu() && x->dim() == 4 && x->size(0) == m.size(0) &&
                    x->size(2) == m.size(2) && x->size(3) == m.size(3) &&
                    x->scalar_type() == m.scalar_type() &&
                    (x->is_contiguous() || x->is_contiguous(at::MemoryFormat::ChannelsLast)),
                "mask_side: x must be a contiguous or channels_last (N, C, H, W) CPU tensor "
                "of m's dtype and size");
  }
  const Geometry g{m.size(2), m.size(3), h_out, w_out, kh, kw, sh, sw, ph, pw, dh, dw};
  auto new_mask = torch::empty({m.size(0), 1, h_out, w_out}, m.options());
  auto scale = torch::empty({m.size(0), 1, h_out, w_out}, m.options());
  bool full = false;
  torch::Tensor xm;
  AT_DISPATCH_FLOATING_TYPES(m.scalar_type(), "mask_side", [&] {
    full = m.numel() > 0 && vectorized_observed(m.data_ptr<scalar_t>(), m.numel());
    if (x.has_value() && !full) xm = torch::empty_like(*x);
    mask_side_batch<scalar_t>(m, g, area, new_mask, scale, x.has_value() ? *x : torch::Tensor(),
                              xm);
  });
  return {new_mask, scale, full, xm};
}

// ---- Backward: grad_raw = grad_y * scale and the bias gradient sum(grad_y), in one read ----
//
// For channels_last grad_y, the CPU's layout: an (N*H*W, C) matrix. The bias gradient sums its
// rows in double (PyTorch's reduction sums float32 in float32: the two differ by float32
// rounding, this one the closer to the exact sum). Blocks of rows have their own sums, added
// in block order, so the result does not depend on the thread count.

// Positions (rows) [begin, end), one scale per position; the sums accumulate in double.
template <typename T>
INLINE void rescale_positions(const T* __restrict__ grad, const T* __restrict__ scale,
                              T* __restrict__ out, int64_t begin, int64_t end, int64_t channels,
                              double* __restrict__ sums) {
  for (int64_t p = begin; p < end; ++p) {
    const T s = scale[p];
    const T* __restrict__ row = grad + p * channels;
    T* __restrict__ dst = out + p * channels;
    for (int64_t c = 0; c < channels; ++c) {
      dst[c] = row[c] * s;
      sums[c] += static_cast<double>(row[c]);
    }
  }
}

VECTOR_CLONES void vectorized_positions(const float* grad, const float* scale, float* out,
                                        int64_t begin, int64_t end, int64_t channels,
                                        double* sums) {
  rescale_positions<float>(grad, scale, out, begin, end, channels, sums);
}

VECTOR_CLONES void vectorized_positions(const double* grad, const double* scale, double* out,
                                        int64_t begin, int64_t end, int64_t channels,
                                        double* sums) {
  rescale_positions<double>(grad, scale, out, begin, end, channels, sums);
}

template <typename T>
void rescale_and_sum_typed(const torch::Tensor& grad, const torch::Tensor& scale,
                           torch::Tensor& out, std::vector<double>& sums) {
  const int64_t images = grad.size(0), channels = grad.size(1);
  const int64_t plane = grad.size(2) * grad.size(3);
  const T* src = grad.data_ptr<T>();
  const T* factor = scale.data_ptr<T>();
  T* dst = out.data_ptr<T>();
  // Fixed blocks of positions, each with its own sums, added in block order.
  const int64_t positions = images * plane, block = 4096;
  const int64_t blocks = (positions + block - 1) / block;
  std::vector<double> block_sums(blocks * channels, 0.0);
  at::parallel_for(0, blocks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) {
      vectorized_positions(src, factor, dst, b * block, std::min(positions, (b + 1) * block),
                           channels, block_sums.data() + b * channels);
    }
  });
  for (int64_t b = 0; b < blocks; ++b) {
    for (int64_t c = 0; c < channels; ++c) sums[c] += block_sums[b * channels + c];
  }
}

std::tuple<torch::Tensor, torch::Tensor> rescale_and_sum(const torch::Tensor& grad,
                                                         const torch::Tensor& scale) {
  TORCH_CHECK(grad.device().is_cpu() && grad.dim() == 4 &&
                  grad.is_contiguous(at::MemoryFormat::ChannelsLast),
              "rescale_and_sum: grad must be a channels_last (N, C, H, W) CPU tensor");
  TORCH_CHECK(scale.is_contiguous() && scale.scalar_type() == grad.scalar_type() &&
                  scale.size(0) == grad.size(0) && scale.size(1) == 1 &&
                  scale.size(2) == grad.size(2) && scale.size(3) == grad.size(3),
              "rescale_and_sum: scale must be a contiguous (N, 1, H, W) tensor of grad's dtype");
  auto out = torch::empty_like(grad);  // keeps grad's memory format
  auto bias = torch::empty({grad.size(1)}, grad.options());
  std::vector<double> sums(grad.size(1), 0.0);
  AT_DISPATCH_FLOATING_TYPES(grad.scalar_type(), "rescale_and_sum", [&] {
    rescale_and_sum_typed<scalar_t>(grad, scale, out, sums);
    for (int64_t c = 0; c < grad.size(1); ++c) {
      bias.data_ptr<scalar_t>()[c] = static_cast<scalar_t>(sums[c]);
    }
  });
  return {out, bias};
}

// ---- The autograd function: _SparseConvFunction (sparse_conv.py) in C++ ----

// _sum_over_positions (sparse_conv.py): a channels_last gradient's rows summed by one
// matrix-vector product, which reads it once; anything else by the plain reduction.
torch::Tensor sum_over_positions(const torch::Tensor& t) {
  const int64_t n = t.size(0), c = t.size(1), h = t.size(2), w = t.size(3);
  if (c > 1 && (t.scalar_type() == at::kFloat || t.scalar_type() == at::kDouble) &&
      !t.is_contiguous() && t.is_contiguous(at::MemoryFormat::ChannelsLast)) {
    auto rows = t.permute({0, 2, 3, 1}).reshape({n * h * w, c});  // a view: (N*H*W, C)
    return at::mv(rows.t(), at::ones({n * h * w}, t.options()));
  }
  return t.sum({0, 2, 3});
}

// _rescale (sparse_conv.py): grad_y * scale and, with need_b, the bias gradient; one native
// pass where rescale_and_sum applies.
std::tuple<torch::Tensor, torch::Tensor> rescale(const torch::Tensor& grad_y,
                                                 const torch::Tensor& scale, bool need_b) {
  if (need_b && scale.scalar_type() == grad_y.scalar_type() &&
      grad_y.is_contiguous(at::MemoryFormat::ChannelsLast)) {
    const auto full_scale =
        scale.size(0) == grad_y.size(0) ? scale : scale.expand({grad_y.size(0), -1, -1, -1});
    return rescale_and_sum(grad_y, full_scale.contiguous());
  }
  torch::Tensor grad_b = need_b ? sum_over_positions(grad_y) : torch::Tensor();
  return {grad_y * scale, grad_b};
}

// Arguments in this order so that the tensors that need gradients are the graph's first edges:
// x, weight, bias (where given). m is undefined where every pixel is observed, scale where the
// layer is a plain convolution, xm where the forward computes x * m itself.
class SparseConvFunction : public torch::autograd::Function<SparseConvFunction> {
 public:
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x,
                               const torch::Tensor& weight,
                               const std::optional<torch::Tensor>& bias,
                               const std::optional<torch::Tensor>& m,
                               const std::optional<torch::Tensor>& scale,
                               const std::optional<torch::Tensor>& xm_given,
                               const std::vector<int64_t>& stride,
                               const std::vector<int64_t>& padding,
                               const std::vector<int64_t>& dilation, bool premasked) {
    const torch::Tensor xm = xm_given.has_value()         ? *xm_given
                             : premasked || !m.has_value() ? x
                                                           : x * *m;
    torch::Tensor y;
    if (!scale.has_value()) {  // n == area everywhere: a plain convolution
      y = at::conv2d(xm, weight, bias, stride, padding, dilation);
    } else {
      y = at::conv2d(xm, weight, std::nullopt, stride, padding, dilation);
      if (bias.has_value()) {
        at::addcmul_out(y, bias->view({1, -1, 1, 1}), y, *scale);
      } else {
        y.mul_(*scale);
      }
    }
    ctx->save_for_backward({xm, m.value_or(torch::Tensor()), scale.value_or(torch::Tensor()),
                            weight});
    ctx->saved_data["stride"] = stride;
    ctx->saved_data["padding"] = padding;
    ctx->saved_data["dilation"] = dilation;
    ctx->saved_data["has_bias"] = bias.has_value();
    return y;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    // create_graph=True: refused, as in sparse_conv.py (the saved x * m has no graph to x).
    TORCH_CHECK(!torch::GradMode::is_enabled(),
                "SparseConv2d does not support double backward: call backward without "
                "create_graph=True");
    const auto saved = ctx->get_saved_variables();
    const torch::Tensor &xm = saved[0], &m = saved[1], &scale = saved[2], &weight = saved[3];
    const auto stride = ctx->saved_data["stride"].toIntVector();
    const auto padding = ctx->saved_data["padding"].toIntVector();
    const auto dilation = ctx->saved_data["dilation"].toIntVector();
    const bool has_bias = ctx->saved_data["has_bias"].toBool();
    const bool need_x = ctx->needs_input_grad(0), need_w = ctx->needs_input_grad(1);
    const bool need_b = has_bias && ctx->needs_input_grad(2);
    const torch::Tensor& grad_y = grads[0];
    torch::autograd::variable_list result(10);  // one per forward argument; undefined: none
    if (!scale.defined()) {  // a plain convolution: one call for all three
      const std::vector<int64_t> bias_sizes{weight.size(0)};
      const auto sizes = need_b ? at::OptionalIntArrayRef(bias_sizes) : at::OptionalIntArrayRef();
      auto [grad_x, grad_w, grad_b] =
          at::convolution_backward(grad_y, xm, weight, sizes, stride, padding, dilation, false,
                                   {0, 0}, 1, {need_x, need_w, need_b});
      result[0] = grad_x, result[1] = grad_w, result[2] = grad_b;
      return result;
    }
    if (!(need_x || need_w)) {
      if (need_b) result[2] = sum_over_positions(grad_y);
      return result;
    }
    auto [grad_raw, grad_b] = rescale(grad_y, scale, need_b);
    auto [grad_xm, grad_w, unused] =
        at::convolution_backward(grad_raw, xm, weight, std::nullopt, stride, padding, dilation,
                                 false, {0, 0}, 1, {need_x, need_w, false});
    if (need_x) result[0] = m.defined() ? grad_xm.mul_(m) : grad_xm;
    result[1] = grad_w, result[2] = grad_b;
    return result;
  }
};

torch::Tensor sparse_conv(const torch::Tensor& x, const torch::Tensor& weight,
                          const std::optional<torch::Tensor>& bias,
                          const std::optional<torch::Tensor>& m,
                          const std::optional<torch::Tensor>& scale,
                          const std::optional<torch::Tensor>& xm,
                          const std::vector<int64_t>& stride, const std::vector<int64_t>& padding,
                          const std::vector<int64_t>& dilation, bool premasked) {
  return SparseConvFunction::apply(x, weight, bias, m, scale, xm, stride, padding, dilation,
                                   premasked);
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, module) {
  module.def("mask_side", &mask_side,
             "Window counts' new mask and scale, and whether every pixel is observed");
  module.def("rescale_and_sum", &rescale_and_sum,
             "grad * scale and the bias gradient, in one read of grad");
  module.def("sparse_conv", &sparse_conv,
             "conv(x * m, W) * scale + b with its backward: _SparseConvFunction in C++");
}
