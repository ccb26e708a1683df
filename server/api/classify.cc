#include "server/api/classify.h"

#include <ATen/ATen.h>

#include <cstring>
#include <optional>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "models/heads/topk.h"
#include "server/api/image_input.h"
#include "server/image/image_header.h"
#include "server/image/jpeg_part.h"

namespace vitserve {

absl::StatusOr<int64_t> ValidateClassifyRequest(const v1::ClassifyRequest& request,
                                                std::string_view model, ModelTask task,
                                                int64_t num_classes, int64_t default_top_k) {
  if (task != ModelTask::kClassification) {
    return absl::InvalidArgumentError(
        absl::StrCat("model '", std::string(model), "' is a ", std::string(ModelTaskName(task)),
                     " model; Classify needs a classification model"));
  }
  if (request.images_size() == 0) {
    return absl::InvalidArgumentError("no images: a ClassifyRequest needs at least one image");
  }
  const int64_t top_k = request.top_k();
  if (top_k > num_classes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "top_k ", top_k, " is out of range: model '", std::string(model), "' has ", num_classes,
        " classes (allowed: 1..", num_classes, ", or 0 for the default ", default_top_k, ")"));
  }
  return top_k > 0 ? top_k : std::min(default_top_k, num_classes);
}

namespace {

int ReduceTo(const PreprocessSpec& spec) {
  // Classification needs no original coordinates, so large JPEGs may decode reduced.
  return spec.jpeg_dct_downscale ? static_cast<int>(ResizedShortSide(spec)) : 0;
}

// Whether an image of this size is at most kMaxDeviceResizeFactor times what the model
// resizes to: small enough for the device's resize.
bool DeviceResizes(int width, int height, const PreprocessSpec& spec) {
  return ComputeCropGeometry(width, height, spec).scale * kMaxDeviceResizeFactor >= 1.0;
}

// Whether the model's device should preprocess these images: one size for all (they then form
// one [N,H,W,3] tensor) that DeviceResizes.
bool ForDevice(const std::vector<SourceImage>& sources, const PreprocessSpec& spec) {
  if (!spec.on_device) return false;
  const SourceImage& first = sources.front();
  for (const SourceImage& source : sources) {
    if (source.width != first.width || source.height != first.height) return false;
  }
  return DeviceResizes(first.width, first.height, spec);
}

// The device path: every image's pixels, one at a time, into one [N,H,W,3] uint8 tensor. Empty
// (not an error) when an image decodes to another size than announced (an EXIF rotation): the
// request then takes the CPU path.
absl::StatusOr<std::optional<at::Tensor>> PixelsForDevice(const std::vector<SourceImage>& sources,
                                                          const ImageLimits& limits,
                                                          const PreprocessSpec& spec) {
  const int width = sources.front().width;
  const int height = sources.front().height;
  const size_t image_bytes = static_cast<size_t>(width) * static_cast<size_t>(height) * 3;
  VITSERVE_ASSIGN_OR_RETURN(
      at::Tensor pixels,
      AllocateInput({static_cast<int64_t>(sources.size()), height, width, 3}, at::kByte,
               spec.pin_memory));
  uint8_t* next = pixels.data_ptr<uint8_t>();
  for (size_t i = 0; i < sources.size(); ++i) {
    const SourceImage& source = sources[i];
    if (source.image->data_case() == v1::Image::kRaw) {
      // Straight from the request's bytes (Pixels would copy them into an image first).
      std::memcpy(next, source.image->raw().rgb8().data(), image_bytes);
    } else {
      absl::StatusOr<RgbImage> decoded = ImagePixels(source, limits, ReduceTo(spec));
      if (!decoded.ok()) return WithImageIndex(static_cast<int>(i), decoded.status());
      if (decoded->width() != width || decoded->height() != height) return std::nullopt;
      std::memcpy(next, decoded->pixels.data, image_bytes);  // Decoded images are continuous.
    }
    next += image_bytes;
  }
  return std::optional<at::Tensor>(std::move(pixels));
}

// The GPU-decoding path: every image a JPEG the instance's nvJPEG decoder takes as the CPU
// would decode it (a baseline frame of 1 or 3 components, EXIF orientation 1, the size the CPU
// would decode it to, so no DCT reduction, and well formed up to its scan and whole:
// CheckJpegStructure), the files packed into one part (jpeg_part.h).
// Empty (not an error) when an image does not qualify: the request then takes another path.
absl::StatusOr<std::optional<at::Tensor>> JpegsForDevice(const std::vector<SourceImage>& sources,
                                                         const PreprocessSpec& spec) {
  std::vector<EncodedJpeg> jpegs;
  jpegs.reserve(sources.size());
  for (const SourceImage& source : sources) {
    if (source.image->data_case() != v1::Image::kEncoded || !source.header.has_value()) {
      return std::nullopt;
    }
    const std::string& bytes = source.image->encoded();
    const ImageHeader& header = *source.header;  // Read by InspectImages.
    if (header.format != ImageFormat::kJpeg || !header.jpeg_baseline ||
        (header.jpeg_components != 1 && header.jpeg_components != 3) ||
        header.exif_orientation != 1 || header.width != source.width ||
        header.height != source.height ||
        // nvJPEG decodes some malformed files without an error (CheckJpegStructure): those,
        // and truncated ones, take the CPU path, whose decoder refuses them or fills in what
        // is missing as it always did.
        !CheckJpegStructure(bytes).ok()) {
      return std::nullopt;
    }
    jpegs.push_back(EncodedJpeg{bytes, source.width, source.height});
  }
  VITSERVE_ASSIGN_OR_RETURN(at::Tensor part,
                            AllocateInput(JpegPartSizes(jpegs), at::kByte, spec.pin_memory));
  FillJpegPart(jpegs, part);
  return std::optional<at::Tensor>(std::move(part));
}

}  // namespace

