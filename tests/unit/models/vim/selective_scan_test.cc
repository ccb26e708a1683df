#include "models/vim/selective_scan.h"

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <string>

namespace vitserve::vim {
namespace {

// Random inputs in the ranges a trained Vim layer produces (A = −exp(A_log) with A_log = log n).
SelectiveScanInputs RandomInputs(int64_t batch, int64_t length, int64_t channels, int64_t state,
                                 at::Device device = at::kCPU, at::ScalarType dtype = at::kFloat) {
  const auto opts = at::TensorOptions().dtype(at::kFloat);
  SelectiveScanInputs in;
  in.u = at::randn({batch, length, channels}, opts);
  in.delta = at::randn({batch, length, channels}, opts) * 0.5 - 1.0;
  in.A =
      -at::arange(1, state + 1, opts).repeat({channels, 1}) * (1 + 0.1 * at::rand({channels, 1}));
  in.B = at::randn({batch, length, state}, opts);
  in.C = at::randn({batch, length, state}, opts);
  in.D = at::randn({channels}, opts);
  in.z = at::randn({batch, length, channels}, opts);
  in.delta_bias = at::rand({channels}, opts) - 4.0;
  for (at::Tensor* t : {&in.u, &in.delta, &in.B, &in.C, &in.z}) *t = t->to(device, dtype);
  for (at::Tensor* t : {&in.A, &in.D, &in.delta_bias}) *t = t->to(device);
  return in;
}

// The scan in closed form, in float64 with tensor ops instead of a recurrence: with
// S_t = Σ_{r≤t} Δ_r·A (per channel and state), h_t = Σ_{s≤t} exp(S_t − S_s)·Δ_s·B_s·u_s, a
// masked [L, L] kernel per channel and state (the "attention" form of a linear recurrence).
at::Tensor ClosedForm(const SelectiveScanInputs& in) {
  const at::Tensor u = in.u.to(at::kDouble).permute({0, 2, 1});  // [B, D, L]
  at::Tensor dt = in.delta.to(at::kDouble).permute({0, 2, 1}) +  // [B, D, L]
                  in.delta_bias.to(at::kDouble).unsqueeze(-1);
  dt = at::softplus(dt);
  const at::Tensor a = in.A.to(at::kDouble);                     // [D, N]
  const at::Tensor b = in.B.to(at::kDouble).permute({0, 2, 1});  // [B, N, L]
  const at::Tensor c = in.C.to(at::kDouble).permute({0, 2, 1});  // [B, N, L]
  const int64_t length = u.size(2);
  const at::Tensor cum =
      at::cumsum(dt.unsqueeze(2) * a.unsqueeze(0).unsqueeze(-1), -1);  // [B,D,N,L]
  at::Tensor diff = cum.unsqueeze(-1) - cum.unsqueeze(-2);             // [B,D,N,t,s] = S_t − S_s
  const at::Tensor causal = at::ones({length, length}, at::kBool).tril();
  diff = diff.masked_fill(causal.logical_not(), -INFINITY);
  const at::Tensor input = (dt * u).unsqueeze(2) * b.unsqueeze(1);                      // [B,D,N,s]
  const at::Tensor h = (at::exp(diff) * input.unsqueeze(-2)).sum(-1);                   // [B,D,N,t]
  at::Tensor y = (h * c.unsqueeze(1)).sum(2) + in.D.to(at::kDouble).unsqueeze(-1) * u;  // [B,D,L]
  y = y * at::silu(in.z.to(at::kDouble).permute({0, 2, 1}));
  return y.permute({0, 2, 1});  // [B, L, D]
}

SelectiveScanInputs Flipped(SelectiveScanInputs in) {
  for (at::Tensor* t : {&in.u, &in.delta, &in.B, &in.C, &in.z}) *t = t->flip({1});
  return in;
}

double MaxRelError(const at::Tensor& got, const at::Tensor& want) {
  const at::Tensor g = got.to(at::kDouble).cpu(), w = want.to(at::kDouble).cpu();
  return ((g - w).abs().max() / w.abs().max().clamp_min(1e-30)).item<double>();
}

TEST(SelectiveScanTest, ReferenceMatchesClosedForm) {
  at::manual_seed(0);
  const SelectiveScanInputs in = RandomInputs(2, 13, 5, 4);
  EXPECT_LT(MaxRelError(SelectiveScanReference(in), ClosedForm(in)), 1e-5);
}

TEST(SelectiveScanTest, ReverseEqualsFlippedForward) {
  at::manual_seed(1);
  SelectiveScanInputs in = RandomInputs(2, 11, 6, 16);
  const at::Tensor expected = ClosedForm(Flipped(in)).flip({1});
  in.reverse = true;
  EXPECT_LT(MaxRelError(SelectiveScanReference(in), expected), 1e-5);
}

TEST(SelectiveScanTest, OptionalInputsAndStridedViews) {
  at::manual_seed(2);
  SelectiveScanInputs in = RandomInputs(1, 9, 4, 8);
  // B and C as column slices of one [B, L, 2N + 3] tensor, as the model passes x_proj's output.
  const at::Tensor packed = at::randn({1, 9, 3 + 16});
  in.B = packed.narrow(2, 3, 8);
  in.C = packed.narrow(2, 11, 8);
  SelectiveScanInputs dense = in;
  dense.B = in.B.contiguous();
  dense.C = in.C.contiguous();
  EXPECT_TRUE(at::equal(SelectiveScanReference(in), SelectiveScanReference(dense)));

  // No gate, no skip, no bias, no softplus: plain h_t = exp(δA)h + δBu, y = Ch.
  in.z = at::Tensor();
  in.D = at::Tensor();
  in.delta_bias = at::Tensor();
  in.delta_softplus = false;
  in.delta = at::rand({1, 9, 4}) * 0.3;
  const at::Tensor out = SelectiveScanReference(in);
  at::Tensor h = at::zeros({4, 8}, at::kDouble);
  for (int64_t t = 0; t < 9; ++t) {
    const at::Tensor dt = in.delta[0][t].to(at::kDouble).unsqueeze(1);  // [D, 1]
    h = at::exp(dt * in.A.to(at::kDouble)) * h +
        dt * in.B[0][t].to(at::kDouble).unsqueeze(0) * in.u[0][t].to(at::kDouble).unsqueeze(1);
    const at::Tensor y = (h * in.C[0][t].to(at::kDouble).unsqueeze(0)).sum(1);
    EXPECT_LT(MaxRelError(out[0][t], y), 1e-5) << "t=" << t;
  }
}

// bimamba v2's (y_f + y_b) / 2, done inside the scan.
TEST(SelectiveScanTest, AveragesWithTheGivenOutput) {
  c10::InferenceMode guard;
  at::manual_seed(10);
  SelectiveScanInputs in = RandomInputs(2, 9, 5, 4);
  const at::Tensor plain = SelectiveScanReference(in);
  in.average_with = at::randn({2, 9, 5});
  EXPECT_LT(MaxRelError(SelectiveScan(in), (in.average_with + plain) / 2), 1e-6);
  in.average_with = at::randn({2, 9, 5}, at::kDouble);  // Not u's dtype.
  EXPECT_THROW(SelectiveScan(in), c10::Error);
  in.average_with = at::randn({2, 8, 5});
  EXPECT_THROW(SelectiveScan(in), c10::Error);
}

TEST(SelectiveScanTest, HalfPrecisionInputsAccumulateInFloat) {
  at::manual_seed(3);
  const SelectiveScanInputs in = RandomInputs(1, 64, 8, 16);
  SelectiveScanInputs low = in;
  for (at::Tensor* t : {&low.u, &low.delta, &low.B, &low.C, &low.z}) *t = t->to(at::kBFloat16);
  const at::Tensor out = SelectiveScanReference(low);
  EXPECT_EQ(out.scalar_type(), at::kBFloat16);
  EXPECT_LT(MaxRelError(out, ClosedForm(low)), 1e-2);
}

// The model passes its A_log (A = −exp(A_log) is computed inside) and its D and Δ bias in its
// own dtype: the same result as A, D and bias given in fp32.
TEST(SelectiveScanTest, ALogAndParametersInTheInputsDtypeEqualFp32Parameters) {
  at::manual_seed(12);
  SelectiveScanInputs in = RandomInputs(2, 9, 6, 4);
  const at::Tensor a_log = at::log(-in.A);
  SelectiveScanInputs with_log = in;
  with_log.A = at::Tensor();
  with_log.A_log = a_log;
  in.A = -at::exp(a_log);  // What the model computed per call before.
  EXPECT_TRUE(at::equal(SelectiveScan(with_log), SelectiveScan(in)));
  // Parameters stored in bf16 (a bf16 model), inputs too: as if converted to fp32 first.
  for (at::Tensor* t : {&with_log.u, &with_log.delta, &with_log.B, &with_log.C, &with_log.z,
                        &with_log.A_log, &with_log.D, &with_log.delta_bias}) {
    *t = t->to(at::kBFloat16);
  }
  SelectiveScanInputs fp32_params = with_log;
  fp32_params.A_log = with_log.A_log.to(at::kFloat);
  fp32_params.D = with_log.D.to(at::kFloat);
  fp32_params.delta_bias = with_log.delta_bias.to(at::kFloat);
  EXPECT_TRUE(at::equal(SelectiveScan(with_log), SelectiveScan(fp32_params)));
}

TEST(SelectiveScanTest, RejectsMismatchedShapes) {
  SelectiveScanInputs in = RandomInputs(1, 5, 4, 4);
  in.B = at::randn({1, 6, 4});
  EXPECT_THROW(SelectiveScan(in), c10::Error);
  in = RandomInputs(1, 5, 4, 4);
  in.u = in.u.to(at::kDouble);
  EXPECT_THROW(SelectiveScan(in), c10::Error);
  in = RandomInputs(1, 5, 4, 4);
  in.chunks = -1;
  EXPECT_THROW(SelectiveScan(in), c10::Error);
  in = RandomInputs(1, 5, 4, 4);
  in.A_log = at::log(-in.A);  // Both A and A_log.
  EXPECT_THROW(SelectiveScan(in), c10::Error);
  in.A = at::Tensor();
  in.A_log = at::Tensor();  // Neither.
  EXPECT_THROW(SelectiveScan(in), c10::Error);
  in = RandomInputs(1, 5, 4, 4);
  in.D = in.D.to(at::kInt);
  EXPECT_THROW(SelectiveScan(in), c10::Error);
}

// The official causal conv: nn.Conv1d(groups=D, padding=K−1) on [B, D, L], first L outputs.
at::Tensor OfficialConv(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b) {
  const int64_t length = x.size(1), taps = w.size(2);
  const at::Tensor y = at::conv1d(x.transpose(1, 2), w, b, /*stride=*/1, /*padding=*/taps - 1,
                                  /*dilation=*/1, /*groups=*/x.size(2));
  return at::silu(y.narrow(2, 0, length)).transpose(1, 2);
}

TEST(CausalConv1dTest, MatchesOfficialConvBothDirections) {
  at::manual_seed(4);
  const at::Tensor x = at::randn({2, 10, 6});
  const at::Tensor w = at::randn({6, 1, 4});
  const at::Tensor b = at::randn({6});
  EXPECT_TRUE(
      at::allclose(CausalConv1dSiluReference(x, w, b, false), OfficialConv(x, w, b), 1e-5, 1e-6));
  // Backward branch: flip → causal conv → flip.
  EXPECT_TRUE(at::allclose(CausalConv1dSiluReference(x, w, b, true),
                           OfficialConv(x.flip({1}), w, b).flip({1}), 1e-5, 1e-6));
  // Shorter than the kernel, and without bias.
  const at::Tensor short_x = at::randn({1, 2, 6});
  EXPECT_TRUE(at::allclose(CausalConv1dSilu(short_x, w, at::Tensor(), false),
                           OfficialConv(short_x, w, at::Tensor()), 1e-5, 1e-6));
}

// mamba_ssm's add + RMSNorm written out in float64: r = residual + hidden,
// r / sqrt(mean(r²) + eps) · w.
at::Tensor AddRmsNormFormula(const at::Tensor& hidden, const at::Tensor& residual,
                             const at::Tensor& weight, double eps) {
  at::Tensor r = hidden.to(at::kDouble);
  if (residual.defined()) r = r + residual.to(at::kDouble);
  return r / at::sqrt(r.pow(2).mean(-1, /*keepdim=*/true) + eps) * weight.to(at::kDouble);
}

TEST(AddRmsNormTest, ReferenceMatchesFormulaAndKeepsTheResidualInFloat) {
  c10::InferenceMode guard;
  at::manual_seed(8);
  const at::Tensor hidden = at::randn({2, 5, 24}).to(at::kBFloat16);
  const at::Tensor weight = at::rand({24}) + 0.5;
  const at::Tensor first = at::randn({2, 5, 24});
  at::Tensor residual = first;
  const at::Tensor out = AddRmsNormReference(hidden, residual, weight, 1e-5);
  EXPECT_EQ(out.scalar_type(), at::kBFloat16);
  EXPECT_EQ(residual.scalar_type(), at::kFloat);
  EXPECT_LT(MaxRelError(residual, first + hidden.to(at::kFloat)), 1e-7);
  EXPECT_LT(MaxRelError(out, AddRmsNormFormula(hidden, first, weight, 1e-5)), 1e-2);
  EXPECT_FALSE(residual.is_same(first)) << "the residual passed in must not be written";

  at::Tensor no_residual;  // The first block: the residual starts as the hidden state.
  const at::Tensor out0 = AddRmsNormReference(first, no_residual, weight, 1e-5);
  EXPECT_TRUE(at::equal(no_residual, first));
  EXPECT_LT(MaxRelError(out0, AddRmsNormFormula(first, at::Tensor(), weight, 1e-5)), 1e-6);
}

TEST(AddRmsNormTest, RejectsMismatchedInputs) {
  at::Tensor residual = at::zeros({2, 3, 8});
  at::Tensor half_residual = at::zeros({2, 3, 8}, at::kHalf);
  EXPECT_THROW(AddRmsNorm(at::randn({2, 3, 8}), residual, at::ones({7}), 1e-5), c10::Error);
  EXPECT_THROW(AddRmsNorm(at::randn({2, 4, 8}), residual, at::ones({8}), 1e-5), c10::Error);
  EXPECT_THROW(AddRmsNorm(at::randn({2, 3, 8}), half_residual, at::ones({8}), 1e-5), c10::Error);
}

// CUDA kernels against the CPU reference; skipped where there is no GPU (CI).
// Every CUDA scan kernel (SelectiveScanInputs::kernel); each must match the reference alike.
constexpr ScanKernelChoice kCudaKernels[] = {ScanKernelChoice::kChunked,
                                             ScanKernelChoice::kChunkedBranchFree,
                                             ScanKernelChoice::kSplitStates};

class CudaKernelTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!HasCudaKernels() || !at::hasCUDA()) GTEST_SKIP() << "no CUDA kernels or no GPU";
  }
};

