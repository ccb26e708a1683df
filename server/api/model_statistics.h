// Converts a ServableModel's cumulative statistics into Triton's ModelStatistics message (the
// "statistics" extension that perf_analyzer reads).
//
// Thread-safety: reads one Statistics() snapshot. Errors: none.
#pragma once

#include <string>

#include "inference/grpc_service.pb.h"
#include "server/model_manager.h"

namespace vitserve {

// Fills `out` from `snapshot` (name and version as given).
void FillModelStatistics(const std::string& name, const std::string& version,
                         const ModelStatisticsSnapshot& snapshot, inference::ModelStatistics* out);

// The same for a loaded model, from model.Statistics().
void FillModelStatistics(const ServableModel& model, const std::string& version,
                         inference::ModelStatistics* out);

}  // namespace vitserve
