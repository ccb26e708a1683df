// Read-only views of a served model shared by both services: its vitserve.v1.ModelDescription,
// its input geometry and normalisation, and the state names clients see.
//
// All values come from the model's normalised config (server/config/model_config.h fills every
// field), falling back to the architecture's ModelInfo where a field is still empty.
// Thread-safety: pure functions over const objects.
#pragma once

#include <array>
#include <cstdint>
#include <string>

#include "server/model_manager.h"
#include "vitserve/v1/vision.pb.h"

namespace vitserve {

// Square input side in pixels.
int64_t ModelInputSize(const ServableModel& model);
// Per-channel RGB mean / std in [0, 1] units.
std::array<float, 3> ModelMean(const ServableModel& model);
std::array<float, 3> ModelStd(const ServableModel& model);

// "fp32", "fp16" or "bf16".
std::string PrecisionName(v1::Precision precision);

// "READY", "LOADING", "UNAVAILABLE" or "FAILED: <reason>".
std::string StateName(const ModelStatus& status);

// The full description of a loaded model; labels only when `with_labels`.
v1::ModelDescription DescribeModel(const ServableModel& model, const ModelStatus& status,
                                   bool with_labels);

// What is known of a model that is not loaded: its name, readiness and state.
v1::ModelDescription DescribeUnloadedModel(const ModelStatus& status);

}  // namespace vitserve