TEST_F(CudaKernelTest, ScanMatchesReference) {
  c10::InferenceMode guard;
  at::manual_seed(5);
  for (const bool reverse : {false, true}) {
    // 6085: vim at 1248 px.
    for (const int64_t length : {1, 63, 64, 65, 1000, 6085}) {
      SelectiveScanInputs in = RandomInputs(2, length, 200, 16);
      in.reverse = reverse;
      SelectiveScanInputs gpu = in;
      for (at::Tensor* t :
           {&gpu.u, &gpu.delta, &gpu.A, &gpu.B, &gpu.C, &gpu.D, &gpu.z, &gpu.delta_bias}) {
        *t = t->cuda();
      }
      const at::Tensor want = SelectiveScanReference(in);
      const at::Tensor average_with = at::randn_like(want).cuda();
      SelectiveScanInputs in_bf16 = in;
      for (at::Tensor* t : {&in_bf16.u, &in_bf16.delta, &in_bf16.B, &in_bf16.C, &in_bf16.z}) {
        *t = t->to(at::kBFloat16);
      }
      const at::Tensor want_bf16 = SelectiveScanReference(in_bf16);
      for (const ScanKernelChoice kernel : kCudaKernels) {
        const std::string where = "length " + std::to_string(length) + " reverse " +
                                  std::to_string(reverse) + " kernel " +
                                  std::to_string(static_cast<int>(kernel));
        SelectiveScanInputs chosen = gpu;
        chosen.kernel = kernel;
        EXPECT_LT(MaxRelError(SelectiveScan(chosen), want), 1e-5) << where;
        SelectiveScanInputs averaged = chosen;  // The backward scan of bimamba v2.
        averaged.average_with = average_with;
        EXPECT_LT(MaxRelError(SelectiveScan(averaged), (average_with.cpu() + want) / 2), 1e-5)
            << "averaged, " << where;
        // Fixed chunk counts (7 leaves partial groups of 8 steps); more than L is clamped.
        for (const int chunks : {1, 7, 2000}) {
          SelectiveScanInputs fixed = chosen;
          fixed.chunks = chunks;
          EXPECT_LT(MaxRelError(SelectiveScan(fixed), want), 1e-5) << where << " chunks " << chunks;
        }
        for (at::Tensor* t : {&chosen.u, &chosen.delta, &chosen.B, &chosen.C, &chosen.z}) {
          *t = t->to(at::kBFloat16);
        }
        EXPECT_LT(MaxRelError(SelectiveScan(chosen), want_bf16), 1e-2) << "bf16 " << where;
      }
    }
  }
}

