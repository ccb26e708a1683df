// The KServe v2 REST protocol's bodies, as Triton's HTTP clients (tritonclient.http,
// perf_analyzer -i http) send and expect them, converted to and from the protobuf messages of
// the gRPC protocol (inference/grpc_service.proto), so the REST server runs the same code as
// the gRPC service.
//
// Infer requests: a JSON header, optionally followed by binary tensor data (Triton's
// binary-data extension: the header's length is in `Inference-Header-Content-Length`, and each
// input with `"parameters": {"binary_data_size": N}` takes the next N bytes). JSON "data" may be
// flat or nested; FP32 and UINT8 can come as JSON, FP16 only as binary data (JSON has no
// half-precision numbers), as in Triton. Every input becomes raw little-endian bytes in
// raw_input_contents. A "timeout" parameter (microseconds, Triton's name) sets the deadline.
// Infer responses: JSON "data" (flat, row-major) or, for outputs asked for with
// "binary_data": true (or all, with the request parameter "binary_data_output": true), binary
// data after the JSON header, with "binary_data_size" in the output's parameters.
//
// Thread-safety: pure functions. Errors: INVALID_ARGUMENT naming what is wrong in the body.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "google/protobuf/message.h"
#include "inference/grpc_service.pb.h"
#include "nlohmann/json.hpp"

namespace vitserve {

// Which outputs of an infer request go back as binary data.
struct BinaryOutputChoice {
  bool all = false;                          // "binary_data_output": true
  absl::flat_hash_set<std::string> outputs;  // outputs with "binary_data": true
  bool IsBinary(const std::string& name) const { return all || outputs.contains(name); }
};

struct ParsedInferRequest {
  inference::ModelInferRequest request;
  // When every input came as binary data after the JSON header (Triton's binary-data
  // extension, tritonclient.http's default): their bytes as views of the body, in input order,
  // and request.raw_input_contents empty, so the tensor bytes are copied once, into the model's
  // input (RawInputsOfViews), not first into the message. Empty otherwise (the message holds
  // every input's bytes). The views are valid as long as the body passed to ParseInferRequest.
  std::vector<std::string_view> binary_inputs;
  BinaryOutputChoice binary;
  std::optional<absl::Duration> timeout;  // the "timeout" parameter, when given
};

// `body` is the whole HTTP body; `header_length` the value of Inference-Header-Content-Length
// (absent: the body is all JSON).
absl::StatusOr<ParsedInferRequest> ParseInferRequest(std::string_view body,
                                                     std::optional<size_t> header_length,
                                                     const std::string& model_name,
                                                     const std::string& model_version);

struct InferReply {
  std::string body;
  // Set when binary data follows the JSON header: the header's length
  // (Inference-Header-Content-Length) and the body is application/octet-stream.
  std::optional<size_t> header_length;
};

// The REST form of `response` (outputs FP32, FP16 or UINT8 in raw_output_contents).
absl::StatusOr<InferReply> WriteInferResponse(const inference::ModelInferResponse& response,
                                              const BinaryOutputChoice& binary);

// A protobuf message as JSON with its proto field names, enums by name, and 64-bit integers as
// JSON numbers (protobuf's own JSON printer writes them as strings, which Triton's HTTP
// clients, reading shapes and counts as integers, do not accept). Map fields become objects.
nlohmann::json ProtoToJson(const google::protobuf::Message& message);

// The HTTP status that answers a request which failed with `status`: 400 bad input, 401, 403,
// 404 unknown model or version, 429 overloaded or queue full, 499 cancelled, 501, 503 not
// ready or shutting down, 504 deadline exceeded, 500 otherwise.
int HttpStatusFor(const absl::Status& status);

// {"error": "<message>"}.
std::string ErrorJson(absl::string_view message);

}  // namespace vitserve
