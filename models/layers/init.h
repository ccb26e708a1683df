// Weight initialisers matching timm's, for models created without a checkpoint.
// All act in place under the caller's grad mode (call them under c10::NoGradGuard).
// Thread-safety: they draw from the global torch generator, like timm. Errors: none.
#pragma once

#include <ATen/ATen.h>

namespace vitserve::layers {

// timm's trunc_normal_(t, std): N(0, std²) truncated to the absolute range [-2, 2]. With the
// small std used here truncation practically never triggers; clamping keeps the bound exact.
void TruncNormal_(at::Tensor& tensor, double std);

}  // namespace vitserve::layers