// The model's parameters as stored (A_log, D and Δ bias in the inputs' dtype: the kernels read
// them without a conversion per call), and a mix of dtypes (converted to fp32 first): the same
// as fp32 parameters, up to the kernel's expf against ATen's exp for A.
TEST_F(CudaKernelTest, ScanReadsParametersAsStored) {
  c10::InferenceMode guard;
  at::manual_seed(13);
  for (const at::ScalarType dtype : {at::kHalf, at::kBFloat16}) {
    SelectiveScanInputs in = RandomInputs(2, 300, 130, 16, at::kCUDA, dtype);
    SelectiveScanInputs stored = in;
    stored.A = at::Tensor();
    stored.A_log = at::log(-in.A).to(dtype);
    stored.D = in.D.to(dtype);
    stored.delta_bias = in.delta_bias.to(dtype);
    SelectiveScanInputs fp32_params = in;
    fp32_params.A = -at::exp(stored.A_log.to(at::kFloat));
    fp32_params.D = stored.D.to(at::kFloat);
    fp32_params.delta_bias = stored.delta_bias.to(at::kFloat);
    SelectiveScanInputs mixed = stored;
    mixed.D = fp32_params.D;
    for (const ScanKernelChoice kernel : kCudaKernels) {
      for (SelectiveScanInputs* t : {&stored, &fp32_params, &mixed}) t->kernel = kernel;
      const at::Tensor want = SelectiveScan(fp32_params);
      const std::string where = std::string(c10::toString(dtype)) + " kernel " +
                                std::to_string(static_cast<int>(kernel));
      // A last-bit difference in A may round an output to the neighbouring fp16 / bf16 value.
      const double tolerance = dtype == at::kHalf ? 2e-3 : 1e-2;
      EXPECT_LT(MaxRelError(SelectiveScan(stored), want), tolerance) << where;
      EXPECT_LT(MaxRelError(SelectiveScan(mixed), want), tolerance) << "mixed, " << where;
    }
  }
}

