// Registers the SHViT family (shvit_s1 … shvit_s4, arXiv 2401.16456; variant table as in models.md)
// with the model registry. Errors: those of ModelRegistry::Register (ALREADY_EXISTS on a second
// call).
#pragma once

#include "absl/status/status.h"

namespace vitserve {

class ModelRegistry;
absl::Status RegisterShvitModels(ModelRegistry& registry);

}  // namespace vitserve
