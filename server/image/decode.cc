#include "server/image/decode.h"

#include <algorithm>
#include <cstring>
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "server/image/image_header.h"

namespace vitserve {
namespace {

absl::Status CheckDimensions(int64_t width, int64_t height, const ImageLimits& limits) {
  if (width > limits.max_side || height > limits.max_side) {
    return absl::ResourceExhaustedError(absl::StrCat("image is ", width, "x", height,
                                                     " pixels; the longest side allowed is ",
                                                     limits.max_side, " pixels"));
  }
  if (width * height > limits.max_pixels) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "image is ", width, "x", height, " = ", width * height, " pixels; the limit is ",
        limits.max_pixels, " pixels (configurable with the server flag --max-image-pixels)"));
  }
  return absl::OkStatus();
}

// The reduction for a JPEG of that stored size: 1, 2, 4 or 8.
int JpegReductionFactor(int64_t width, int64_t height, int reduce_to_short_side) {
  if (reduce_to_short_side <= 0) return 1;
  // libjpeg scales by 1/2, 1/4 or 1/8 while decoding; the largest that keeps enough pixels.
  const int64_t short_side = std::min(width, height);
  for (int factor : {8, 4, 2}) {
    if ((short_side + factor - 1) / factor >= reduce_to_short_side) return factor;
  }
  return 1;
}

}  // namespace

absl::StatusOr<EncodedImageInfo> InspectEncodedImage(std::string_view encoded,
                                                     const ImageLimits& limits,
                                                     int reduce_to_short_side) {
  if (encoded.empty()) return absl::InvalidArgumentError("image data is empty");
  if (static_cast<int64_t>(encoded.size()) > limits.max_encoded_bytes) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "encoded image is ", encoded.size(), " bytes; the limit is ", limits.max_encoded_bytes,
        " bytes (configurable with the server flag --max-image-bytes)"));
  }
  VITSERVE_ASSIGN_OR_RETURN(const ImageHeader header, ReadImageHeader(encoded));
  VITSERVE_RETURN_IF_ERROR(CheckDimensions(header.width, header.height, limits));
  EncodedImageInfo info;
  info.header = header;
  info.reduction = header.format == ImageFormat::kJpeg
                       ? JpegReductionFactor(header.width, header.height, reduce_to_short_side)
                       : 1;
  info.width = (header.width + info.reduction - 1) / info.reduction;
  info.height = (header.height + info.reduction - 1) / info.reduction;
  return info;
}

absl::StatusOr<RgbImage> DecodeImage(std::string_view encoded, const ImageLimits& limits,
                                     int reduce_to_short_side) {
  VITSERVE_ASSIGN_OR_RETURN(const EncodedImageInfo info,
                            InspectEncodedImage(encoded, limits, reduce_to_short_side));
  const int flags = info.reduction == 8   ? cv::IMREAD_REDUCED_COLOR_8
                    : info.reduction == 4 ? cv::IMREAD_REDUCED_COLOR_4
                    : info.reduction == 2 ? cv::IMREAD_REDUCED_COLOR_2
                                          : cv::IMREAD_COLOR;

  RgbImage image;
  try {
    // imdecode only reads the buffer; the const_cast is for cv::Mat's constructor.
    const cv::Mat buffer(1, static_cast<int>(encoded.size()), CV_8UC1,
                         const_cast<char*>(encoded.data()));
    cv::Mat pixels = cv::imdecode(buffer, flags);
    if (pixels.empty() || pixels.type() != CV_8UC3) {
      return absl::InvalidArgumentError(absl::StrCat("could not decode the ",
                                                     ImageFormatName(info.header.format),
                                                     " image (corrupt or truncated data)"));
    }
    cv::cvtColor(pixels, pixels, cv::COLOR_BGR2RGB);  // In place: no second full-size buffer.
    image.pixels = std::move(pixels);
  } catch (const cv::Exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(
        "could not decode the ", ImageFormatName(info.header.format), " image: ", e.what()));
  }
  // The decoder must agree with the header (up to the EXIF rotation's swap).
  const bool same = image.width() == info.width && image.height() == info.height;
  const bool swapped = image.width() == info.height && image.height() == info.width;
  if (!same && !swapped) {
    return absl::InvalidArgumentError(absl::StrCat(
        "malformed ", ImageFormatName(info.header.format), " image: header says ", info.header.width,
        "x", info.header.height,
        info.reduction > 1 ? absl::StrCat(" (1/", info.reduction, " of it when reduced)") : "",
        " but it decoded to ", image.width(), "x", image.height()));
  }
  return image;
}

absl::Status ValidateRawImage(std::string_view rgb8, int width, int height,
                              const ImageLimits& limits) {
  return ValidateRawImageSize(static_cast<int64_t>(rgb8.size()), width, height, limits);
}

absl::Status ValidateRawImageSize(int64_t rgb8_bytes, int width, int height,
                                  const ImageLimits& limits) {
  if (width <= 0 || height <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("raw image width and height must be positive, got ", width, "x", height));
  }
  VITSERVE_RETURN_IF_ERROR(CheckDimensions(width, height, limits));
  const int64_t expected = int64_t{width} * height * 3;
  if (rgb8_bytes != expected) {
    return absl::InvalidArgumentError(absl::StrCat("raw RGB8 image of ", width, "x", height,
                                                   " needs ", expected,
                                                   " bytes (width * height "
                                                   "* 3), got ",
                                                   rgb8_bytes));
  }
  return absl::OkStatus();
}

absl::StatusOr<RgbImage> RgbImageFromRaw(std::string_view rgb8, int width, int height,
                                         const ImageLimits& limits) {
  VITSERVE_RETURN_IF_ERROR(ValidateRawImage(rgb8, width, height, limits));
  RgbImage image;
  try {
    image.pixels.create(height, width, CV_8UC3);
  } catch (const cv::Exception& e) {
    return absl::ResourceExhaustedError(absl::StrCat("cannot allocate the image: ", e.what()));
  }
  std::memcpy(image.pixels.data, rgb8.data(), rgb8.size());
  return image;
}

}  // namespace vitserve
