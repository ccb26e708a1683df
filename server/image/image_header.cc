#include "server/image/image_header.h"

#include <cstdlib>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace vitserve {
namespace {

uint32_t Byte(std::string_view d, size_t i) { return static_cast<uint8_t>(d[i]); }
uint32_t Be16(std::string_view d, size_t i) { return Byte(d, i) << 8 | Byte(d, i + 1); }
uint32_t Be32(std::string_view d, size_t i) { return Be16(d, i) << 16 | Be16(d, i + 2); }
uint32_t Le16(std::string_view d, size_t i) { return Byte(d, i) | Byte(d, i + 1) << 8; }
uint32_t Le24(std::string_view d, size_t i) { return Le16(d, i) | Byte(d, i + 2) << 16; }
uint32_t Le32(std::string_view d, size_t i) { return Le16(d, i) | Le16(d, i + 2) << 16; }

absl::Status Malformed(ImageFormat format, const std::string& what) {
  return absl::InvalidArgumentError(
      absl::StrCat("malformed ", ImageFormatName(format), " image: ", what));
}

absl::StatusOr<ImageHeader> Finish(ImageFormat format, int64_t width, int64_t height) {
  if (width <= 0 || height <= 0) {
    return Malformed(format, absl::StrCat("invalid dimensions ", width, "x", height));
  }
  return ImageHeader{format, width, height};
}

absl::StatusOr<ImageHeader> ReadJpeg(std::string_view d) {
  // Walk the marker segments up to the first frame header (SOFn).
  size_t pos = 2;
  while (pos + 2 <= d.size()) {
    if (Byte(d, pos) != 0xFF) return Malformed(ImageFormat::kJpeg, "bad marker");
    const uint32_t marker = Byte(d, pos + 1);
    if (marker == 0xFF) {  // Fill byte.
      ++pos;
      continue;
    }
    pos += 2;
    if (marker == 0x01 || marker == 0xD8 || (marker >= 0xD0 && marker <= 0xD7)) continue;
    if (marker == 0xD9 || marker == 0xDA) {
      return Malformed(ImageFormat::kJpeg, "no frame header before the image data");
    }
    if (pos + 2 > d.size()) break;
    const uint32_t length = Be16(d, pos);
    if (length < 2 || pos + length > d.size()) break;
    const bool is_sof =
        marker >= 0xC0 && marker <= 0xCF && marker != 0xC4 && marker != 0xC8 && marker != 0xCC;
    if (is_sof) {
      if (length < 7) return Malformed(ImageFormat::kJpeg, "short frame header");
      return Finish(ImageFormat::kJpeg, Be16(d, pos + 5), Be16(d, pos + 3));
    }
    pos += length;
  }
  return Malformed(ImageFormat::kJpeg, "truncated before the frame header");
}

absl::StatusOr<ImageHeader> ReadPng(std::string_view d) {
  if (d.size() < 24 || d.substr(12, 4) != "IHDR") {
    return Malformed(ImageFormat::kPng, "missing IHDR chunk");
  }
  return Finish(ImageFormat::kPng, Be32(d, 16), Be32(d, 20));
}

absl::StatusOr<ImageHeader> ReadBmp(std::string_view d) {
  if (d.size() < 26) return Malformed(ImageFormat::kBmp, "truncated header");
  const uint32_t dib_size = Le32(d, 14);
  if (dib_size == 12) {  // BITMAPCOREHEADER: 16-bit unsigned sizes.
    return Finish(ImageFormat::kBmp, Le16(d, 18), Le16(d, 20));
  }
  if (dib_size < 40) return Malformed(ImageFormat::kBmp, "unknown DIB header");
  const int64_t width = static_cast<int32_t>(Le32(d, 18));
  const int64_t height = static_cast<int32_t>(Le32(d, 22));  // Negative: top-down rows.
  return Finish(ImageFormat::kBmp, width, std::llabs(height));
}

absl::StatusOr<ImageHeader> ReadWebp(std::string_view d) {
  if (d.size() < 30) return Malformed(ImageFormat::kWebp, "truncated header");
  const std::string_view chunk = d.substr(12, 4);
  if (chunk == "VP8X") {  // Extended: canvas size, 24-bit minus-one fields.
    return Finish(ImageFormat::kWebp, Le24(d, 24) + 1, Le24(d, 27) + 1);
  }
  if (chunk == "VP8 ") {  // Lossy: key frame start code, then 14-bit sizes.
    if (Byte(d, 23) != 0x9D || Byte(d, 24) != 0x01 || Byte(d, 25) != 0x2A) {
      return Malformed(ImageFormat::kWebp, "bad VP8 start code");
    }
    return Finish(ImageFormat::kWebp, Le16(d, 26) & 0x3FFF, Le16(d, 28) & 0x3FFF);
  }
  if (chunk == "VP8L") {  // Lossless: signature byte, then 14-bit minus-one sizes.
    if (Byte(d, 20) != 0x2F) return Malformed(ImageFormat::kWebp, "bad VP8L signature");
    const uint32_t bits = Le32(d, 21);
    return Finish(ImageFormat::kWebp, (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1);
  }
  return Malformed(ImageFormat::kWebp, "unknown first chunk");
}

}  // namespace

const char* ImageFormatName(ImageFormat format) {
  switch (format) {
    case ImageFormat::kJpeg:
      return "JPEG";
    case ImageFormat::kPng:
      return "PNG";
    case ImageFormat::kBmp:
      return "BMP";
    case ImageFormat::kWebp:
      return "WebP";
  }
  return "unknown";
}

absl::StatusOr<ImageHeader> ReadImageHeader(std::string_view d) {
  if (d.size() >= 3 && Byte(d, 0) == 0xFF && Byte(d, 1) == 0xD8 && Byte(d, 2) == 0xFF) {
    return ReadJpeg(d);
  }
  if (d.size() >= 8 && d.substr(0, 8) == std::string_view("\x89PNG\r\n\x1a\n", 8)) {
    return ReadPng(d);
  }
  if (d.size() >= 2 && d.substr(0, 2) == "BM") return ReadBmp(d);
  if (d.size() >= 16 && d.substr(0, 4) == "RIFF" && d.substr(8, 4) == "WEBP") {
    return ReadWebp(d);
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unsupported or unrecognised image format; supported encodings are ",
                   kSupportedImageFormats, " (or raw RGB8 pixels with width and height)"));
}

}  // namespace vitserve