// Every kernel on the inputs the model does not give but the API allows: Δ without softplus and
// above softplus's threshold of 20 (where it is the identity), no gate, no D and no Δ bias, and
// the smaller states (kSplitStates: 2 threads per channel at d_state 8, 1 at 4).
TEST_F(CudaKernelTest, ScanKernelsMatchReferenceWithoutOptionalInputs) {
  c10::InferenceMode guard;
  at::manual_seed(11);
  for (const int64_t state : {4, 8, 16}) {
    for (const bool softplus : {true, false}) {
      SelectiveScanInputs in = RandomInputs(2, 77, 130, state);
      // Δ in [0, 0.05) plus, with softplus, a few entries far above the threshold.
      in.delta = at::rand_like(in.delta) * 0.05;
      if (softplus) in.delta.index_put_({0, 5}, 25.0);
      in.delta_softplus = softplus;
      in.z = at::Tensor();
      in.D = at::Tensor();
      in.delta_bias = at::Tensor();
      const at::Tensor want = SelectiveScanReference(in);
      ASSERT_TRUE(at::isfinite(want).all().item<bool>());
      for (const ScanKernelChoice kernel : kCudaKernels) {
        SelectiveScanInputs gpu = in;
        for (at::Tensor* t : {&gpu.u, &gpu.delta, &gpu.A, &gpu.B, &gpu.C}) *t = t->cuda();
        gpu.kernel = kernel;
        for (const int chunks : {0, 3}) {
          gpu.chunks = chunks;
          EXPECT_LT(MaxRelError(SelectiveScan(gpu), want), 1e-5)
              << "state " << state << " softplus " << softplus << " kernel "
              << static_cast<int>(kernel) << " chunks " << chunks;
        }
      }
    }
  }
}

