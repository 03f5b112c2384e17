// The backward passes of biofa's Linear and Conv2d in C++: the same arithmetic as
// biofa/functional.py (the reference, and the fallback where this does not build), without
// a Python call per layer and step. The error sent down goes through `feedback` (B)
// instead of the weight; the weight gradient is the true local one; B gets the weight's
// gradient when it learns (Kolen-Pollack); `clip` clamps the incoming error.
#include <ATen/TensorIterator.h>
#include <torch/csrc/autograd/functions/utils.h>
#include <torch/extension.h>

using torch::Tensor;
using torch::autograd::Node;
using torch::autograd::SavedVariable;
using torch::autograd::variable_list;

namespace {

Tensor cast_like(const Tensor& tensor, const Tensor& like) {
  return tensor.scalar_type() == like.scalar_type() ? tensor : tensor.to(like.scalar_type());
}

// The backward node of both layers, written as torch writes its own (ConvolutionBackward0 and
// friends): plain members, no per-call dictionary of saved values. Its next edges are always
// (input, weight, bias, B); an undefined bias, or a B that does not learn, gets no edge.
struct FeedbackBackward : public Node {
  SavedVariable input;
  SavedVariable matrix;  // B; for a convolution that sends no error, W (for its shape)
  bool sends_error = true;
  bool learn = false;  // Kolen-Pollack: B's gradient is the weight's
  c10::optional<double> clip;  // none: no clipping
  // convolution only
  bool conv = false;
  std::vector<int64_t> stride, padding, dilation;
  int64_t groups = 1;
  int64_t bias_size = -1;

  std::string name() const override {
    return conv ? "Conv2dFeedbackBackward" : "LinearFeedbackBackward";
  }

  void release_variables() override {
    input.reset_data();
    matrix.reset_data();
  }

