#include "server/api/classify.h"

#include <ATen/ATen.h>

#include <cstring>
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

// One request image before preprocessing: raw pixels still in the request, or decoded.
struct SourceImage {
  std::string_view raw;  // Raw RGB8 bytes (validated), or empty when decoded.
  RgbImage decoded;
  int width = 0;
  int height = 0;
};

absl::StatusOr<SourceImage> ReadImage(const v1::Image& image, const ImageLimits& limits,
                                      const PreprocessSpec& spec) {
  SourceImage source;
  switch (image.data_case()) {
    case v1::Image::kEncoded: {
      // Classification needs no original coordinates, so large JPEGs may decode reduced.
      const int reduce_to = spec.jpeg_dct_downscale ? static_cast<int>(ResizedShortSide(spec)) : 0;
      absl::StatusOr<RgbImage> decoded = DecodeImage(image.encoded(), limits, reduce_to);
      if (!decoded.ok()) return decoded.status();
      source.decoded = *std::move(decoded);
      source.width = source.decoded.width();
      source.height = source.decoded.height();
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
      source.raw = image.raw().rgb8();
      return source;
    default:
      return absl::InvalidArgumentError(
          "empty; set either `encoded` (JPEG, PNG, BMP or WebP bytes) or `raw`");
  }
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

}  // namespace

absl::StatusOr<at::Tensor> DecodeAndPreprocess(
    const google::protobuf::RepeatedPtrField<v1::Image>& images, const ImageLimits& limits,
    const PreprocessSpec& spec) {
  std::vector<SourceImage> sources;
  sources.reserve(static_cast<size_t>(images.size()));
  for (int i = 0; i < images.size(); ++i) {
    absl::StatusOr<SourceImage> source = ReadImage(images[i], limits, spec);
    if (!source.ok()) return WithImageIndex(i, source.status());
    sources.push_back(*std::move(source));
  }
  if (sources.empty()) return absl::InvalidArgumentError("no images");

  if (ForDevice(sources, spec)) {
    // The pixels as they are, one [N,H,W,3] uint8 tensor (page-locked for a model on CUDA):
    // the model's instance resizes and normalises them on its device.
    const int64_t image_bytes = int64_t{sources.front().width} * sources.front().height * 3;
    VITSERVE_ASSIGN_OR_RETURN(
        at::Tensor pixels,
        Allocate({images.size(), sources.front().height, sources.front().width, 3}, at::kByte,
                 spec.pin_memory));
    uint8_t* next = pixels.data_ptr<uint8_t>();
    for (const SourceImage& source : sources) {
      std::memcpy(next, source.raw.empty() ? source.decoded.pixels.data
                                           : reinterpret_cast<const uint8_t*>(source.raw.data()),
                  static_cast<size_t>(image_bytes));
      next += image_bytes;
    }
    return pixels;
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
    SourceImage& source = sources[static_cast<size_t>(i)];
    if (!source.raw.empty()) {
      absl::StatusOr<RgbImage> copied =
          RgbImageFromRaw(source.raw, source.width, source.height, limits);
      if (!copied.ok()) return WithImageIndex(i, copied.status());
      source.decoded = *std::move(copied);
    }
    absl::StatusOr<CropGeometry> geometry = PreprocessInto(source.decoded, spec, next_row);
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