// A batch large enough that the scan runs in one chunk (no pass 1/pass 2 split), at 224 px.
TEST_F(CudaKernelTest, ScanMatchesReferenceInOneChunk) {
  c10::InferenceMode guard;
  at::manual_seed(7);
  for (const bool reverse : {false, true}) {
    SelectiveScanInputs in = RandomInputs(170, 197, 384, 16);
    in.reverse = reverse;
    SelectiveScanInputs gpu = in;
    for (at::Tensor* t :
         {&gpu.u, &gpu.delta, &gpu.A, &gpu.B, &gpu.C, &gpu.D, &gpu.z, &gpu.delta_bias}) {
      *t = t->cuda();
    }
    const at::Tensor want = SelectiveScanReference(in);
    const at::Tensor average_with = at::randn_like(want).cuda();
    for (const ScanKernelChoice kernel : kCudaKernels) {
      SelectiveScanInputs chosen = gpu;
      chosen.kernel = kernel;
      EXPECT_LT(MaxRelError(SelectiveScan(chosen), want), 1e-5)
          << "reverse " << reverse << " kernel " << static_cast<int>(kernel);
      chosen.average_with = average_with;
      EXPECT_LT(MaxRelError(SelectiveScan(chosen), (average_with.cpu() + want) / 2), 1e-5)
          << "averaged, reverse " << reverse << " kernel " << static_cast<int>(kernel);
    }
  }
}

