// The KServe v2 tensor conventions of vitserve's ModelInfer, free of gRPC and of the model
// manager so they are unit-tested alone.
//
// One input, "input": [N,3,S,S] (or [3,S,S], read as N = 1), 1 <= N <= max_batch_size, in
// `raw_input_contents` (little-endian, row-major) or in the typed `contents` (fp32_contents for
// FP32, uint_contents for UINT8). Datatypes:
//   FP32, FP16: already normalised model input ((pixel/255 - mean) / std, RGB, planar);
//   UINT8:      raw RGB pixels 0..255, planar (NCHW); the server divides by 255 and normalises
//               with the model's mean/std.
// One output, "logits": FP32 [N,num_classes] ([num_classes] for an unbatched input) in
// `raw_output_contents`.
//
// Thread-safety: pure functions. Errors: INVALID_ARGUMENT naming the offending name, datatype,
// shape or byte count and what is allowed.
#pragma once

#include <ATen/core/Tensor.h>

#include <array>
#include <cstdint>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "inference/grpc_service.pb.h"

namespace vitserve {

inline constexpr char kKServeInputName[] = "input";
inline constexpr char kKServeOutputName[] = "logits";

// What ParseInferInput checks a request against.
struct InferInputSpec {
  int64_t input_size = 224;  // S
  std::array<float, 3> mean{};
  std::array<float, 3> std{};
  int64_t max_batch_size = 1;
};

struct InferInput {
  at::Tensor tensor;    // [N,3,S,S] float32, normalised, CPU
  bool batched = true;  // false when the request's shape was [3,S,S]
};

// Validates the request's inputs and converts them to the model's input tensor.
absl::StatusOr<InferInput> ParseInferInput(const inference::ModelInferRequest& request,
                                           const InferInputSpec& spec);

// OK when the request names no outputs or only "logits".
absl::Status ValidateRequestedOutputs(const inference::ModelInferRequest& request);

// Adds output "logits" (FP32) with `logits`' bytes to `response`.
void FillInferOutput(const at::Tensor& logits, bool batched,
                     inference::ModelInferResponse* response);

}  // namespace vitserve
