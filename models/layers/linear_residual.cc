#include "models/layers/linear_residual.h"

#include <c10/core/GradMode.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#ifdef VITSERVE_WITH_CUDA
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cublasLt.h>
#endif

namespace vitserve::layers {
namespace {

// The output's shape: the input's with its last dimension replaced by the weight's rows.
std::vector<int64_t> OutputSizes(const at::Tensor& input, const at::Tensor& weight) {
  std::vector<int64_t> sizes = input.sizes().vec();
  sizes.back() = weight.size(0);
  return sizes;
}

#ifdef VITSERVE_WITH_CUDA
std::optional<cudaDataType_t> CublasType(at::ScalarType dtype) {
  switch (dtype) {
    case at::kHalf:
      return CUDA_R_16F;
    case at::kBFloat16:
      return CUDA_R_16BF;
    default:
      return std::nullopt;
  }
}

void CheckCublas(cublasStatus_t status, const char* what) {
  TORCH_CHECK(status == CUBLAS_STATUS_SUCCESS, "layers (cuBLASLt linear): ", what, ": ",
              cublasLtGetStatusString(status));
}

// The largest power of two (at most 256) that divides the address: cuBLASLt's heuristic picks
// only kernels whose alignment needs the pointers meet.
uint32_t Alignment(const void* pointer) {
  const auto address = reinterpret_cast<uintptr_t>(pointer);
  uint32_t alignment = 256;
  while (alignment > 1 && address % alignment != 0) alignment /= 2;
  return alignment;
}

// Owners of cuBLASLt's descriptors.
struct MatmulDescDeleter {
  void operator()(cublasLtMatmulDescOpaque_t* desc) const { cublasLtMatmulDescDestroy(desc); }
};
struct LayoutDeleter {
  void operator()(cublasLtMatrixLayoutOpaque_t* layout) const {
    cublasLtMatrixLayoutDestroy(layout);
  }
};
struct PreferenceDeleter {
  void operator()(cublasLtMatmulPreferenceOpaque_t* preference) const {
    cublasLtMatmulPreferenceDestroy(preference);
  }
};
using MatmulDesc = std::unique_ptr<cublasLtMatmulDescOpaque_t, MatmulDescDeleter>;
using Layout = std::unique_ptr<cublasLtMatrixLayoutOpaque_t, LayoutDeleter>;
using Preference = std::unique_ptr<cublasLtMatmulPreferenceOpaque_t, PreferenceDeleter>;

// A column-major rows x cols matrix of `type` with leading dimension ld.
Layout MakeLayout(cudaDataType_t type, uint64_t rows, uint64_t cols, int64_t ld) {
  cublasLtMatrixLayout_t layout = nullptr;
  CheckCublas(cublasLtMatrixLayoutCreate(&layout, type, rows, cols, ld), "matrix layout");
  return Layout(layout);
}

template <typename Value>
void SetAttribute(cublasLtMatmulDesc_t desc, cublasLtMatmulDescAttributes_t attribute,
                  const Value& value) {
  CheckCublas(cublasLtMatmulDescSetAttribute(desc, attribute, &value, sizeof(value)),
              "matmul attribute");
}
template <typename Value>
void SetPreference(cublasLtMatmulPreference_t preference,
                   cublasLtMatmulPreferenceAttributes_t attribute, const Value& value) {
  CheckCublas(cublasLtMatmulPreferenceSetAttribute(preference, attribute, &value, sizeof(value)),
              "matmul preference");
}

// D = W X + bias + R, or with tanh_gelu D = GELU_tanh(W X + bias) (R undefined), in cuBLAS's
// column-major terms: row-major [M, K] tokens are a K x M column-major matrix, the row-major
// [N, K] weight is K x N (transposed: N x K), and the row-major [M, N] residual and output are
// N x M. Returns false (nothing launched) when cuBLASLt offers no algorithm for the problem.
bool RunCublasLt(const at::Tensor& rows, const at::Tensor& weight, const at::Tensor& bias,
                 const at::Tensor& residual, bool tanh_gelu, const at::Tensor& output) {
  const cudaDataType_t type = *CublasType(rows.scalar_type());
  const int64_t k = rows.size(-1);
  const int64_t m = rows.numel() / k;
  const int64_t n = weight.size(0);

  cublasLtMatmulDesc_t raw_desc = nullptr;
  CheckCublas(cublasLtMatmulDescCreate(&raw_desc, CUBLAS_COMPUTE_32F, CUDA_R_32F), "matmul");
  const MatmulDesc desc(raw_desc);
  SetAttribute(raw_desc, CUBLASLT_MATMUL_DESC_TRANSA, CUBLAS_OP_T);
  SetAttribute(raw_desc, CUBLASLT_MATMUL_DESC_TRANSB, CUBLAS_OP_N);
  // cuBLASLt's GELU epilogues compute the tanh approximation (as PyTorch's own fused
  // linear-GELU path, taken only for approximate="tanh", relies on).
  cublasLtEpilogue_t epilogue = CUBLASLT_EPILOGUE_DEFAULT;
  if (tanh_gelu) {
    epilogue = bias.defined() ? CUBLASLT_EPILOGUE_GELU_BIAS : CUBLASLT_EPILOGUE_GELU;
  } else if (bias.defined()) {
    epilogue = CUBLASLT_EPILOGUE_BIAS;
  }
  SetAttribute(raw_desc, CUBLASLT_MATMUL_DESC_EPILOGUE, epilogue);
  if (bias.defined()) {
    SetAttribute(raw_desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, bias.const_data_ptr());
  }
  const Layout a = MakeLayout(type, k, n, k);
  const Layout b = MakeLayout(type, k, m, k);
  const Layout c = MakeLayout(type, n, m, n);
  const Layout d = MakeLayout(type, n, m, n);

  const size_t workspace_bytes = at::cuda::getCUDABlasLtWorkspaceSize();
  cublasLtMatmulPreference_t raw_preference = nullptr;
  CheckCublas(cublasLtMatmulPreferenceCreate(&raw_preference), "matmul preference");
  const Preference preference(raw_preference);
  SetPreference(raw_preference, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, workspace_bytes);
  SetPreference(raw_preference, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES,
                Alignment(weight.const_data_ptr()));
  SetPreference(raw_preference, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
                Alignment(rows.const_data_ptr()));
  // Without a residual C is not read (beta 0); it names the output, as cuBLASLt allows.
  const at::Tensor& addend = residual.defined() ? residual : output;
  SetPreference(raw_preference, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES,
                Alignment(addend.const_data_ptr()));
  SetPreference(raw_preference, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES,
                Alignment(output.const_data_ptr()));

  cublasLtHandle_t handle = at::cuda::getCurrentCUDABlasLtHandle();
  cublasLtMatmulHeuristicResult_t heuristic = {};
  int found = 0;
  CheckCublas(cublasLtMatmulAlgoGetHeuristic(handle, raw_desc, a.get(), b.get(), c.get(), d.get(),
                                             raw_preference, 1, &heuristic, &found),
              "algorithm heuristic");
  if (found == 0) return false;
  const float alpha = 1.f, beta = residual.defined() ? 1.f : 0.f;
  CheckCublas(cublasLtMatmul(handle, raw_desc, &alpha, weight.const_data_ptr(), a.get(),
                             rows.const_data_ptr(), b.get(), &beta, addend.const_data_ptr(),
                             c.get(), output.mutable_data_ptr(), d.get(), &heuristic.algo,
                             at::cuda::getCUDABlasLtWorkspace(), workspace_bytes,
                             c10::cuda::getCurrentCUDAStream(rows.device().index())),
              "matmul");
  return true;
}

// RunCublasLt into a new tensor on the input's device, the input made contiguous first;
// undefined when cuBLASLt offers no algorithm (the caller then runs ATen's ops).
at::Tensor ProductOnCublasLt(const at::Tensor& input, const at::Tensor& weight,
                             const at::Tensor& bias, const at::Tensor& residual, bool tanh_gelu) {
  const c10::cuda::CUDAGuard guard(input.device());
  const at::Tensor rows = input.contiguous();
  at::Tensor output = at::empty(OutputSizes(input, weight), rows.options());
  return RunCublasLt(rows, weight, bias, residual, tanh_gelu, output) ? output : at::Tensor();
}
#endif

// Whether cuBLASLt can run at::linear(input, weight, bias) (its dtype, devices and layouts).
bool LinearFitsCublasLt(const at::Tensor& input, const at::Tensor& weight,
                        const at::Tensor& bias) {
#ifdef VITSERVE_WITH_CUDA
  if (!input.defined() || !weight.defined() || !input.is_cuda() || input.dim() < 1 ||
      input.numel() == 0) {
    return false;
  }
  const at::ScalarType dtype = input.scalar_type();
  if (!CublasType(dtype).has_value()) return false;
  const auto same_place = [&](const at::Tensor& t) {
    return t.scalar_type() == dtype && t.device() == input.device();
  };
  if (weight.dim() != 2 || !same_place(weight) || !weight.is_contiguous() ||
      input.size(-1) != weight.size(1)) {
    return false;
  }
  if (bias.defined() && (bias.dim() != 1 || bias.size(0) != weight.size(0) || !same_place(bias) ||
                         !bias.is_contiguous())) {
    return false;
  }
  // No backward: with gradients wanted, ATen's differentiable ops run.
  return !(c10::GradMode::is_enabled() &&
           (input.requires_grad() || weight.requires_grad() ||
            (bias.defined() && bias.requires_grad())));
#else
  (void)input, (void)weight, (void)bias;
  return false;
#endif
}

}  // namespace

bool LinearPlusResidualUsesCublasLt(const at::Tensor& input, const at::Tensor& weight,
                                    const at::Tensor& bias, const at::Tensor& residual) {
  if (!LinearFitsCublasLt(input, weight, bias) || !residual.defined()) return false;
  return residual.scalar_type() == input.scalar_type() && residual.device() == input.device() &&
         residual.is_contiguous() &&
         residual.sizes() == at::IntArrayRef(OutputSizes(input, weight)) &&
         !(c10::GradMode::is_enabled() && residual.requires_grad());
}

bool LinearTanhGeluUsesCublasLt(const at::Tensor& input, const at::Tensor& weight,
                                const at::Tensor& bias) {
  return LinearFitsCublasLt(input, weight, bias);
}

at::Tensor LinearPlusResidual(const at::Tensor& input, const at::Tensor& weight,
                              const at::Tensor& bias, const at::Tensor& residual) {
#ifdef VITSERVE_WITH_CUDA
  if (LinearPlusResidualUsesCublasLt(input, weight, bias, residual)) {
    at::Tensor output = ProductOnCublasLt(input, weight, bias, residual, /*tanh_gelu=*/false);
    if (output.defined()) return output;
  }
#endif
  return at::add(residual, at::linear(input, weight, bias));
}

at::Tensor LinearTanhGelu(const at::Tensor& input, const at::Tensor& weight,
                          const at::Tensor& bias) {
#ifdef VITSERVE_WITH_CUDA
  if (LinearTanhGeluUsesCublasLt(input, weight, bias)) {
    at::Tensor output = ProductOnCublasLt(input, weight, bias, at::Tensor(), /*tanh_gelu=*/true);
    if (output.defined()) return output;
  }
#endif
  return at::gelu(at::linear(input, weight, bias), "tanh");
}

}  // namespace vitserve::layers
