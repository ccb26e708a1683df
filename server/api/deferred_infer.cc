#include "server/api/deferred_infer.h"

#include <climits>
#include <cstdint>
#include <string>
#include <vector>

#include "google/protobuf/io/coded_stream.h"
#include "google/protobuf/wire_format_lite.h"
#include "grpcpp/support/proto_buffer_reader.h"

namespace vitserve {
namespace {

using google::protobuf::internal::WireFormatLite;
using google::protobuf::io::CodedInputStream;

// inference.ModelInferRequest's `repeated bytes raw_input_contents = 7`.
constexpr uint32_t kRawInputContents = 7 << 3 | WireFormatLite::WIRETYPE_LENGTH_DELIMITED;

// Splits the `total` bytes of `in` into the raw_input_contents entries' bytes (`raw_inputs`)
// and the other fields, each whole with its tag (`fields`, adjacent fields merged into one
// range). Only the entries' tags and lengths are read here, by protobuf's rules; the other
// fields are only skipped, and protobuf judges their bytes afterwards. False on malformed bytes.
bool SplitFields(CodedInputStream& in, int total, std::vector<ByteRange>* fields,
                 std::vector<ByteRange>* raw_inputs) {
  while (in.CurrentPosition() < total) {
    const int start = in.CurrentPosition();
    const uint32_t tag = ReadWireTag(in);
    if (tag == kRawInputContents) {
      int length = 0;
      if (!ReadWireLength(in, &length)) return false;
      raw_inputs->push_back(
          ByteRange{static_cast<size_t>(in.CurrentPosition()), static_cast<size_t>(length)});
      if (!in.Skip(length)) return false;
      continue;
    }
    // Also a malformed tag (0) or an end-group tag with no group.
    if (tag == 0 || !WireFormatLite::SkipField(&in, tag)) return false;
    const size_t end = static_cast<size_t>(in.CurrentPosition());
    if (!fields->empty() &&
        fields->back().offset + fields->back().size == static_cast<size_t>(start)) {
      fields->back().size = end - fields->back().offset;
    } else {
      fields->push_back(ByteRange{static_cast<size_t>(start), end - start});
    }
  }
  return in.CurrentPosition() == total;
}

}  // namespace

std::optional<DeferredInferRequest> ReadDeferredInferRequest(const grpc::ByteBuffer& buffer) {
  if (buffer.Length() > static_cast<size_t>(INT_MAX)) return std::nullopt;
  DeferredInferRequest out;
  std::vector<ByteRange> fields;
  {
    grpc::ByteBuffer view(buffer);  // Shares the slices; the reader needs a mutable buffer.
    grpc::ProtoBufferReader stream(&view);
    if (!stream.status().ok()) return std::nullopt;
    CodedInputStream in(&stream);
    if (!SplitFields(in, static_cast<int>(buffer.Length()), &fields, &out.raw_inputs)) {
      return std::nullopt;
    }
  }
  // Without raw contents nothing is saved, and a request of typed contents (fp32_contents...)
  // would be copied here before protobuf parses it: protobuf parses it from the buffer instead.
  if (out.raw_inputs.empty()) return std::nullopt;
  // The other fields' bytes as they came, for protobuf to parse (a few hundred bytes).
  size_t size = 0;
  for (const ByteRange& range : fields) size += range.size;
  std::string bytes(size, '\0');
  if (!CopyByteRanges(buffer, fields, reinterpret_cast<uint8_t*>(bytes.data())).ok() ||
      !out.request.ParseFromString(bytes)) {
    return std::nullopt;
  }
  return out;
}

ExternalRawInputs RawInputsOf(const DeferredInferRequest& deferred,
                              const grpc::ByteBuffer* buffer) {
  ExternalRawInputs raw_inputs;
  for (const ByteRange& range : deferred.raw_inputs) raw_inputs.sizes.push_back(range.size);
  raw_inputs.copy = [buffer, ranges = deferred.raw_inputs](size_t index, uint8_t* out) {
    return CopyByteRanges(*buffer, {ranges.at(index)}, out);
  };
  return raw_inputs;
}

}  // namespace vitserve
