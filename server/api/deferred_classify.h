// A Classify request read from gRPC's byte buffer with its raw pixels left there, so that they
// are copied once, from gRPC's receive buffer straight into the model's page-locked input.
// Parsed as a protobuf message, the pixels would be copied twice: into the message's string,
// then into page-locked memory (at 1,024 clients, protobuf's string copy alone was 9% of the
// server's CPU: docs/performance.md, run 24).
//
// ReadDeferredClassifyRequest reads only the common shape of such a request: `model`, `top_k`,
// `request_id` (ASCII) and images that are each one `raw` message of `width`, `height` and
// `rgb8`, every field at most once. Anything else (an encoded image, a field it does not know,
// non-ASCII text, malformed bytes) returns nothing, and the caller parses the request whole with
// protobuf as before, which then also gives the error, if there is one. So whenever it returns a
// request, that request is what protobuf would have parsed, less the pixels.
//
// Thread-safety: pure functions. The buffer is only read.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstddef>
#include <optional>
#include <vector>

#include "absl/status/statusor.h"
#include "grpcpp/support/byte_buffer.h"
#include "server/api/wire_bytes.h"
#include "server/image/decode.h"
#include "server/image/preprocess.h"
#include "vitserve/v1/vision.pb.h"

namespace vitserve {

struct DeferredClassifyRequest {
  // Every field of the request, each raw image's `rgb8` left empty.
  v1::ClassifyRequest request;
  // Where image i's `rgb8` bytes are in the buffer, ascending.
  std::vector<ByteRange> pixels;
};

// The request in `buffer` with its pixels left there, or nothing when it is not of the shape
// above (the caller then parses it with protobuf).
std::optional<DeferredClassifyRequest> ReadDeferredClassifyRequest(const grpc::ByteBuffer& buffer);

// Whether the model with `spec` takes `deferred`'s images as one copy of their pixels
// (PreprocessingIsACopy): only then may its input come from DeferredPixelsInput.
bool TakesDeferredPixels(const DeferredClassifyRequest& deferred, const PreprocessSpec& spec);

// DecodeAndPreprocess (classify.h) of a request TakesDeferredPixels accepts: the same checks and
// errors (the image count, then each image's size), and the [N,H,W,3] uint8 input (page-locked
// with spec.pin_memory) filled from the pixels' ranges of `buffer`.
absl::StatusOr<at::Tensor> DeferredPixelsInput(const DeferredClassifyRequest& deferred,
                                               const grpc::ByteBuffer& buffer,
                                               const ImageLimits& limits,
                                               const PreprocessSpec& spec);

}  // namespace vitserve
