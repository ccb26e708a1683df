#include "server/api/image_input.h"

#include <ATen/ATen.h>

#include <utility>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace vitserve {
namespace {

absl::StatusOr<SourceImage> Inspect(const v1::Image& image, const ImageLimits& limits,
                                    int reduce_to) {
  SourceImage source;
  source.image = &image;
  switch (image.data_case()) {
    case v1::Image::kEncoded: {
      absl::StatusOr<EncodedImageInfo> info =
          InspectEncodedImage(image.encoded(), limits, reduce_to);
      if (!info.ok()) return info.status();
      source.width = static_cast<int>(info->width);
      source.height = static_cast<int>(info->height);
      source.header = info->header;
      return source;
    }
    case v1::Image::kRaw:
      source.width = static_cast<int>(image.raw().width());
      source.height = static_cast<int>(image.raw().height());
      if (absl::Status valid =
              ValidateRawImage(image.raw().rgb8(), source.width, source.height, limits);
          !valid.ok()) {
        return valid;
      }
      return source;
    default:
      return absl::InvalidArgumentError(
          "empty; set either `encoded` (JPEG, PNG, BMP or WebP bytes) or `raw`");
  }
}

}  // namespace

absl::Status WithImageIndex(int index, const absl::Status& status) {
  return absl::Status(status.code(), absl::StrCat("image ", index, ": ", status.message()));
}

absl::Status CheckImageCount(int count, const ImageLimits& limits) {
  if (count == 0) return absl::InvalidArgumentError("no images");
  if (count > limits.max_images_per_request) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "request has ", count, " images; the limit is ", limits.max_images_per_request,
        " per request (configurable with the server flag --max-images-per-request); send them "
        "in several requests"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<SourceImage>> InspectImages(
    const google::protobuf::RepeatedPtrField<v1::Image>& images, const ImageLimits& limits,
    int reduce_to) {
  if (absl::Status count = CheckImageCount(images.size(), limits); !count.ok()) return count;
  // Checked (and sized) first, decoded later one at a time, so that a request never holds more
  // than one decoded image besides its model input.
  std::vector<SourceImage> sources;
  sources.reserve(static_cast<size_t>(images.size()));
  for (int i = 0; i < images.size(); ++i) {
    absl::StatusOr<SourceImage> source = Inspect(images[i], limits, reduce_to);
    if (!source.ok()) return WithImageIndex(i, source.status());
    sources.push_back(*source);
  }
  return sources;
}

absl::StatusOr<RgbImage> ImagePixels(const SourceImage& source, const ImageLimits& limits,
                                     int reduce_to) {
  if (source.image->data_case() == v1::Image::kEncoded) {
    return DecodeImage(source.image->encoded(), limits, reduce_to);
  }
  return RgbImageFromRaw(source.image->raw().rgb8(), source.width, source.height, limits);
}

absl::StatusOr<at::Tensor> AllocateInput(std::vector<int64_t> sizes, at::ScalarType dtype,
                                         bool pin_memory) {
  try {
    return at::empty(sizes, at::TensorOptions().dtype(dtype).pinned_memory(pin_memory));
  } catch (const c10::Error& e) {
    return absl::ResourceExhaustedError(
        absl::StrCat("cannot allocate the request's input: ", e.what_without_backtrace()));
  }
}

absl::StatusOr<WholeImageBatch> DecodeAndPreprocessWhole(
    const google::protobuf::RepeatedPtrField<v1::Image>& images, const ImageLimits& limits,
    const PreprocessSpec& spec, ResizeMode mode) {
  VITSERVE_ASSIGN_OR_RETURN(std::vector<SourceImage> sources,
                            InspectImages(images, limits, /*reduce_to=*/0));
  WholeImageBatch batch;
  VITSERVE_ASSIGN_OR_RETURN(batch.input,
                            AllocateInput({images.size(), 3, spec.input_size, spec.input_size},
                                          at::kFloat, spec.pin_memory));
  batch.geometries.reserve(sources.size());
  for (size_t i = 0; i < sources.size(); ++i) {
    const int index = static_cast<int>(i);
    absl::StatusOr<RgbImage> rgb = ImagePixels(sources[i], limits, /*reduce_to=*/0);
    if (!rgb.ok()) return WithImageIndex(index, rgb.status());
    // The decoded size (after any EXIF rotation) is the original the map must cover.
    absl::StatusOr<InputGeometry> geometry = GeometryFor(mode, rgb->width(), rgb->height(), spec);
    if (!geometry.ok()) return WithImageIndex(index, geometry.status());
    absl::StatusOr<at::Tensor> row = PreprocessWhole(*rgb, mode, spec);
    if (!row.ok()) return WithImageIndex(index, row.status());
    batch.input[index].copy_(*row);
    batch.geometries.push_back(*geometry);
  }
  return batch;
}

}  // namespace vitserve
