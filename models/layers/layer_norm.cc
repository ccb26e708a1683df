#include "models/layers/layer_norm.h"

#include <c10/core/GradMode.h>

#include <cstdint>
#include <optional>
#include <vector>

#ifdef VITSERVE_WITH_CUDA
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "models/layers/internal/layer_norm_kernel.h"
#endif

namespace vitserve::layers {

#ifdef VITSERVE_WITH_CUDA
namespace {

// The kernel's tag for `dtype`, or none for a dtype the kernel does not take: the one place
// that says which dtypes it takes, read by LayerNormUsesKernel and LayerNormLastDim.
std::optional<internal::LayerNormDtype> KernelDtype(at::ScalarType dtype) {
  switch (dtype) {
    case at::kFloat:
      return internal::LayerNormDtype::kFloat32;
    case at::kHalf:
      return internal::LayerNormDtype::kFloat16;
    case at::kBFloat16:
      return internal::LayerNormDtype::kBFloat16;
    default:
      return std::nullopt;
  }
}

}  // namespace
#endif

bool LayerNormKernelBuilt() {
#ifdef VITSERVE_WITH_CUDA
  return true;
#else
  return false;
#endif
}

bool LayerNormUsesKernel(const at::Tensor& input, const at::Tensor& weight,
                         const at::Tensor& bias) {
#ifdef VITSERVE_WITH_CUDA
  if (!input.defined() || !weight.defined() || !bias.defined() || !input.is_cuda()) return false;
  const at::ScalarType dtype = input.scalar_type();
  if (!KernelDtype(dtype).has_value()) return false;
  if (input.dim() < 1 || input.numel() == 0) return false;
  const int64_t dim = input.size(-1);
  if (!internal::LayerNormKernelSupportsDim(dim)) return false;
  // The kernel loads element pairs: every row must start on a pair's boundary. A contiguous
  // view may start anywhere in its storage; a non-contiguous input is copied (aligned) first.
  const auto pair_aligned = [&](const at::Tensor& tensor) {
    return reinterpret_cast<uintptr_t>(tensor.const_data_ptr()) % (2 * tensor.element_size()) == 0;
  };
  if (input.is_contiguous() && !pair_aligned(input)) return false;
  for (const at::Tensor* parameter : {&weight, &bias}) {
    if (parameter->scalar_type() != dtype || parameter->device() != input.device() ||
        parameter->dim() != 1 || parameter->size(0) != dim || !parameter->is_contiguous() ||
        !pair_aligned(*parameter)) {
      return false;
    }
  }
  // No backward: with gradients wanted, ATen's differentiable layer norm runs.
  if (c10::GradMode::is_enabled() &&
      (input.requires_grad() || weight.requires_grad() || bias.requires_grad())) {
    return false;
  }
  return true;
#else
  (void)input, (void)weight, (void)bias;
  return false;
#endif
}

at::Tensor LayerNormLastDim(const at::Tensor& input, const at::Tensor& weight,
                            const at::Tensor& bias, double eps) {
#ifdef VITSERVE_WITH_CUDA
  if (LayerNormUsesKernel(input, weight, bias)) {
    const c10::cuda::CUDAGuard guard(input.device());
    // A non-contiguous input (a slice of tokens, say) is gathered first; its output is
    // contiguous, as at::layer_norm's is.
    const at::Tensor rows = input.contiguous();
    at::Tensor output = at::empty_like(rows);
    internal::LayerNormParams params;
    params.rows = rows.numel() / rows.size(-1);
    params.dim = static_cast<int>(rows.size(-1));
    params.eps = static_cast<float>(eps);
    params.dtype = *KernelDtype(input.scalar_type());  // LayerNormUsesKernel checked it.
    params.input = rows.const_data_ptr();
    params.weight = weight.const_data_ptr();
    params.bias = bias.const_data_ptr();
    params.output = output.mutable_data_ptr();
    const cudaError_t launched =
        internal::LaunchLayerNorm(params, c10::cuda::getCurrentCUDAStream(input.device().index()));
    TORCH_CHECK(launched == cudaSuccess, "layers::LayerNorm kernel: ",
                cudaGetErrorString(launched));
    return output;
  }
#endif
  return at::layer_norm(input, {input.size(-1)}, weight, bias, eps);
}

at::Tensor LayerNormImpl::forward(const at::Tensor& input) {
  const std::vector<int64_t>& normalized_shape = options.normalized_shape();
  if (normalized_shape.size() == 1 && input.dim() >= 1 && input.size(-1) == normalized_shape[0]) {
    return LayerNormLastDim(input, weight, bias, options.eps());
  }
  return torch::nn::LayerNormImpl::forward(input);
}

}  // namespace vitserve::layers
