// Turns request bytes into an RgbImage: encoded JPEG / PNG / BMP / WebP, or raw RGB8 pixels.
//
// Limits are checked before any pixel memory is allocated: the encoded size first, then the
// width and height read from the format's header (see image_header.h). JPEG EXIF orientation is
// applied (OpenCV's imdecode does it for IMREAD_COLOR), so the result is upright; the limits
// apply to the stored dimensions, which have the same pixel count. Grey, 16-bit and alpha images
// become 8-bit RGB (alpha is dropped, not composited).
//
// Thread-safety: pure functions, safe to call concurrently.
// Errors:
//   INVALID_ARGUMENT: empty input, an unsupported format (the message lists the supported
//     ones), a malformed or undecodable image, raw size != width * height * 3;
//   RESOURCE_EXHAUSTED: more encoded bytes, pixels or side length than `limits` allows (the
//     message names the limit and the server flag that sets it).
#pragma once

#include <cstdint>
#include <string_view>

#include "absl/status/statusor.h"
#include "server/image/image.h"
#include "server/image/image_header.h"

namespace vitserve {

struct ImageLimits {
  int64_t max_encoded_bytes = 32LL << 20;  // Server flag --max-image-bytes.
  int64_t max_pixels = 40'000'000;         // Server flag --max-image-pixels.
  int max_side = 16384;                    // Longest allowed width or height.
  // Images in one request (server flag --max-images-per-request): each becomes a model input
  // row of about 0.6 MB, whatever its encoded size, so this bounds a request's memory.
  int max_images_per_request = 256;
};

// With `reduce_to_short_side` > 0, a JPEG whose shorter side is at least twice that is decoded at
// 1/2, 1/4 or 1/8 of its size (libjpeg's DCT-domain scaling, through OpenCV's
// IMREAD_REDUCED_COLOR_*): the largest reduction that keeps the shorter side at least
// `reduce_to_short_side` (ceil(side / factor), as libjpeg rounds). Decoding is then several
// times faster, and the following resize has less to do. Other formats decode at full size.
// The image is then smaller than the original: callers that map coordinates back (detection,
// segmentation) must not ask for this.
absl::StatusOr<RgbImage> DecodeImage(std::string_view encoded, const ImageLimits& limits,
                                     int reduce_to_short_side = 0);

// What DecodeImage checks before it decodes, and what it will decode to, without decoding: the
// same errors (INVALID_ARGUMENT for empty or unrecognised data, RESOURCE_EXHAUSTED beyond the
// limits) and the size of the result before any EXIF rotation.
struct EncodedImageInfo {
  // The file's header as read (ReadImageHeader): format, stored size, JPEG frame, EXIF
  // orientation.
  ImageHeader header;
  int reduction = 1;  // 1, 2, 4 or 8 (see DecodeImage's reduce_to_short_side).
  int64_t width = 0;  // What DecodeImage gives: ceil(stored / reduction), as libjpeg rounds.
  int64_t height = 0;
};
absl::StatusOr<EncodedImageInfo> InspectEncodedImage(std::string_view encoded,
                                                     const ImageLimits& limits,
                                                     int reduce_to_short_side = 0);

// Checks raw RGB8 pixels (row-major, 3 bytes per pixel, R G B) as RgbImageFromRaw does:
// INVALID_ARGUMENT for non-positive sizes or a byte count other than width * height * 3,
// RESOURCE_EXHAUSTED beyond the limits.
absl::Status ValidateRawImage(std::string_view rgb8, int width, int height,
                              const ImageLimits& limits);

// ValidateRawImage for pixels of `rgb8_bytes` bytes that are not at hand yet (a Classify request
// read with its pixels left in gRPC's buffer: server/api/deferred_classify.h).
absl::Status ValidateRawImageSize(int64_t rgb8_bytes, int width, int height,
                                  const ImageLimits& limits);

// Copies `rgb8` (row-major, 3 bytes per pixel, R G B) into an RgbImage.
absl::StatusOr<RgbImage> RgbImageFromRaw(std::string_view rgb8, int width, int height,
                                         const ImageLimits& limits);

}  // namespace vitserve
