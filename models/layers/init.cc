#include "models/layers/init.h"

namespace vitserve::layers {

void TruncNormal_(at::Tensor& tensor, double std) { tensor.normal_(0.0, std).clamp_(-2.0, 2.0); }

}  // namespace vitserve::layers
