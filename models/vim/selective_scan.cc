#include "models/vim/selective_scan.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <initializer_list>
#include <vector>

#ifdef VITSERVE_WITH_CUDA
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "models/vim/internal/scan_kernels.h"
#endif

namespace vitserve::vim {
namespace {

float Silu(float v) { return v / (1.0f + std::exp(-v)); }
float Softplus(float v) { return v <= 20.0f ? std::log1p(std::exp(v)) : v; }

void CheckSequence(const at::Tensor& t, const char* name, int64_t batch, int64_t length,
                   int64_t width) {
  TORCH_CHECK(t.dim() == 3 && t.size(0) == batch && t.size(1) == length && t.size(2) == width,
              "selective scan: ", name, " must be [", batch, ", ", length, ", ", width, "], got ",
              t.sizes());
}

void CheckInputs(const SelectiveScanInputs& in) {
  TORCH_CHECK(in.u.defined() && in.u.dim() == 3, "selective scan: u must be [B, L, D]");
  const int64_t batch = in.u.size(0), length = in.u.size(1), channels = in.u.size(2);
  TORCH_CHECK(in.A.defined() != in.A_log.defined(),
              "selective scan: give exactly one of A and A_log");
  const at::Tensor& a = in.A_log.defined() ? in.A_log : in.A;
  TORCH_CHECK(a.dim() == 2 && a.size(0) == channels,
              "selective scan: A (or A_log) must be [", channels, ", N], got ", a.sizes());
  const int64_t state = a.size(1);
  CheckSequence(in.delta, "delta", batch, length, channels);
  CheckSequence(in.B, "B", batch, length, state);
  CheckSequence(in.C, "C", batch, length, state);
  if (in.z.defined()) CheckSequence(in.z, "z", batch, length, channels);
  if (in.average_with.defined()) {
    CheckSequence(in.average_with, "average_with", batch, length, channels);
    TORCH_CHECK(in.average_with.scalar_type() == in.u.scalar_type(),
                "selective scan: average_with must have u's dtype ", in.u.scalar_type(), ", got ",
                in.average_with.scalar_type());
  }
  for (const at::Tensor* t : {&in.D, &in.delta_bias}) {
    TORCH_CHECK(!t->defined() || (t->dim() == 1 && t->size(0) == channels),
                "selective scan: D and delta_bias must be [", channels, "]");
  }
  for (const at::Tensor* t : {&in.delta, &in.A, &in.A_log, &in.B, &in.C, &in.D, &in.z,
                              &in.delta_bias, &in.average_with}) {
    TORCH_CHECK(!t->defined() || t->device() == in.u.device(),
                "selective scan: all inputs must be on ", in.u.device(), ", one is on ",
                t->device());
  }
  for (const at::Tensor* t : {&a, &in.D, &in.delta_bias}) {
    TORCH_CHECK(!t->defined() || at::isFloatingType(t->scalar_type()),
                "selective scan: A (or A_log), D and delta_bias must be floating point, got ",
                t->scalar_type());
  }
  const at::ScalarType dtype = in.u.scalar_type();
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kHalf || dtype == at::kBFloat16,
              "selective scan: unsupported dtype ", dtype, " (fp32, fp16 and bf16 are)");
  TORCH_CHECK(in.chunks >= 0, "selective scan: chunks must be >= 0, got ", in.chunks);
}

at::Tensor Fp32(const at::Tensor& t) { return t.to(at::kFloat); }

// A = −exp(A_log) in fp32 when A_log is given, else A in fp32.
at::Tensor StateMatrixFp32(const SelectiveScanInputs& in) {
  return in.A_log.defined() ? -at::exp(Fp32(in.A_log)) : Fp32(in.A);
}

#ifdef VITSERVE_WITH_CUDA
internal::ScanDtype KernelDtype(at::ScalarType dtype) {
  switch (dtype) {
    case at::kHalf:
      return internal::ScanDtype::kFloat16;
    case at::kBFloat16:
      return internal::ScanDtype::kBFloat16;
    default:
      return internal::ScanDtype::kFloat32;
  }
}

// The kernels read a call's parameters (A or A_log, D and Δ bias; conv weight and bias; the
// norm's weight) as fp32 or in the inputs' dtype: as stored when all of them have one of the
// two (the model's own parameters: no conversion kernel per call), else all converted to fp32.
// Makes them contiguous and returns whether they are fp32.
bool PrepareParams(std::initializer_list<at::Tensor*> params, at::ScalarType dtype) {
  bool all_fp32 = true, all_dtype = true;
  for (const at::Tensor* t : params) {
    if (!t->defined()) continue;
    all_fp32 = all_fp32 && t->scalar_type() == at::kFloat;
    all_dtype = all_dtype && t->scalar_type() == dtype;
  }
  const bool fp32 = all_fp32 || !all_dtype;
  for (at::Tensor* t : params) {
    if (t->defined()) *t = (fp32 ? Fp32(*t) : *t).contiguous();
  }
  return fp32;
}

// Same dtype as u and a channel stride of 1 (a no-op for the views the model passes).
at::Tensor KernelOperand(const at::Tensor& t, at::ScalarType dtype) {
  at::Tensor r = t.to(dtype);
  if (r.stride(2) != 1 && r.size(2) > 1) r = r.contiguous();
  return r;
}

internal::Strided StridedOf(const at::Tensor& t) {
  return {t.data_ptr(), t.stride(0), t.stride(1)};
}

at::Tensor SelectiveScanCuda(const SelectiveScanInputs& in) {
  const c10::cuda::CUDAGuard guard(in.u.device());
  const at::ScalarType dtype = in.u.scalar_type();
  const at::Tensor u = KernelOperand(in.u, dtype);
  const at::Tensor delta = KernelOperand(in.delta, dtype);
  const at::Tensor b = KernelOperand(in.B, dtype);
  const at::Tensor c = KernelOperand(in.C, dtype);
  const at::Tensor z = in.z.defined() ? KernelOperand(in.z, dtype) : at::Tensor();
  const at::Tensor average_with =
      in.average_with.defined() ? in.average_with.contiguous() : at::Tensor();
  at::Tensor a = in.A_log.defined() ? in.A_log : in.A;
  at::Tensor d = in.D, bias = in.delta_bias;
  const bool params_fp32 = PrepareParams({&a, &d, &bias}, dtype);
  at::Tensor out = at::empty(u.sizes(), u.options().memory_format(at::MemoryFormat::Contiguous));

  internal::ScanParams p;
  p.batch = static_cast<int>(u.size(0));
  p.length = static_cast<int>(u.size(1));
  p.channels = static_cast<int>(u.size(2));
  p.d_state = static_cast<int>(a.size(1));
  p.dtype = KernelDtype(dtype);
  p.u = StridedOf(u);
  p.delta = StridedOf(delta);
  p.B = StridedOf(b);
  p.C = StridedOf(c);
  if (z.defined()) p.z = StridedOf(z);
  p.average_with = average_with.defined() ? average_with.data_ptr() : nullptr;
  p.A = a.data_ptr();
  p.a_is_log = in.A_log.defined();
  p.D = d.defined() ? d.data_ptr() : nullptr;
  p.delta_bias = bias.defined() ? bias.data_ptr() : nullptr;
  p.params_fp32 = params_fp32;
  p.delta_softplus = in.delta_softplus;
  p.reverse = in.reverse;
  p.out = out.data_ptr();
  // kAuto: the split-state kernel, 19-21% faster than the chunked one at both of run J's
  // shapes (docs/performance.md).
  p.kernel = internal::ScanKernel::kSplitStates;
  if (in.kernel == ScanKernelChoice::kChunked) {
    p.kernel = internal::ScanKernel::kChunked;
  } else if (in.kernel == ScanKernelChoice::kChunkedBranchFree) {
    p.kernel = internal::ScanKernel::kChunkedBranchFree;
  }
  const int threads_per_channel = p.kernel == internal::ScanKernel::kSplitStates
                                      ? internal::ScanLanesPerChannel(p.d_state)
                                      : 1;
  p.chunks = in.chunks > 0
                 ? std::min(in.chunks, p.length)
                 : internal::ScanChunks(p.batch, p.channels * threads_per_channel, p.length);
  at::Tensor workspace;
  if (p.chunks > 1) {
    workspace = at::empty({internal::ScanWorkspaceFloats(p.batch, p.channels, p.d_state, p.chunks)},
                          u.options().dtype(at::kFloat));
    p.workspace = workspace.data_ptr<float>();
  }
  TORCH_CHECK(p.d_state == 4 || p.d_state == 8 || p.d_state == 16,
              "selective scan on CUDA supports d_state 4, 8 or 16, got ", p.d_state);
  const cudaError_t err = internal::LaunchSelectiveScan(p, c10::cuda::getCurrentCUDAStream());
  TORCH_CHECK(err == cudaSuccess, "selective scan kernel failed: ", cudaGetErrorString(err));
  return out;
}

at::Tensor CausalConv1dSiluCuda(const at::Tensor& x_in, const at::Tensor& weight,
                                const at::Tensor& bias, bool reverse) {
  const c10::cuda::CUDAGuard guard(x_in.device());
  const at::Tensor x = KernelOperand(x_in, x_in.scalar_type());
  at::Tensor w = weight.reshape({x.size(2), -1}), b = bias;
  const bool params_fp32 = PrepareParams({&w, &b}, x.scalar_type());
  at::Tensor out = at::empty(x.sizes(), x.options().memory_format(at::MemoryFormat::Contiguous));
  internal::ConvParams p;
  p.batch = static_cast<int>(x.size(0));
  p.length = static_cast<int>(x.size(1));
  p.channels = static_cast<int>(x.size(2));
  p.kernel = static_cast<int>(w.size(1));
  p.dtype = KernelDtype(x.scalar_type());
  p.x = StridedOf(x);
  p.weight = w.data_ptr();
  p.bias = b.defined() ? b.data_ptr() : nullptr;
  p.params_fp32 = params_fp32;
  p.reverse = reverse;
  p.out = out.data_ptr();
  const cudaError_t err = internal::LaunchCausalConv1dSilu(p, c10::cuda::getCurrentCUDAStream());
  TORCH_CHECK(err == cudaSuccess, "causal conv1d kernel failed: ", cudaGetErrorString(err));
  return out;
}
at::Tensor AddRmsNormCuda(const at::Tensor& hidden_in, at::Tensor& residual,
                          const at::Tensor& weight, double eps) {
  const c10::cuda::CUDAGuard guard(hidden_in.device());
  const at::Tensor hidden = hidden_in.contiguous();
  const at::Tensor previous = residual.defined() ? residual.contiguous() : at::Tensor();
  at::Tensor w = weight;
  const bool weight_fp32 = PrepareParams({&w}, hidden.scalar_type());
  at::Tensor next = at::empty(hidden.sizes(), hidden.options().dtype(at::kFloat));
  at::Tensor out = at::empty(hidden.sizes(), hidden.options());
  internal::AddRmsNormParams p;
  p.dim = static_cast<int>(hidden.size(-1));
  p.rows = p.dim == 0 ? 0 : hidden.numel() / p.dim;
  p.eps = static_cast<float>(eps);
  p.dtype = KernelDtype(hidden.scalar_type());
  p.hidden = hidden.data_ptr();
  p.residual = previous.defined() ? previous.data_ptr<float>() : nullptr;
  p.residual_out = next.data_ptr<float>();
  p.weight = w.data_ptr();
  p.weight_fp32 = weight_fp32;
  p.out = out.data_ptr();
  const cudaError_t err = internal::LaunchAddRmsNorm(p, c10::cuda::getCurrentCUDAStream());
  TORCH_CHECK(err == cudaSuccess, "add + RMSNorm kernel failed: ", cudaGetErrorString(err));
  residual = next;
  return out;
}
#endif  // VITSERVE_WITH_CUDA

void CheckAddRmsNorm(const at::Tensor& hidden, const at::Tensor& residual,
                     const at::Tensor& weight) {
  TORCH_CHECK(hidden.dim() >= 1 && hidden.size(-1) > 0, "add + RMSNorm: hidden must be [..., D]");
  const int64_t dim = hidden.size(-1);
  TORCH_CHECK(weight.dim() == 1 && weight.size(0) == dim, "add + RMSNorm: weight must be [", dim,
              "], got ", weight.sizes());
  TORCH_CHECK(!residual.defined() ||
                  (residual.sizes() == hidden.sizes() && residual.scalar_type() == at::kFloat),
              "add + RMSNorm: residual must be fp32 ", hidden.sizes());
  TORCH_CHECK(weight.device() == hidden.device() &&
                  (!residual.defined() || residual.device() == hidden.device()),
              "add + RMSNorm: all inputs must be on ", hidden.device());
  const at::ScalarType dtype = hidden.scalar_type();
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kHalf || dtype == at::kBFloat16,
              "add + RMSNorm: unsupported dtype ", dtype);
}

