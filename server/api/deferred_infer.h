// A KServe ModelInferRequest read from gRPC's byte buffer with its raw_input_contents left there,
// so that the tensor bytes are copied once, from gRPC's receive buffer straight into the model's
// input (page-locked for a model on CUDA). Parsed as a protobuf message, they would be copied
// into the message's string first: for an FP32 image 602 KB, the bulk of the request.
//
// Every other field is copied, as its wire bytes, into a small buffer that protobuf then
// parses, and the entries' own tags and lengths are read by protobuf's rules (wire_bytes.h):
// so the request is exactly what protobuf would have parsed (unknown fields, repeated and
// last-one-wins fields included), less raw_input_contents, whose entries' places in the buffer
// are kept in order. Bytes protobuf refuses return nothing, and the caller parses the request
// whole with protobuf, which then gives the error.
//
// Thread-safety: pure function. The buffer is only read.
#pragma once

#include <optional>
#include <vector>

#include "grpcpp/support/byte_buffer.h"
#include "inference/grpc_service.pb.h"
#include "server/api/kserve_tensor.h"
#include "server/api/wire_bytes.h"

namespace vitserve {

struct DeferredInferRequest {
  // Every field of the request but raw_input_contents (empty).
  inference::ModelInferRequest request;
  // Where each raw_input_contents entry's bytes are in the buffer, in the request's order.
  std::vector<ByteRange> raw_inputs;
};

// The request in `buffer` with its raw_input_contents left there, or nothing when it has none
// or its bytes are not a well-formed ModelInferRequest (the caller then parses it with protobuf).
std::optional<DeferredInferRequest> ReadDeferredInferRequest(const grpc::ByteBuffer& buffer);

// The raw contents `deferred` left in `buffer`, as ParseInferInput takes them. `buffer` must
// outlive every call of the returned copy function.
ExternalRawInputs RawInputsOf(const DeferredInferRequest& deferred, const grpc::ByteBuffer* buffer);

}  // namespace vitserve
