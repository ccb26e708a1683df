// The KServe v2 tensor conventions of vitserve's ModelInfer, free of gRPC and of the model
// manager so they are unit-tested alone.
//
// One input, "input": [N,3,S,S] (or [3,S,S], read as N = 1), 1 <= N <= max_batch_size, in
// `raw_input_contents` (little-endian, row-major) or in the typed `contents` (fp32_contents for
// FP32, uint_contents for UINT8). Datatypes:
//   FP32, FP16: already normalised model input ((pixel/255 - mean) / std, RGB, planar);
//   UINT8:      raw RGB pixels 0..255, planar (NCHW); the server divides by 255 and normalises
//               with the model's mean/std.
// Outputs, by the model's task, in `raw_output_contents` (an unbatched input drops N from each):
//   classification: "logits"          FP32  [N, num_classes]
//   detection:      "boxes"           FP32  [N, K, 4]  x1, y1, x2, y2 in input pixels (the
//                                                       S x S input sent; edges at integers)
//                   "scores"          FP32  [N, K]     best first
//                   "classes"         INT32 [N, K]     class index; -1 in unused slots
//                   "num_detections"  INT32 [N]        used slots; the rest are zero
//                   K = max_detections; request parameters "score_threshold" (0..1) and
//                   "max_detections" (1..10000) override the model's defaults
//   segmentation:   "label_map"       INT32 [N, S, S]  class index of every input pixel
// A request that names outputs gets those, in its order; one that names none gets them all.
//
// Thread-safety: pure functions. Errors: INVALID_ARGUMENT naming the offending name, datatype,
// shape or byte count and what is allowed.
#pragma once

#include <ATen/core/Tensor.h>

#include <array>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "inference/grpc_service.pb.h"
#include "models/model_info.h"
#include "server/api/detect.h"

namespace vitserve {

inline constexpr char kKServeInputName[] = "input";
inline constexpr char kKServeOutputName[] = "logits";
inline constexpr char kKServeBoxesName[] = "boxes";
inline constexpr char kKServeScoresName[] = "scores";
inline constexpr char kKServeClassesName[] = "classes";
inline constexpr char kKServeNumDetectionsName[] = "num_detections";
inline constexpr char kKServeLabelMapName[] = "label_map";

// One output tensor a model of some task answers with: its name, KServe datatype and shape
// without the batch dimension (-1: varies per request).
struct KServeOutput {
  std::string name;
  std::string datatype;  // "FP32" or "INT32"
  std::vector<int64_t> dims;
};

// The outputs of a model of `task` (see the file comment).
std::vector<KServeOutput> KServeOutputsFor(ModelTask task, int64_t num_classes,
                                           int64_t input_size);

// What ParseInferInput checks a request against.
struct InferInputSpec {
  int64_t input_size = 224;  // S
  std::array<float, 3> mean{};
  std::array<float, 3> std{};
  int64_t max_batch_size = 1;
  // Allocate the input page-locked (a model on CUDA copies it to the device from there).
  bool pin_memory = false;
};

struct InferInput {
  at::Tensor tensor;    // [N,3,S,S] float32, normalised, CPU (page-locked with pin_memory)
  bool batched = true;  // false when the request's shape was [3,S,S]
};

// raw_input_contents that the request's message does not hold (deferred_infer.h leaves them
// in gRPC's buffer): each entry's size, and a function that copies entry i's bytes to `out`.
struct ExternalRawInputs {
  std::vector<size_t> sizes;
  std::function<absl::Status(size_t index, uint8_t* out)> copy;
};

// Raw contents that lie in memory the caller keeps (the binary part of an HTTP body), one view
// per input; the views must stay valid until ParseInferInput has run.
ExternalRawInputs RawInputsOfViews(std::vector<std::string_view> views);

// Validates the request's inputs and converts them to the model's input tensor; its
// raw_input_contents come from `external` when given (the message's must then be empty). The
// tensor bytes are copied once into the result (FP32) or into a scratch tensor converted into
// it (FP16, UINT8).
absl::StatusOr<InferInput> ParseInferInput(const inference::ModelInferRequest& request,
                                           const InferInputSpec& spec,
                                           const ExternalRawInputs* external = nullptr);

// UINT8 planar pixels [images, 3, plane] to model input: (pixel / 255 - mean[c]) / std[c].
void NormalisePlanarPixels(const uint8_t* pixels, int64_t images, int64_t plane,
                           const std::array<float, 3>& mean, const std::array<float, 3>& std,
                           float* out);

// OK when every output the request names is one of `task`'s (each at most once).
absl::Status ValidateRequestedOutputs(const inference::ModelInferRequest& request,
                                      ModelTask task);

// A detection request's settings from its parameters "score_threshold" (double, or int64 0/1)
// and "max_detections" (int64 or uint64), each optional, over the model's `defaults`.
absl::StatusOr<DetectSettings> DetectSettingsFromParameters(
    const inference::ModelInferRequest& request, const v1::DetectionConfig& defaults);

// Adds output "logits" (FP32) with `logits`' bytes to `response`.
void FillInferOutput(const at::Tensor& logits, bool batched,
                     inference::ModelInferResponse* response);

// Adds the detection outputs for the model's CenterNet rows `outputs` ([N, C + 4, h, w]).
absl::Status FillDetectionOutputs(const at::Tensor& outputs, int64_t num_classes,
                                  int64_t input_size, const DetectSettings& settings,
                                  bool batched, inference::ModelInferResponse* response);

// Adds "label_map" for the model's per-class scores `scores` ([N, C, h, w]) over S x S inputs.
absl::Status FillSegmentationOutputs(const at::Tensor& scores, int64_t input_size, bool batched,
                                     inference::ModelInferResponse* response);

// When the request names outputs, keeps only those, in the request's order (their raw contents
// with them).
void KeepRequestedOutputs(const inference::ModelInferRequest& request,
                          inference::ModelInferResponse* response);

}  // namespace vitserve
