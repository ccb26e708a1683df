// Reading a protobuf message's wire bytes in gRPC's byte buffer, for the raw methods that leave a
// request's bulk there (deferred_classify.h, deferred_infer.h) and copy it once, later, straight
// into the model's input: byte ranges and their copy, and a tag and a length prefix read by the
// rules of protobuf's own parser, so that such a reader accepts no bytes protobuf refuses.
//
// Thread-safety: pure functions; the buffer is only read (its slices are shared, not copied).
#pragma once

#include <cstddef>
#include <cstdint>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "google/protobuf/io/coded_stream.h"
#include "google/protobuf/message.h"
#include "grpcpp/support/byte_buffer.h"

namespace vitserve {

// Parses all of `bytes` into `message` (cleared first), as a generated method would: no bytes is
// the empty message; INVALID_ARGUMENT naming the message's type when protobuf cannot parse them
// (and `message` left empty).
absl::Status ParseWholeMessage(const grpc::ByteBuffer& bytes, google::protobuf::Message* message);

// `message` serialised into a byte buffer, as a generated method sends it; INTERNAL when gRPC's
// serialiser refuses it (a message over 2 GB).
absl::StatusOr<grpc::ByteBuffer> SerializedMessage(const google::protobuf::Message& message);

// Bytes of a gRPC byte buffer: [offset, offset + size).
struct ByteRange {
  size_t offset = 0;
  size_t size = 0;
};

// Copies the `ranges` (ascending, not overlapping) of `buffer` one after another into `out`.
// INTERNAL when a range is not within the buffer.
absl::Status CopyByteRanges(const grpc::ByteBuffer& buffer, absl::Span<const ByteRange> ranges,
                            uint8_t* out);

// The next tag, or 0 at the end, on malformed bytes, or when its varint is longer than five
// bytes: protobuf's parser refuses those, where CodedInputStream::ReadTag reads up to ten.
uint32_t ReadWireTag(google::protobuf::io::CodedInputStream& in);

// A length prefix as protobuf's parser reads one: at most five bytes and at most
// INT_MAX - 16 (its parser keeps 16 bytes of slop). False otherwise.
bool ReadWireLength(google::protobuf::io::CodedInputStream& in, int* length);

}  // namespace vitserve