bool PreprocessingIsACopy(const google::protobuf::RepeatedPtrField<v1::Image>& images,
                          const PreprocessSpec& spec) {
  if (!spec.on_device || images.empty()) return false;
  const v1::Image& first = images.Get(0);
  const int64_t width = first.raw().width();
  const int64_t height = first.raw().height();
  // Either side alone bounds the copy (and keeps the products below from overflowing).
  if (width < 1 || height < 1 || width > kMaxInlineCopyBytes || height > kMaxInlineCopyBytes) {
    return false;
  }
  int64_t bytes = 0;
  for (const v1::Image& image : images) {
    if (image.data_case() != v1::Image::kRaw || image.raw().width() != width ||
        image.raw().height() != height) {
      return false;
    }
    bytes += width * height * 3;
    if (bytes > kMaxInlineCopyBytes) return false;
  }
  return DeviceResizes(static_cast<int>(width), static_cast<int>(height), spec);
}

absl::StatusOr<at::Tensor> DecodeAndPreprocess(
    const google::protobuf::RepeatedPtrField<v1::Image>& images, const ImageLimits& limits,
    const PreprocessSpec& spec) {
  VITSERVE_ASSIGN_OR_RETURN(std::vector<SourceImage> sources,
                            InspectImages(images, limits, ReduceTo(spec)));

  if (ForDevice(sources, spec)) {
    if (spec.gpu_jpeg_decode) {
      VITSERVE_ASSIGN_OR_RETURN(std::optional<at::Tensor> jpegs, JpegsForDevice(sources, spec));
      if (jpegs.has_value()) return *std::move(jpegs);
    }
    // The pixels as they are (page-locked for a model on CUDA): the model's instance resizes
    // and normalises them on its device.
    VITSERVE_ASSIGN_OR_RETURN(std::optional<at::Tensor> pixels,
                              PixelsForDevice(sources, limits, spec));
    if (pixels.has_value()) return *std::move(pixels);
  }

  // One [N,3,S,S] float tensor, each image preprocessed straight into its row (no per-image
  // tensor and no stacking copy); page-locked for a model on CUDA, which then copies it to the
  // GPU as is.
  VITSERVE_ASSIGN_OR_RETURN(
      at::Tensor batch,
      AllocateInput({images.size(), 3, spec.input_size, spec.input_size}, at::kFloat,
                    spec.pin_memory));
  float* next_row = batch.data_ptr<float>();
  const int64_t row_floats = 3 * spec.input_size * spec.input_size;
  for (int i = 0; i < images.size(); ++i) {
    absl::StatusOr<RgbImage> rgb =
        ImagePixels(sources[static_cast<size_t>(i)], limits, ReduceTo(spec));
    if (!rgb.ok()) return WithImageIndex(i, rgb.status());
    absl::StatusOr<CropGeometry> geometry = PreprocessInto(*rgb, spec, next_row);
    if (!geometry.ok()) return WithImageIndex(i, geometry.status());
    next_row += row_floats;
  }
  return batch;
}

absl::Status FillClassifications(const at::Tensor& rows, int64_t top_k,
                                 const ClassifierOutputLayout& layout,
                                 const std::vector<std::string>& labels,
                                 v1::ClassifyResponse* response) {
  absl::StatusOr<std::vector<std::vector<ClassScore>>> top =
      TopKOfOutput(rows.to(at::kCPU, at::kFloat), layout, top_k);
  if (!top.ok()) return top.status();
  for (const std::vector<ClassScore>& row : *top) {
    v1::Classification* result = response->add_results();
    for (const ClassScore& score : row) {
      v1::ClassScore* out = result->add_classes();
      out->set_index(static_cast<int32_t>(score.index));
      out->set_label(score.index >= 0 && score.index < static_cast<int64_t>(labels.size())
                         ? labels[score.index]
                         : absl::StrCat(score.index));
      out->set_score(score.score);
    }
  }
  return absl::OkStatus();
}

}  // namespace vitserve
