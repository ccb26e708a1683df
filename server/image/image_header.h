// Reads an encoded image's format and dimensions from its first bytes, without decoding, so that
// limits are enforced before any pixel buffer is allocated (decompression bombs fail cleanly).
//
// Supported: JPEG (any SOFn frame), PNG (IHDR), BMP (core and info headers), WebP (VP8, VP8L,
// VP8X). Thread-safety: pure functions.
// Errors: INVALID_ARGUMENT for unknown formats and truncated or malformed headers.
#pragma once

#include <cstdint>
#include <string_view>

#include "absl/status/statusor.h"

namespace vitserve {

enum class ImageFormat { kJpeg, kPng, kBmp, kWebp };

// "JPEG", "PNG", "BMP" or "WebP".
const char* ImageFormatName(ImageFormat format);

// The formats DecodeImage accepts, for error messages: "JPEG, PNG, BMP, WebP".
inline constexpr char kSupportedImageFormats[] = "JPEG, PNG, BMP, WebP";

struct ImageHeader {
  ImageFormat format;
  int64_t width = 0;  // As stored, before any EXIF orientation.
  int64_t height = 0;
};

absl::StatusOr<ImageHeader> ReadImageHeader(std::string_view encoded);

}  // namespace vitserve
