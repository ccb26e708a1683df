// Object detection on a zoo backbone, CenterNet-style (anchor-free): the FPN decoder of
// fpn.h over the backbone's feature maps, read out at its finest stride (4 for SHViT) as
//   channels [0, C):      per-class centre heat-map logits (sigmoid: an object of that class is
//                          centred in this cell),
//   channel C, C + 1:     log(width), log(height) of its box in input pixels,
//   channel C + 2, C + 3: the centre's position inside the cell, x then y (sigmoid, in cells).
// models/heads/center_decode.h turns that into boxes.
//
// Parameter names: "backbone." (the backbone's own), "decode_head." (the FPN; its classifier is
// the heat map), "box_head." (a 1x1 conv to the four box channels).
// Ownership/thread-safety/errors: see vision_model.h; the constructor throws c10::Error when
// the backbone has fewer feature levels than asked for.
#pragma once

#include <cstdint>
#include <memory>

#include "models/vision_model.h"

namespace vitserve {

struct DetectionOptions {
  int64_t num_classes = 1;  // Object classes (no background class).
  int64_t dim = 64;
  int64_t levels = 4;
};

// Takes the backbone (built without a classifier) and owns it.
std::shared_ptr<VisionModel> MakeDetectionModel(std::shared_ptr<VisionModel> backbone,
                                                const DetectionOptions& options);

}  // namespace vitserve
