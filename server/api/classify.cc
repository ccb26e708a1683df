#include "server/api/classify.h"

#include <ATen/ATen.h>

#include <utility>

#include "absl/strings/str_cat.h"
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

absl::StatusOr<at::Tensor> DecodeAndPreprocess(
    const google::protobuf::RepeatedPtrField<v1::Image>& images, const ImageLimits& limits,
    const PreprocessSpec& spec) {
  // One [N,3,S,S] tensor, each image preprocessed straight into its row (no per-image tensor and
  // no stacking copy); page-locked for a model on CUDA, which then copies it to the GPU as is.
  at::Tensor batch;
  try {
    batch = at::empty({images.size(), 3, spec.input_size, spec.input_size},
                      at::TensorOptions().dtype(at::kFloat).pinned_memory(spec.pin_memory));
  } catch (const c10::Error& e) {
    return absl::ResourceExhaustedError(
        absl::StrCat("cannot allocate the request's input: ", e.what_without_backtrace()));
  }
  float* next_row = batch.data_ptr<float>();
  const int64_t row_floats = 3 * spec.input_size * spec.input_size;
  for (int i = 0; i < images.size(); ++i) {
    const v1::Image& image = images[i];
    absl::StatusOr<RgbImage> rgb;
    switch (image.data_case()) {
      case v1::Image::kEncoded:
        rgb = DecodeImage(image.encoded(), limits);
        break;
      case v1::Image::kRaw:
        rgb = RgbImageFromRaw(image.raw().rgb8(), static_cast<int>(image.raw().width()),
                              static_cast<int>(image.raw().height()), limits);
        break;
      default:
        return absl::InvalidArgumentError(absl::StrCat(
            "image ", i, ": empty; set either `encoded` (JPEG, PNG, BMP or WebP bytes) or `raw`"));
    }
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
