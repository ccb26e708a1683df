// libFuzzer target: what the server does with a request's encoded image bytes before any model
// sees them: the header reader (server/image/image_header.h) and DecodeImage with small limits,
// full size and DCT-reduced. Each must return an image or an error, never crash or overrun; an
// image it returns must have the size its header announced (reduced, or turned by EXIF).
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "server/image/decode.h"
#include "server/image/image_header.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  absl::StatusOr<vitserve::ImageHeader> header = vitserve::ReadImageHeader(bytes);
  // The structure check that decides which JPEGs the GPU decodes: any bytes, no crash.
  (void)vitserve::CheckJpegStructure(bytes);
  vitserve::ImageLimits limits;
  limits.max_pixels = 1 << 20;  // Keeps each run fast; the limit is itself under test.
  limits.max_side = 4096;
  for (int reduce_to : {0, 16}) {
    absl::StatusOr<vitserve::RgbImage> image = vitserve::DecodeImage(bytes, limits, reduce_to);
    if (!image.ok()) continue;
    if (!header.ok() || image->pixels.empty() || image->pixels.type() != CV_8UC3) __builtin_trap();
    if (static_cast<int64_t>(image->width()) * image->height() > limits.max_pixels) {
      __builtin_trap();
    }
  }
  return 0;
}
