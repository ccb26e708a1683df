// Two products with more in cuBLASLt's epilogue than the bias: LinearPlusResidual (below) and
// LinearTanhGelu (at the end: an MLP's first product with its GELU, run V).
//
// layers::LinearPlusResidual: residual + at::linear(input, weight, bias), the output projection
// of a transformer block's branch added to the stream it branched from, in one cuBLASLt matrix
// product on CUDA (the bias and the residual in its epilogue: D = A Bᵀ + bias + C) where that
// applies, and as ATen's linear then add everywhere else.
//
// Why: a ViT block adds two branches to its token stream (x + attn(...), then + mlp(...)); as
// separate kernels each addition reads the stream and the branch's output and writes the sum,
// after the product wrote that output. For deit_tiny on the H100 those 24 additions were 11% of
// the fp16 forward pass (docs/performance.md, run U). In the epilogue the product reads the
// residual once and writes the sum, rounded once from fp32.
//
// cuBLASLt runs when the input is a CUDA tensor in fp16 or bf16 like the weight, the bias (which
// may be undefined) and the residual, the residual is contiguous with the output's shape, the
// weight is contiguous [out, in], and no gradient is wanted. Its result differs from ATen's
// only by rounding (ATen rounds the product to the dtype before the addition).
//
// Thread-safety: a function of its arguments (cuBLASLt handles and workspaces are ATen's, per
// thread and stream). Errors: c10::Error from torch on bad shapes or a failed cuBLASLt call.
#pragma once

#include <ATen/ATen.h>

namespace vitserve::layers {

// residual + at::linear(input, weight, bias), through cuBLASLt when it applies (above).
at::Tensor LinearPlusResidual(const at::Tensor& input, const at::Tensor& weight,
                              const at::Tensor& bias, const at::Tensor& residual);

// Whether LinearPlusResidual runs cuBLASLt for these arguments: false in builds without CUDA.
// For tests and benchmarks that must know which path they measured.
bool LinearPlusResidualUsesCublasLt(const at::Tensor& input, const at::Tensor& weight,
                                    const at::Tensor& bias, const at::Tensor& residual);

// at::gelu(at::linear(input, weight, bias), "tanh"): on CUDA in fp16 or bf16 one cuBLASLt
// matrix product with the bias and the tanh-approximated GELU in its epilogue (the same
// conditions as above, without a residual), ATen's linear then GELU elsewhere.
at::Tensor LinearTanhGelu(const at::Tensor& input, const at::Tensor& weight,
                          const at::Tensor& bias);

// Whether LinearTanhGelu runs cuBLASLt for these arguments: false in builds without CUDA.
bool LinearTanhGeluUsesCublasLt(const at::Tensor& input, const at::Tensor& weight,
                                const at::Tensor& bias);

}  // namespace vitserve::layers