void CheckConv(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias) {
  TORCH_CHECK(x.dim() == 3, "causal conv1d: x must be [B, L, D], got ", x.sizes());
  const int64_t channels = x.size(2);
  TORCH_CHECK(weight.numel() > 0 && weight.size(0) == channels && weight.numel() % channels == 0 &&
                  (weight.dim() == 2 || (weight.dim() == 3 && weight.size(1) == 1)),
              "causal conv1d: weight must be [", channels, ", 1, K] or [", channels, ", K], got ",
              weight.sizes());
  TORCH_CHECK(!bias.defined() || (bias.dim() == 1 && bias.size(0) == channels),
              "causal conv1d: bias must be [", channels, "]");
  TORCH_CHECK(weight.device() == x.device() && (!bias.defined() || bias.device() == x.device()),
              "causal conv1d: weight and bias must be on ", x.device());
  const at::ScalarType dtype = x.scalar_type();
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kHalf || dtype == at::kBFloat16,
              "causal conv1d: unsupported dtype ", dtype);
}

}  // namespace

bool HasCudaKernels() {
#ifdef VITSERVE_WITH_CUDA
  return true;
#else
  return false;
#endif
}

at::Tensor SelectiveScanReference(const SelectiveScanInputs& in) {
  CheckInputs(in);
  TORCH_CHECK(in.u.device().is_cpu(), "SelectiveScanReference runs on CPU tensors only");
  const int64_t batch = in.u.size(0), length = in.u.size(1), channels = in.u.size(2);
  const at::Tensor u_f = Fp32(in.u), delta_f = Fp32(in.delta), a_f = StateMatrixFp32(in);
  const int64_t state = a_f.size(1);
  const at::Tensor b_f = Fp32(in.B), c_f = Fp32(in.C);
  const at::Tensor d_f = in.D.defined() ? Fp32(in.D) : at::zeros({channels});
  const at::Tensor bias_f = in.delta_bias.defined() ? Fp32(in.delta_bias) : at::zeros({channels});
  const bool gated = in.z.defined();
  const at::Tensor z_f = gated ? Fp32(in.z) : at::zeros({1, 1, 1});
  const bool averaged = in.average_with.defined();
  const at::Tensor avg_f = averaged ? Fp32(in.average_with) : at::zeros({1, 1, 1});
  at::Tensor out = at::empty({batch, length, channels}, at::kFloat);

  const auto u = u_f.accessor<float, 3>();
  const auto delta = delta_f.accessor<float, 3>();
  const auto a = a_f.accessor<float, 2>();
  const auto b_mat = b_f.accessor<float, 3>();
  const auto c_mat = c_f.accessor<float, 3>();
  const auto d_skip = d_f.accessor<float, 1>();
  const auto bias = bias_f.accessor<float, 1>();
  const auto z = z_f.accessor<float, 3>();
  const auto avg = avg_f.accessor<float, 3>();
  auto y = out.accessor<float, 3>();
  // One independent recurrence per (batch, channel); they run in parallel.
  at::parallel_for(0, batch * channels, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> h(state);
    for (int64_t bd = begin; bd < end; ++bd) {
      const int64_t bi = bd / channels, d = bd % channels;
      std::fill(h.begin(), h.end(), 0.0f);
      for (int64_t step = 0; step < length; ++step) {
        const int64_t t = in.reverse ? length - 1 - step : step;
        float dt = delta[bi][t][d] + bias[d];
        if (in.delta_softplus) dt = Softplus(dt);
        float acc = 0.0f;
        for (int64_t n = 0; n < state; ++n) {
          h[n] = std::exp(dt * a[d][n]) * h[n] + dt * b_mat[bi][t][n] * u[bi][t][d];
          acc += c_mat[bi][t][n] * h[n];
        }
        acc += d_skip[d] * u[bi][t][d];
        if (gated) acc *= Silu(z[bi][t][d]);
        if (averaged) acc = 0.5f * (avg[bi][t][d] + acc);
        y[bi][t][d] = acc;
      }
    }
  });
  return out.to(in.u.scalar_type());
}

