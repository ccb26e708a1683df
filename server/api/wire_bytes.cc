#include "server/api/wire_bytes.h"

#include <climits>

#include "absl/strings/str_cat.h"
#include "grpcpp/support/proto_buffer_reader.h"

namespace vitserve {

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
