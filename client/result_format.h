// How the CLI prints results: one JSON object per line (--json; stable field names that users
// script against) or human-readable text. Pure functions of the messages; thread-safe.
//
// JSON lines (numbers: scores and coordinates with 6 significant digits):
//   classify: {"image":"cat.jpg","model":"m","classes":[{"index":281,"label":"tabby","score":0.91}]}
//   detect:   {"image":..,"model":..,"boxes":[{"x1":..,"y1":..,"x2":..,"y2":..,"score":..,
//              "index":..,"label":..}]}
//   segment:  {"image":..,"model":..,"width":W,"height":H,"mask_png_bytes":N[,"mask_file":P]}
//   models:   {"name":..,"task":"classification","input_size":224,"ready":true,"state":..,
//              "architecture":..,"parameter_count":..,"precision":..,"device":..,
//              "num_classes":..,"instance_count":..,"random_weights":..}
//   bench:    see BenchJson().
#pragma once

#include <string>

#include "absl/strings/string_view.h"
#include "client/bench.h"
#include "vitserve/v1/vision.pb.h"

namespace vitserve::client {

// "classification", "detection", "segmentation", "unspecified".
std::string TaskName(v1::Task task);

std::string ClassificationJson(absl::string_view image, absl::string_view model,
                               const v1::Classification& result);
std::string ClassificationText(absl::string_view image, absl::string_view model,
                               const v1::Classification& result);

std::string DetectionsJson(absl::string_view image, absl::string_view model,
                           const v1::Detections& result);
std::string DetectionsText(absl::string_view image, absl::string_view model,
                           const v1::Detections& result);

// `mask_file` is where the mask was written; empty when it was not.
std::string SegmentationJson(absl::string_view image, absl::string_view model,
                             const v1::SegmentationMap& result, absl::string_view mask_file);
std::string SegmentationText(absl::string_view image, absl::string_view model,
                             const v1::SegmentationMap& result, absl::string_view mask_file);

std::string ModelJson(const v1::ModelDescription& model);
// An aligned table with a header row, one row per model; each line ends with '\n'.
std::string ModelsTable(const v1::ListModelsResponse& models);

// How a benchmark was run, echoed in its report.
struct BenchDescription {
  std::string model;
  std::string rpc;    // "Classify", "ModelInfer", ...
  std::string input;  // "jpeg", "raw", "tensor"
  BenchOptions options;
};

// One JSON object: "model","rpc","input","mode" ("closed"|"open"),"concurrency","rate",
// "batch","duration_s","warmup_s","elapsed_s","requests","ok_requests","images","errors"
// (count),"errors_by_code" ({"CODE":n}),"throughput_img_s","throughput_req_s","mean_ms",
// "p50_ms","p90_ms","p95_ms","p99_ms","max_ms".
std::string BenchJson(const BenchDescription& description, const BenchResult& result);
// Multi-line summary in the spirit of perf_analyzer's.
std::string BenchText(const BenchDescription& description, const BenchResult& result);

}  // namespace vitserve::client