at::Tensor CausalConv1dSiluReference(const at::Tensor& x_in, const at::Tensor& weight_in,
                                     const at::Tensor& bias_in, bool reverse) {
  CheckConv(x_in, weight_in, bias_in);
  TORCH_CHECK(x_in.device().is_cpu(), "CausalConv1dSiluReference runs on CPU tensors only");
  const int64_t batch = x_in.size(0), length = x_in.size(1), channels = x_in.size(2);
  const at::Tensor x_f = Fp32(x_in);
  const at::Tensor w_f = Fp32(weight_in).reshape({channels, -1});
  const int64_t taps = w_f.size(1);
  const at::Tensor bias_f = bias_in.defined() ? Fp32(bias_in) : at::zeros({channels});
  at::Tensor out = at::empty({batch, length, channels}, at::kFloat);
  const auto x = x_f.accessor<float, 3>();
  const auto w = w_f.accessor<float, 2>();
  const auto bias = bias_f.accessor<float, 1>();
  auto y = out.accessor<float, 3>();
  at::parallel_for(0, batch * length, 1, [&](int64_t begin, int64_t end) {
    for (int64_t bt = begin; bt < end; ++bt) {
      const int64_t bi = bt / length, t = bt % length;
      for (int64_t d = 0; d < channels; ++d) {
        float acc = bias[d];
        for (int64_t k = 0; k < taps; ++k) {
          // Causal: taps at t−(K−1) … t; reverse (anti-causal): t+(K−1) … t.
          const int64_t src = reverse ? t + (taps - 1) - k : t - (taps - 1) + k;
          if (src >= 0 && src < length) acc += w[d][k] * x[bi][src][d];
        }
        y[bi][t][d] = Silu(acc);
      }
    }
  });
  return out.to(x_in.scalar_type());
}

