// A request's images on their way to a model input, shared by the Classify, Segment (and later
// Detect) paths: each image is checked and sized first (InspectImages), so that a request is
// refused before anything is decoded, then decoded one at a time (ImagePixels) into the input,
// which may be page-locked for a model on CUDA (AllocateInput).
//
// Thread-safety: pure functions. Errors: decode and limit errors keep their code
// (RESOURCE_EXHAUSTED for an image or request over the limits, INVALID_ARGUMENT otherwise) with
// the image's index prefixed ("image 2: ...").
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <optional>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "server/image/decode.h"
#include "server/image/dense_output.h"
#include "server/image/image.h"
#include "server/image/preprocess.h"
#include "vitserve/v1/vision.pb.h"

namespace vitserve {

// One request image, checked but not decoded yet: its raw pixels (validated) or its encoded
// bytes, and the size it will decode to (for a JPEG, after DCT reduction; before EXIF
// rotation, which callers check after decoding).
struct SourceImage {
  const v1::Image* image = nullptr;
  int width = 0;
  int height = 0;
  // An encoded image's header as read from the file (format, stored size, JPEG frame and EXIF
  // orientation); empty for raw pixels.
  std::optional<ImageHeader> header;
};

// "image <index>: <message>", same code.
absl::Status WithImageIndex(int index, const absl::Status& status);

// INVALID_ARGUMENT for no images, RESOURCE_EXHAUSTED for more than the limit allows.
absl::Status CheckImageCount(int count, const ImageLimits& limits);

// Every image of a request, checked against `limits` (count, bytes, pixels) and sized.
// `reduce_to` > 0 lets large JPEGs decode reduced in the DCT domain down to that shorter side
// (DecodeImage); 0 decodes them whole (callers that map outputs back to the original pixels).
absl::StatusOr<std::vector<SourceImage>> InspectImages(
    const google::protobuf::RepeatedPtrField<v1::Image>& images, const ImageLimits& limits,
    int reduce_to);

// The image's RGB pixels: decoded (with the same `reduce_to`), or the raw bytes copied.
absl::StatusOr<RgbImage> ImagePixels(const SourceImage& source, const ImageLimits& limits,
                                     int reduce_to);

// An uninitialised CPU tensor, page-locked when asked; RESOURCE_EXHAUSTED when it cannot be had.
absl::StatusOr<at::Tensor> AllocateInput(std::vector<int64_t> sizes, at::ScalarType dtype,
                                         bool pin_memory);

struct WholeImageBatch {
  at::Tensor input;                        // [N,3,S,S] float32 (page-locked with pin_memory).
  std::vector<InputGeometry> geometries;   // Per image: where its pixels went.
};

// For detection and segmentation: every image decoded whole (no DCT reduction: outputs map back
// to the original pixels) and preprocessed with `mode` into one batch.
absl::StatusOr<WholeImageBatch> DecodeAndPreprocessWhole(
    const google::protobuf::RepeatedPtrField<v1::Image>& images, const ImageLimits& limits,
    const PreprocessSpec& spec, ResizeMode mode);

}  // namespace vitserve
