// The backward passes of biofa's Linear and Conv2d in C++: the same arithmetic as
// biofa/functional.py (the reference, and the fallback where this does not build), without
// a Python call per layer and step. The error sent down goes through `feedback` (B)
// instead of the weight; the weight gradient is the true local one; B gets the weight's
// gradient when it learns (Kolen-Pollack); `clip` clamps the incoming error.
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/TensorIterator.h>
#include <torch/extension.h>

using torch::Tensor;
using torch::autograd::AutogradContext;
using torch::autograd::tensor_list;

namespace {

Tensor cast_like(const Tensor& tensor, const Tensor& like) {
  return tensor.scalar_type() == like.scalar_type() ? tensor : tensor.to(like.scalar_type());
}

Tensor clipped(const Tensor& grad, AutogradContext* ctx) {
  const double clip = ctx->saved_data["clip"].toDouble();
  return clip > 0 ? grad.clamp(-clip, clip) : grad;
}

struct LinearFeedback : public torch::autograd::Function<LinearFeedback> {
  static Tensor forward(AutogradContext* ctx, const Tensor& x, const Tensor& weight,
                        const Tensor& bias, bool has_bias, const Tensor& feedback,
                        bool sends_error, bool learn_feedback, double clip) {
    ctx->save_for_backward({x, feedback});
    ctx->saved_data["sends_error"] = sends_error;
    ctx->saved_data["learn"] = learn_feedback;
    ctx->saved_data["clip"] = clip;
    ctx->saved_data["has_bias"] = has_bias;
    return torch::linear(x, weight, has_bias ? c10::optional<Tensor>(bias) : c10::nullopt);
  }

  static tensor_list backward(AutogradContext* ctx, tensor_list grads) {
    auto saved = ctx->get_saved_variables();
    Tensor x = saved[0], feedback = saved[1];
    const bool learn = ctx->saved_data["learn"].toBool();
    Tensor grad = clipped(grads[0], ctx);
    Tensor grad_x, grad_w, grad_b;
    if (ctx->needs_input_grad(0) && ctx->saved_data["sends_error"].toBool()) {
      grad_x = grad.matmul(cast_like(feedback, grad));
    }
    if (grad.dim() != 2) {  // any leading dims: one matrix product over all of them
      grad = grad.reshape({-1, grad.size(-1)});
      x = x.reshape({-1, x.size(-1)});
    }
    if (ctx->needs_input_grad(1) || learn) {
      grad_w = grad.t().mm(cast_like(x, grad));
    }
    if (ctx->needs_input_grad(2) && ctx->saved_data["has_bias"].toBool()) {
      grad_b = grad.sum(0);
    }
    return {grad_x, ctx->needs_input_grad(1) ? grad_w : Tensor(), grad_b, Tensor(),
            learn ? grad_w : Tensor(), Tensor(), Tensor(), Tensor()};
  }
};

struct Conv2dFeedback : public torch::autograd::Function<Conv2dFeedback> {
  static Tensor forward(AutogradContext* ctx, const Tensor& x, const Tensor& weight,
                        const Tensor& bias, bool has_bias, const Tensor& feedback,
                        bool sends_error, bool learn_feedback, double clip,
                        std::vector<int64_t> stride,
                        std::vector<int64_t> padding, std::vector<int64_t> dilation,
                        int64_t groups) {
    ctx->save_for_backward({x, feedback});
    ctx->saved_data["sends_error"] = sends_error;
    ctx->saved_data["bias_size"] = has_bias ? bias.size(0) : int64_t(-1);
    ctx->saved_data["learn"] = learn_feedback;
    ctx->saved_data["clip"] = clip;
    ctx->saved_data["stride"] = stride;
    ctx->saved_data["padding"] = padding;
    ctx->saved_data["dilation"] = dilation;
    ctx->saved_data["groups"] = groups;
    return torch::conv2d(x, weight, has_bias ? c10::optional<Tensor>(bias) : c10::nullopt,
                         stride, padding, dilation, groups);
  }

  static tensor_list backward(AutogradContext* ctx, tensor_list grads) {
    auto saved = ctx->get_saved_variables();
    const bool learn = ctx->saved_data["learn"].toBool();
    const int64_t bias_size = ctx->saved_data["bias_size"].toInt();
    Tensor grad = clipped(grads[0], ctx);
    std::array<bool, 3> mask = {
        ctx->needs_input_grad(0) && ctx->saved_data["sends_error"].toBool(),
        ctx->needs_input_grad(1) || learn, bias_size >= 0};
    auto stride = ctx->saved_data["stride"].toIntVector();
    auto padding = ctx->saved_data["padding"].toIntVector();
    auto dilation = ctx->saved_data["dilation"].toIntVector();
    std::vector<int64_t> output_padding = {0, 0};
    auto result = at::convolution_backward(
        grad, cast_like(saved[0], grad), cast_like(saved[1], grad),
        bias_size >= 0 ? at::OptionalIntArrayRef(std::vector<int64_t>{bias_size}) : c10::nullopt,
        stride, padding, dilation, false, output_padding, ctx->saved_data["groups"].toInt(), mask);
    Tensor grad_w = std::get<1>(result);
    return {std::get<0>(result), ctx->needs_input_grad(1) ? grad_w : Tensor(),
            bias_size >= 0 ? std::get<2>(result) : Tensor(), Tensor(),
            learn ? grad_w : Tensor(),
            Tensor(), Tensor(), Tensor(), Tensor(), Tensor(), Tensor(), Tensor(), Tensor()};
  }
};

// Undefined tensors cannot be inputs of a C++ autograd Function: where there is no bias,
// or no error is sent down (DFA's hidden layers), the weight stands in and a flag says so.
Tensor linear(const Tensor& x, const Tensor& weight, const c10::optional<Tensor>& bias,
              const c10::optional<Tensor>& feedback, bool learn_feedback, double clip) {
  return LinearFeedback::apply(x, weight, bias.value_or(weight), bias.has_value(),
                               feedback.value_or(weight), feedback.has_value(), learn_feedback,
                               clip);
}

Tensor conv2d(const Tensor& x, const Tensor& weight, const c10::optional<Tensor>& bias,
              const c10::optional<Tensor>& feedback, bool learn_feedback, double clip,
              std::vector<int64_t> stride, std::vector<int64_t> padding,
              std::vector<int64_t> dilation, int64_t groups) {
  return Conv2dFeedback::apply(x, weight, bias.value_or(weight), bias.has_value(),
                               feedback.value_or(weight), feedback.has_value(), learn_feedback,
                               clip, stride, padding, dilation, groups);
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

// The seed of one redraw, drawn from torch's default CPU generator exactly as
// `torch.empty((), dtype=torch.int64).random_()` draws it (biofa/methods/brsf.py): the
// Python fallback then gets the same seeds and leaves the generator in the same state.
int64_t draw_seed() {
  at::Generator generator = at::detail::getDefaultCPUGenerator();
  std::lock_guard<std::mutex> lock(generator.mutex());
  const uint64_t bits = at::check_generator<at::CPUGeneratorImpl>(generator)->random64();
  return static_cast<int64_t>(bits % (static_cast<uint64_t>(INT64_MAX) + 1));
}

bool redraw_uniform_(Tensor magnitude, Tensor out, const Tensor& weight, double bound) {
  if (!fast_path(magnitude) || !fast_path(out) || !fast_path(weight)) return false;
  const int64_t seed = draw_seed();  // only once the redraw is sure to happen here
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
  m.def("redraw_uniform_", &redraw_uniform_, "brSF: new U(0, bound) magnitudes and B, seeded from torch's CPU generator");
}