at::Tensor AddRmsNormReference(const at::Tensor& hidden, at::Tensor& residual,
                               const at::Tensor& weight, double eps) {
  CheckAddRmsNorm(hidden, residual, weight);
  residual = residual.defined() ? residual + Fp32(hidden) : Fp32(hidden);
  const at::Tensor rstd = at::rsqrt(residual.pow(2).mean(-1, /*keepdim=*/true) + eps);
  return (residual * rstd * Fp32(weight)).to(hidden.scalar_type());
}

at::Tensor AddRmsNorm(const at::Tensor& hidden, at::Tensor& residual, const at::Tensor& weight,
                      double eps) {
  CheckAddRmsNorm(hidden, residual, weight);
#ifdef VITSERVE_WITH_CUDA
  if (hidden.is_cuda()) return AddRmsNormCuda(hidden, residual, weight, eps);
#endif
  return AddRmsNormReference(hidden, residual, weight, eps);
}

at::Tensor SelectiveScan(const SelectiveScanInputs& in) {
  CheckInputs(in);
  if (in.u.is_cuda()) {
#ifdef VITSERVE_WITH_CUDA
    return SelectiveScanCuda(in);
#else
    TORCH_CHECK(false, "selective scan: CUDA tensor given but vitserve was built without CUDA");
#endif
  }
  return SelectiveScanReference(in);
}

at::Tensor CausalConv1dSilu(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
                            bool reverse) {
  CheckConv(x, weight, bias);
  if (x.is_cuda()) {
#ifdef VITSERVE_WITH_CUDA
    return CausalConv1dSiluCuda(x, weight, bias, reverse);
#else
    TORCH_CHECK(false, "causal conv1d: CUDA tensor given but vitserve was built without CUDA");
#endif
  }
  return CausalConv1dSiluReference(x, weight, bias, reverse);
}

}  // namespace vitserve::vim
