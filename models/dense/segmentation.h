// Semantic segmentation on a zoo backbone: a light FPN decoder over the backbone's feature maps
// (VisionModel::FeatureLevels/Features), the shape of decoder the SHViT and Vim papers put on
// their backbones for ADE20K (UperNet/FPN-style), small enough for synthetic scenes.
//
//   lateral: a 1x1 conv (with bias) per level to `dim` channels;
//   top-down: each level plus its coarser neighbour upsampled (bilinear) to its size;
//   smooth: 3x3 conv (no bias) + BatchNorm + ReLU per level;
//   fuse: every level upsampled to the finest one and summed; classifier: 1x1 conv to classes.
// The logits come out at the finest level's stride (4 for SHViT): [N, classes, H/4, W/4]
// (rounded up); callers upsample them to the image (server/image/dense_output.h).
//
// Parameter names: the backbone's own under "backbone." (for SHViT, timm's names without the
// classifier), the decoder's under "decode_head." (lateral.i, smooth.i.{0,1}, classifier).
// Ownership/thread-safety/errors: see vision_model.h; the constructor throws c10::Error when
// the backbone has fewer feature levels than asked for.
#pragma once

#include <cstdint>
#include <memory>

#include "models/vision_model.h"

namespace vitserve {

struct SegmentationOptions {
  int64_t num_classes = 2;  // Including the background (class 0).
  int64_t dim = 64;         // Decoder channels.
  int64_t levels = 4;       // The backbone's finest levels the decoder uses.
};

// Takes the backbone (built without a classifier) and owns it.
std::shared_ptr<VisionModel> MakeSegmentationModel(std::shared_ptr<VisionModel> backbone,
                                                   const SegmentationOptions& options);

}  // namespace vitserve
