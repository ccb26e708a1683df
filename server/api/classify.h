// The protocol-level steps of a Classify request, free of gRPC and of the model manager so they
// are unit-tested alone: validate the request, decode + preprocess its images into one batch,
// and turn logits into ranked {index, label, score} results.
//
// Thread-safety: pure functions. Errors: INVALID_ARGUMENT saying what was wrong and what is
// allowed; decode/preprocess errors keep their code (RESOURCE_EXHAUSTED for an image over the
// limits) with the image's index prefixed ("image 2: ...").
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "models/heads/topk.h"
#include "models/model_info.h"
#include "server/image/decode.h"
#include "server/image/preprocess.h"
#include "vitserve/v1/vision.pb.h"

namespace vitserve {

// Checks that `model` (serving `task` with `num_classes` classes) can answer `request` and
// returns the effective top_k: request.top_k(), or min(default_top_k, num_classes) when 0.
// INVALID_ARGUMENT: not a classification model, no images, top_k > num_classes.
absl::StatusOr<int64_t> ValidateClassifyRequest(const v1::ClassifyRequest& request,
                                                std::string_view model, ModelTask task,
                                                int64_t num_classes, int64_t default_top_k);

// Decodes (encoded or raw RGB8) and preprocesses every image: a [N,3,S,S] float32 CPU tensor.
// With spec.on_device, images that all share one size (and are at most kMaxDeviceResizeFactor
// times what the model resizes to) are returned as they are instead, a [N,H,W,3] uint8 tensor
// of RGB pixels for the model's instance to preprocess on its device; with
// spec.gpu_jpeg_decode too, such images that are all JPEGs the GPU decodes as the CPU would
// are returned still encoded, as a JPEG part (jpeg_part.h) for the instance's nvJPEG decoder.
// Each is page-locked with spec.pin_memory.
absl::StatusOr<at::Tensor> DecodeAndPreprocess(
    const google::protobuf::RepeatedPtrField<v1::Image>& images, const ImageLimits& limits,
    const PreprocessSpec& spec);

// Whether DecodeAndPreprocess(images, ..., spec) is only a check and one copy of at most
// kMaxInlineCopyBytes: every image raw RGB8 pixels of one size that the model's device
// preprocesses (spec.on_device, at most kMaxDeviceResizeFactor times what it resizes to). Such a
// request is cheaper to prepare on the thread that received it than to hand to the
// preprocessing pool and back (a thread wake-up each way); anything else, decoding above all,
// belongs on the pool.
inline constexpr int64_t kMaxInlineCopyBytes = int64_t{1} << 20;
bool PreprocessingIsACopy(const google::protobuf::RepeatedPtrField<v1::Image>& images,
                          const PreprocessSpec& spec);

// Fills `response->results` with the top_k softmax classes of each of the model's output
// `rows` (laid out as `layout` says: [N,C] logits, or with the device's top-k columns), best
// first; the label is labels[index], or the index itself when there is no such label.
absl::Status FillClassifications(const at::Tensor& rows, int64_t top_k,
                                 const ClassifierOutputLayout& layout,
                                 const std::vector<std::string>& labels,
                                 v1::ClassifyResponse* response);

}  // namespace vitserve
