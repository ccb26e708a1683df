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

namespace vitserve {
namespace {

absl::Status WithImageIndex(int index, const absl::Status& status) {
  return absl::Status(status.code(), absl::StrCat("image ", index, ": ", status.message()));
}

}  // namespace

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

// One request image, checked but not decoded yet: its raw pixels (validated) or its encoded
// bytes, and the size it will decode to (for a JPEG, after DCT reduction; before EXIF rotation,
// which DecodeAndPreprocess checks after decoding).
struct SourceImage {
  const v1::Image* image = nullptr;
  int width = 0;
  int height = 0;
};

int ReduceTo(const PreprocessSpec& spec) {
  // Classification needs no original coordinates, so large JPEGs may decode reduced.
  return spec.jpeg_dct_downscale ? static_cast<int>(ResizedShortSide(spec)) : 0;
}

absl::StatusOr<SourceImage> Inspect(const v1::Image& image, const ImageLimits& limits,
                                    const PreprocessSpec& spec) {
  SourceImage source;
  source.image = &image;
  switch (image.data_case()) {
    case v1::Image::kEncoded: {
      absl::StatusOr<EncodedImageInfo> info =
          InspectEncodedImage(image.encoded(), limits, ReduceTo(spec));
      if (!info.ok()) return info.status();
      source.width = static_cast<int>(info->width);
      source.height = static_cast<int>(info->height);
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

// The image's RGB pixels: decoded (large JPEGs reduced), or the raw bytes copied.
absl::StatusOr<RgbImage> Pixels(const SourceImage& source, const ImageLimits& limits,
                                const PreprocessSpec& spec) {
  if (source.image->data_case() == v1::Image::kEncoded) {
    return DecodeImage(source.image->encoded(), limits, ReduceTo(spec));
  }
  return RgbImageFromRaw(source.image->raw().rgb8(), source.width, source.height, limits);
}

absl::StatusOr<at::Tensor> Allocate(std::vector<int64_t> sizes, at::ScalarType dtype,
                                    bool pin_memory) {
  try {
    return at::empty(sizes, at::TensorOptions().dtype(dtype).pinned_memory(pin_memory));
  } catch (const c10::Error& e) {
    return absl::ResourceExhaustedError(
        absl::StrCat("cannot allocate the request's input: ", e.what_without_backtrace()));
  }
}

// Whether the model's device should preprocess these images: one size for all (they then form
// one [N,H,W,3] tensor) and at most kMaxDeviceResizeFactor times what the model resizes to.
bool ForDevice(const std::vector<SourceImage>& sources, const PreprocessSpec& spec) {
  if (!spec.on_device) return false;
  const SourceImage& first = sources.front();
  for (const SourceImage& source : sources) {
    if (source.width != first.width || source.height != first.height) return false;
  }
  return ComputeCropGeometry(first.width, first.height, spec).scale * kMaxDeviceResizeFactor >=
         1.0;
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
      Allocate({static_cast<int64_t>(sources.size()), height, width, 3}, at::kByte,
               spec.pin_memory));
  uint8_t* next = pixels.data_ptr<uint8_t>();
  for (size_t i = 0; i < sources.size(); ++i) {
    const SourceImage& source = sources[i];
    if (source.image->data_case() == v1::Image::kRaw) {
      // Straight from the request's bytes (Pixels would copy them into an image first).
      std::memcpy(next, source.image->raw().rgb8().data(), image_bytes);
    } else {
      absl::StatusOr<RgbImage> decoded = Pixels(source, limits, spec);
      if (!decoded.ok()) return WithImageIndex(static_cast<int>(i), decoded.status());
      if (decoded->width() != width || decoded->height() != height) return std::nullopt;
      std::memcpy(next, decoded->pixels.data, image_bytes);  // Decoded images are continuous.
    }
    next += image_bytes;
  }
  return std::optional<at::Tensor>(std::move(pixels));
}

}  // namespace

absl::StatusOr<at::Tensor> DecodeAndPreprocess(
    const google::protobuf::RepeatedPtrField<v1::Image>& images, const ImageLimits& limits,
    const PreprocessSpec& spec) {
  if (images.empty()) return absl::InvalidArgumentError("no images");
  if (images.size() > limits.max_images_per_request) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "request has ", images.size(), " images; the limit is ", limits.max_images_per_request,
        " per request (configurable with the server flag --max-images-per-request); send them "
        "in several requests"));
  }
  // Checked (and sized) first, decoded later one at a time, so that a request never holds more
  // than one decoded image besides its model input.
  std::vector<SourceImage> sources;
  sources.reserve(static_cast<size_t>(images.size()));
  for (int i = 0; i < images.size(); ++i) {
    absl::StatusOr<SourceImage> source = Inspect(images[i], limits, spec);
    if (!source.ok()) return WithImageIndex(i, source.status());
    sources.push_back(*source);
  }

  if (ForDevice(sources, spec)) {
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
      Allocate({images.size(), 3, spec.input_size, spec.input_size}, at::kFloat, spec.pin_memory));
  float* next_row = batch.data_ptr<float>();
  const int64_t row_floats = 3 * spec.input_size * spec.input_size;
  for (int i = 0; i < images.size(); ++i) {
    absl::StatusOr<RgbImage> rgb = Pixels(sources[static_cast<size_t>(i)], limits, spec);
    if (!rgb.ok()) return WithImageIndex(i, rgb.status());
    absl::StatusOr<CropGeometry> geometry = PreprocessInto(*rgb, spec, next_row);
    if (!geometry.ok()) return WithImageIndex(i, geometry.status());
    next_row += row_floats;
  }
  return batch;
}

absl::Status FillClassifications(const at::Tensor& logits, int64_t top_k,
                                 const std::vector<std::string>& labels,
                                 v1::ClassifyResponse* response) {
  absl::StatusOr<std::vector<std::vector<ClassScore>>> top =
      TopKSoftmax(logits.to(at::kCPU, at::kFloat), top_k);
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