TEST_F(CudaKernelTest, AddRmsNormMatchesReference) {
  c10::InferenceMode guard;
  at::manual_seed(9);
  for (const int64_t dim : {192, 384, 100}) {
    for (const at::ScalarType dtype : {at::kFloat, at::kHalf, at::kBFloat16}) {
      const at::Tensor hidden = at::randn({3, 197, dim}).to(dtype);
      const at::Tensor weight = at::rand({dim}) + 0.5;
      const at::Tensor first = at::randn({3, 197, dim});
      for (const bool with_residual : {false, true}) {
        at::Tensor cpu_residual = with_residual ? first : at::Tensor();
        at::Tensor gpu_residual = with_residual ? first.cuda() : at::Tensor();
        const at::Tensor want = AddRmsNormReference(hidden, cpu_residual, weight, 1e-5);
        const at::Tensor got = AddRmsNorm(hidden.cuda(), gpu_residual, weight.cuda(), 1e-5);
        const double tolerance = dtype == at::kFloat ? 1e-5 : 1e-2;
        EXPECT_LT(MaxRelError(got, want), tolerance) << "dim " << dim << " dtype " << dtype;
        EXPECT_LT(MaxRelError(gpu_residual, cpu_residual), 1e-6) << "dim " << dim;
        EXPECT_EQ(got.scalar_type(), dtype);
      }
    }
  }
}

