#include "server/api/wire_bytes.h"

#include <climits>

#include "absl/strings/str_cat.h"
#include "grpcpp/impl/codegen/proto_utils.h"
#include "grpcpp/support/proto_buffer_reader.h"

namespace vitserve {

absl::Status ParseWholeMessage(const grpc::ByteBuffer& bytes, google::protobuf::Message* message) {
  message->Clear();
  if (!bytes.Valid()) return absl::OkStatus();  // No bytes: the empty message.
  grpc::ByteBuffer view(bytes);  // Shares the slices; the reader needs a mutable buffer.
  grpc::ProtoBufferReader stream(&view);
  if (!stream.status().ok() || !message->ParseFromZeroCopyStream(&stream)) {
    message->Clear();  // Not the fields protobuf read before it failed.
    return absl::InvalidArgumentError(absl::StrCat(
        "the request is not a valid ", message->GetDescriptor()->full_name(),
        " (protobuf cannot parse its ", bytes.Length(), " bytes)"));
  }
  return absl::OkStatus();
}

absl::StatusOr<grpc::ByteBuffer> SerializedMessage(const google::protobuf::Message& message) {
  grpc::ByteBuffer buffer;
  bool own_buffer = false;
  const grpc::Status status = grpc::SerializationTraits<google::protobuf::Message>::Serialize(
      message, &buffer, &own_buffer);
  if (!status.ok()) {
    return absl::InternalError(absl::StrCat("cannot serialise the ",
                                            message.GetDescriptor()->full_name(), ": ",
                                            status.error_message()));
  }
  return buffer;
}

absl::Status CopyByteRanges(const grpc::ByteBuffer& buffer, absl::Span<const ByteRange> ranges,
                            uint8_t* out) {
  grpc::ByteBuffer view(buffer);  // Shares the slices; the reader needs a mutable buffer.
  grpc::ProtoBufferReader stream(&view);
  if (!stream.status().ok()) return absl::InternalError("unreadable gRPC byte buffer");
  google::protobuf::io::CodedInputStream in(&stream);
  size_t position = 0;
  for (const ByteRange& range : ranges) {
    if (range.offset < position || range.offset > static_cast<size_t>(INT_MAX) ||
        range.size > static_cast<size_t>(INT_MAX) ||
        !in.Skip(static_cast<int>(range.offset - position)) ||
        !in.ReadRaw(out, static_cast<int>(range.size))) {
      return absl::InternalError(absl::StrCat("bytes [", range.offset, ", ",
                                              range.offset + range.size,
                                              ") are not within the request's ", buffer.Length(),
                                              " bytes, after ", position));
    }
    out += range.size;
    position = range.offset + range.size;
  }
  return absl::OkStatus();
}

uint32_t ReadWireTag(google::protobuf::io::CodedInputStream& in) {
  const int start = in.CurrentPosition();
  const uint32_t tag = in.ReadTag();
  return in.CurrentPosition() - start > 5 ? 0 : tag;
}

bool ReadWireLength(google::protobuf::io::CodedInputStream& in, int* length) {
  constexpr uint64_t kMaxLength = INT_MAX - 16;
  const int start = in.CurrentPosition();
  uint64_t value = 0;
  if (!in.ReadVarint64(&value) || in.CurrentPosition() - start > 5 || value > kMaxLength) {
    return false;
  }
  *length = static_cast<int>(value);
  return true;
}

}  // namespace vitserve