  variable_list apply(variable_list&& grads) override {
    variable_list out(4);
    if (!grads[0].defined()) return out;
    Tensor grad = clip ? grads[0].clamp(-*clip, *clip) : grads[0];
    const bool need_x = sends_error && task_should_compute_output(0);
    const bool need_w = task_should_compute_output(1);
    const bool need_b = bias_size >= 0 && task_should_compute_output(2);
    const bool need_feedback = learn && task_should_compute_output(3);
    Tensor x = input.unpack();
    Tensor grad_w;
    if (conv) {
      std::array<bool, 3> mask = {need_x, need_w || need_feedback, need_b};
      auto result = at::convolution_backward(
          grad, cast_like(x, grad), cast_like(matrix.unpack(), grad),
          need_b ? at::OptionalIntArrayRef(bias_size) : c10::nullopt, stride, padding,
          dilation, false, {0, 0}, groups, mask);
      out[0] = std::get<0>(result);
      grad_w = std::get<1>(result);
      out[2] = std::get<2>(result);
    } else {
      if (need_x) out[0] = grad.matmul(cast_like(matrix.unpack(), grad));
      if (grad.dim() != 2) {  // any leading dims: one matrix product over all of them
        grad = grad.reshape({-1, grad.size(-1)});
        x = x.reshape({-1, x.size(-1)});
      }
      if (need_w || need_feedback) grad_w = grad.t().mm(cast_like(x, grad));
      if (need_b) out[2] = grad.sum(0);
    }
    if (need_w) out[1] = grad_w;
    if (need_feedback) out[3] = grad_w;
    return out;
  }
};

// Hands `out` (computed with autograd off) a FeedbackBackward node when any input needs a
// gradient, the way torch's generated autograd code does for its own ops; returns the node
// (null when none was needed). `matrix` is what the backward pass multiplies the error by.
c10::intrusive_ptr<FeedbackBackward> record(const Tensor& out, const Tensor& x,
                                            const Tensor& weight,
                                            const c10::optional<Tensor>& bias,
                                            const c10::optional<Tensor>& feedback, bool learn,
                                            c10::optional<double> clip,
                                            const c10::optional<Tensor>& matrix) {
  const c10::optional<Tensor> learnt = learn ? feedback : c10::nullopt;
  if (!torch::autograd::compute_requires_grad(x, weight, bias, learnt)) return {};
  TORCH_CHECK(!torch::autograd::isFwGradDefined(x) && !torch::autograd::isFwGradDefined(weight),
              "biofa layers do not support forward-mode automatic differentiation");
  auto node = c10::make_intrusive<FeedbackBackward>();
  node->set_next_edges(torch::autograd::collect_next_edges(x, weight, bias, learnt));
  node->input = SavedVariable(x, false);
  node->matrix = SavedVariable(matrix, false);
  node->sends_error = feedback.has_value();
  node->learn = learn;
  node->clip = clip;
  node->bias_size = bias ? bias->size(0) : -1;
  torch::autograd::set_history(out, node);
  return node;
}

Tensor linear(const Tensor& x, const Tensor& weight, const c10::optional<Tensor>& bias,
              const c10::optional<Tensor>& feedback, bool learn_feedback,
              c10::optional<double> clip) {
  Tensor out;
  {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    out = at::linear(x, weight, bias);
  }
  record(out, x, weight, bias, feedback, learn_feedback, clip, feedback);
  return out;
}

Tensor conv2d(const Tensor& x, const Tensor& weight, const c10::optional<Tensor>& bias,
              const c10::optional<Tensor>& feedback, bool learn_feedback,
              c10::optional<double> clip, std::vector<int64_t> stride,
              std::vector<int64_t> padding, std::vector<int64_t> dilation, int64_t groups) {
  Tensor out;
  {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    out = at::conv2d(x, weight, bias, stride, padding, dilation, groups);
  }
  // the weight gradient needs only W's shape: with no error to send, W stands in for B
  if (auto node = record(out, x, weight, bias, feedback, learn_feedback, clip,
                         feedback.value_or(weight))) {
    node->conv = true;
    node->stride = std::move(stride);
    node->padding = std::move(padding);
    node->dilation = std::move(dilation);
    node->groups = groups;
  }
  return out;
}

// ---- sign-concordant feedback: B = m * sign(W) in one pass over the weight --------------

// A 32-bit integer hash (Wellons' lowbias32); biofa/methods/sign.py computes the same
// numbers with tensor ops where this module is not available.
inline uint32_t mix32(uint32_t x) {
  x ^= x >> 16;
  x *= 0x7feb352dU;
  x ^= x >> 15;
  x *= 0x846ca68bU;
  x ^= x >> 16;
  return x;
}

inline float sign_of(float w) { return static_cast<float>((0.0f < w) - (w < 0.0f)); }

bool fast_path(const Tensor& t) {
  return t.device().is_cpu() && t.scalar_type() == at::kFloat && t.is_contiguous();
}

// body(begin, end) over [0, out.numel()), split among torch's threads by TensorIterator, as
// torch splits its own elementwise ops: the optimiser step that just wrote the weight. Each
// thread then reads the part of W it wrote from its own cache; a serial pass pulls half of
// W across cores, which costs more than the arithmetic (measured on a 2-core VM).
template <typename Body>
void split_like_torch(Tensor out, const Body& body) {
  const int64_t numel = out.numel();
  if (numel < at::internal::GRAIN_SIZE || at::get_num_threads() == 1) {
    body(0, numel);  // torch runs these serially on the calling thread too
    return;
  }
  at::TensorIterator iter = at::TensorIterator::nullary_op(out);
  const char* base = static_cast<const char*>(out.data_ptr());
  const int64_t size = static_cast<int64_t>(out.element_size());
  iter.for_each([&](char** data, const int64_t* strides, int64_t n) {
    const int64_t begin = (data[0] - base) / size;
    body(begin, begin + n);
  });
}

// out = magnitude * sign(weight), magnitude a tensor of the weight's shape (frSF, brSF) or,
// when none is given, the number scale (uSF)
bool sign_times_(Tensor out, const Tensor& weight, const c10::optional<Tensor>& magnitude,
                 double scale) {
  if (!fast_path(out) || !fast_path(weight) || (magnitude && !fast_path(*magnitude))) {
    return false;
  }
  float* __restrict__ o = out.data_ptr<float>();
  const float* __restrict__ w = weight.data_ptr<float>();
  const float* __restrict__ m = magnitude ? magnitude->data_ptr<float>() : nullptr;
  const float s = static_cast<float>(scale);
  split_like_torch(out, [&](int64_t begin, int64_t end) {
    if (m != nullptr) {
      for (int64_t i = begin; i < end; ++i) o[i] = m[i] * sign_of(w[i]);
    } else {
      for (int64_t i = begin; i < end; ++i) o[i] = s * sign_of(w[i]);
    }
  });
  torch::autograd::impl::bump_version(out);
  return true;
}

// magnitude ~ U(0, bound) from the hash of (seed, element index), and out = magnitude *
// sign(weight), in one pass: brSF's redraw after every optimiser step. Compiled twice,
// for AVX2 and for any x86-64, and picked at run time (32-bit multiplies vectorise only
// with the former).
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
__attribute__((target_clones("avx2", "default")))
#endif
void redraw_range(float* __restrict__ m, float* __restrict__ o, const float* __restrict__ w,
                  int64_t begin, int64_t end, uint32_t low, uint32_t high, float step) {
  for (int64_t i = begin; i < end; ++i) {
    const uint32_t x = mix32(mix32(static_cast<uint32_t>(i) * 0x9e3779b9U + low) ^ high);
    const float value = static_cast<float>(static_cast<int32_t>(x >> 8)) * step;
    m[i] = value;
    o[i] = value * sign_of(w[i]);
  }
}

// `seed` is the layer's own stream (biofa/methods/brsf.py), never torch's global generator.
bool redraw_uniform_(Tensor magnitude, Tensor out, const Tensor& weight, double bound,
                     int64_t seed) {
  if (!fast_path(magnitude) || !fast_path(out) || !fast_path(weight)) return false;
  float* m = magnitude.data_ptr<float>();
  float* o = out.data_ptr<float>();
  const float* w = weight.data_ptr<float>();
  const uint32_t low = static_cast<uint32_t>(seed & 0xffffffff);
  const uint32_t high = static_cast<uint32_t>((seed >> 32) & 0xffffffff);
  const float step = static_cast<float>(bound / 16777216.0);
  split_like_torch(out, [&](int64_t begin, int64_t end) {
    redraw_range(m, o, w, begin, end, low, high, step);
  });
  torch::autograd::impl::bump_version(magnitude);
  torch::autograd::impl::bump_version(out);
  return true;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("linear", &linear, "F.linear whose input gradient goes through feedback");
  m.def("conv2d", &conv2d, "F.conv2d whose input gradient goes through feedback");
  m.def("sign_times_", &sign_times_,
        "out = (magnitude or scale) * sign(weight); False: not handled here");
  m.def("redraw_uniform_", &redraw_uniform_, "brSF: new U(0, bound) magnitudes and B from the hash of (seed, index)");
}
