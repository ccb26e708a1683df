// The protocol-level steps of a Segment request, free of gRPC and of the model manager so they
// are unit-tested alone: validate the request, decode and preprocess its images into one batch
// (the whole image stretched to the model's square input: a label map must cover all of it),
// and turn the model's per-class scores into label maps at each image's original resolution,
// encoded as the request asks.
//
// Thread-safety: pure functions. Errors: INVALID_ARGUMENT saying what was wrong and what is
// allowed; decode/preprocess errors keep their code with the image's index prefixed.
#pragma once

#include <ATen/core/Tensor.h>

#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "models/model_info.h"
#include "server/image/decode.h"
#include "server/image/dense_output.h"
#include "server/image/preprocess.h"
#include "server/api/image_input.h"
#include "vitserve/v1/vision.pb.h"

namespace vitserve {

// INVALID_ARGUMENT: not a segmentation model, no images, an unknown mask format.
absl::Status ValidateSegmentRequest(const v1::SegmentRequest& request, std::string_view model,
                                    ModelTask task);

// One SegmentationMap per row of `scores` ([N,C,h,w]): the best class of every original pixel,
// as a PNG or RAW (format); `response->labels` gets the class names.
absl::Status FillSegmentations(const at::Tensor& scores,
                               const std::vector<InputGeometry>& geometries,
                               v1::SegmentRequest::MaskFormat format,
                               const std::vector<std::string>& labels,
                               v1::SegmentResponse* response);

}  // namespace vitserve
