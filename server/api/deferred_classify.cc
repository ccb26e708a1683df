#include "server/api/deferred_classify.h"

#include <ATen/ATen.h>

#include <climits>
#include <cstdint>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "google/protobuf/io/coded_stream.h"
#include "grpcpp/support/proto_buffer_reader.h"
#include "server/api/classify.h"
#include "server/api/image_input.h"

namespace vitserve {
namespace {

using google::protobuf::io::CodedInputStream;

// Field numbers and wire types of vision.proto's ClassifyRequest, Image and RawImage.
constexpr uint32_t kVarint = 0;
constexpr uint32_t kLengthDelimited = 2;
constexpr uint32_t Tag(uint32_t field, uint32_t wire_type) { return field << 3 | wire_type; }
constexpr uint32_t kRequestModel = Tag(1, kLengthDelimited);
constexpr uint32_t kRequestImage = Tag(2, kLengthDelimited);
constexpr uint32_t kRequestTopK = Tag(3, kVarint);
constexpr uint32_t kRequestId = Tag(4, kLengthDelimited);
constexpr uint32_t kImageRaw = Tag(2, kLengthDelimited);
constexpr uint32_t kRawWidth = Tag(1, kVarint);
constexpr uint32_t kRawHeight = Tag(2, kVarint);
constexpr uint32_t kRawRgb8 = Tag(3, kLengthDelimited);

// A string field whose bytes are all ASCII: valid UTF-8 whatever they are, as proto3 requires of
// `string` fields (other text is left to protobuf, which checks it).
bool ReadAsciiString(CodedInputStream& in, std::string* out) {
  int length = 0;
  if (!ReadWireLength(in, &length) || !in.ReadString(out, length)) return false;
  for (const char c : *out) {
    if (static_cast<unsigned char>(c) >= 0x80) return false;
  }
  return true;
}

// Whether the bytes up to the innermost limit are a RawImage of width, height and rgb8, each at
// most once; rgb8's bytes are skipped and their place recorded in `pixels`.
bool ReadRawImage(CodedInputStream& in, v1::RawImage* raw, ByteRange* pixels) {
  bool width = false, height = false, rgb8 = false;
  while (in.BytesUntilLimit() > 0) {
    uint32_t value = 0;
    switch (ReadWireTag(in)) {
      case kRawWidth:
        if (width || !in.ReadVarint32(&value)) return false;
        raw->set_width(value);
        width = true;
        break;
      case kRawHeight:
        if (height || !in.ReadVarint32(&value)) return false;
        raw->set_height(value);
        height = true;
        break;
      case kRawRgb8: {
        int length = 0;
        if (rgb8 || !ReadWireLength(in, &length)) return false;
        pixels->offset = static_cast<size_t>(in.CurrentPosition());
        pixels->size = static_cast<size_t>(length);
        if (!in.Skip(length)) return false;
        rgb8 = true;
        break;
      }
      default:
        return false;
    }
  }
  return in.BytesUntilLimit() == 0;
}

// Whether the next length-delimited bytes are an Image holding exactly one `raw`.
bool ReadImage(CodedInputStream& in, v1::Image* image, ByteRange* pixels) {
  int length = 0;
  if (!ReadWireLength(in, &length)) return false;
  const CodedInputStream::Limit image_limit = in.PushLimit(length);
  if (in.BytesUntilLimit() != length || ReadWireTag(in) != kImageRaw ||
      !ReadWireLength(in, &length)) {
    return false;
  }
  const CodedInputStream::Limit raw_limit = in.PushLimit(length);
  if (in.BytesUntilLimit() != length || !ReadRawImage(in, image->mutable_raw(), pixels)) {
    return false;
  }
  in.PopLimit(raw_limit);
  // Nothing may follow the one `raw` (a second would merge into it; `encoded` would replace it).
  if (in.BytesUntilLimit() != 0) return false;
  in.PopLimit(image_limit);
  return true;
}

}  // namespace

std::optional<DeferredClassifyRequest> ReadDeferredClassifyRequest(
    const grpc::ByteBuffer& buffer) {
  if (buffer.Length() > static_cast<size_t>(INT_MAX)) return std::nullopt;
  grpc::ByteBuffer view(buffer);  // Shares the slices; the reader needs a mutable buffer.
  grpc::ProtoBufferReader stream(&view);
  if (!stream.status().ok()) return std::nullopt;
  CodedInputStream in(&stream);
  const int total = static_cast<int>(buffer.Length());

  DeferredClassifyRequest out;
  std::string text;
  while (in.CurrentPosition() < total) {
    uint32_t value = 0;
    switch (ReadWireTag(in)) {
      case kRequestModel:  // The last of repeated singular fields wins, as in protobuf.
        if (!ReadAsciiString(in, &text)) return std::nullopt;
        out.request.set_model(text);
        break;
      case kRequestImage:
        if (!ReadImage(in, out.request.add_images(), &out.pixels.emplace_back())) {
          return std::nullopt;
        }
        break;
      case kRequestTopK:
        if (!in.ReadVarint32(&value)) return std::nullopt;
        out.request.set_top_k(value);
        break;
      case kRequestId:
        if (!ReadAsciiString(in, &text)) return std::nullopt;
        out.request.set_request_id(text);
        break;
      default:  // Also a malformed tag (0).
        return std::nullopt;
    }
  }
  if (in.CurrentPosition() != total) return std::nullopt;
  return out;
}

bool TakesDeferredPixels(const DeferredClassifyRequest& deferred, const PreprocessSpec& spec) {
  return PreprocessingIsACopy(deferred.request.images(), spec);
}

absl::StatusOr<at::Tensor> DeferredPixelsInput(const DeferredClassifyRequest& deferred,
                                               const grpc::ByteBuffer& buffer,
                                               const ImageLimits& limits,
                                               const PreprocessSpec& spec) {
  const auto& images = deferred.request.images();
  if (static_cast<size_t>(images.size()) != deferred.pixels.size() ||
      !TakesDeferredPixels(deferred, spec)) {
    return absl::InternalError("DeferredPixelsInput: a request it does not take");
  }
  VITSERVE_RETURN_IF_ERROR(CheckImageCount(images.size(), limits));
  for (int i = 0; i < images.size(); ++i) {
    const v1::RawImage& raw = images[i].raw();
    if (absl::Status valid = ValidateRawImageSize(
            static_cast<int64_t>(deferred.pixels[static_cast<size_t>(i)].size),
            static_cast<int>(raw.width()), static_cast<int>(raw.height()), limits);
        !valid.ok()) {
      return WithImageIndex(i, valid);
    }
  }
  const v1::RawImage& first = images[0].raw();
  VITSERVE_ASSIGN_OR_RETURN(
      at::Tensor pixels,
      AllocateInput({images.size(), static_cast<int64_t>(first.height()),
                     static_cast<int64_t>(first.width()), 3},
                    at::kByte, spec.pin_memory));
  VITSERVE_RETURN_IF_ERROR(CopyByteRanges(buffer, deferred.pixels, pixels.data_ptr<uint8_t>()));
  return pixels;
}

}  // namespace vitserve