TEST_F(CudaKernelTest, ConvMatchesReference) {
  c10::InferenceMode guard;
  at::manual_seed(6);
  // Lengths around the kernel's 16-token tiles; Vim's 4 taps plus other widths.
  for (const int64_t length : {1, 15, 16, 17, 77}) {
    for (const int64_t taps : {4, 2, 7}) {
      const at::Tensor xz = at::randn({3, length, 2 * 130});
      const at::Tensor x = xz.narrow(2, 0, 130);  // A strided view, as the model passes it.
      const at::Tensor w = at::randn({130, 1, taps});
      const at::Tensor b = at::randn({130});
      for (const bool reverse : {false, true}) {
        EXPECT_LT(MaxRelError(CausalConv1dSilu(x.cuda(), w.cuda(), b.cuda(), reverse),
                              CausalConv1dSiluReference(x, w, b, reverse)),
                  1e-6)
            << "length " << length << " taps " << taps << " reverse " << reverse;
      }
    }
  }
}

// The conv's and the norm's weights as a bf16 / fp16 model stores them are read as they are:
// the same bits as the same values given in fp32.
TEST_F(CudaKernelTest, ConvAndNormReadWeightsAsStored) {
  c10::InferenceMode guard;
  at::manual_seed(14);
  for (const at::ScalarType dtype : {at::kHalf, at::kBFloat16}) {
    const at::Tensor x = at::randn({2, 40, 130}, at::kCUDA).to(dtype);
    const at::Tensor w = at::randn({130, 1, 4}, at::kCUDA).to(dtype);
    const at::Tensor b = at::randn({130}, at::kCUDA).to(dtype);
    for (const bool reverse : {false, true}) {
      EXPECT_TRUE(at::equal(CausalConv1dSilu(x, w, b, reverse),
                            CausalConv1dSilu(x, w.to(at::kFloat), b.to(at::kFloat), reverse)))
          << c10::toString(dtype) << " reverse " << reverse;
    }
    const at::Tensor hidden = at::randn({3, 50, 192}, at::kCUDA).to(dtype);
    const at::Tensor weight = (at::rand({192}, at::kCUDA) + 0.5).to(dtype);
    const at::Tensor first = at::randn({3, 50, 192}, at::kCUDA);
    at::Tensor residual_stored = first, residual_fp32 = first;
    EXPECT_TRUE(at::equal(AddRmsNorm(hidden, residual_stored, weight, 1e-5),
                          AddRmsNorm(hidden, residual_fp32, weight.to(at::kFloat), 1e-5)))
        << c10::toString(dtype);
    EXPECT_TRUE(at::equal(residual_stored, residual_fp32)) << c10::toString(dtype);
  }
}

}  // namespace
}  // namespace vitserve::vim
