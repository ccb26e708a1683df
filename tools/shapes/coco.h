// COCO-format ground truth for vitserve-shapes scenes (instances.json): what pycocotools and
// other COCO readers load. Category ids are the shape class indices (1..kNumShapeClasses);
// boxes are [x, y, width, height] and polygons flat [x1, y1, x2, y2, ...] in pixels, both of the
// whole shape; `area` counts the shape's visible pixels.
// Thread-safety: pure functions. Errors: none.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "tools/shapes/scene.h"

namespace vitserve::shapes {

struct AnnotatedImage {
  int64_t id = 0;         // COCO image id (>= 1).
  std::string file_name;  // Relative to the images folder.
  int width = 0;
  int height = 0;
  std::vector<ShapeInstance> shapes;
};

nlohmann::json CocoDataset(const std::vector<AnnotatedImage>& images);

}  // namespace vitserve::shapes
