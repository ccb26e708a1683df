#include "tools/shapes/coco.h"

#include <cmath>
#include <string>

namespace vitserve::shapes {
namespace {

// Hundredths of a pixel: enough for any evaluation, and short in the file.
double Rounded(double value) { return std::round(value * 100.0) / 100.0; }

}  // namespace

nlohmann::json CocoDataset(const std::vector<AnnotatedImage>& images) {
  nlohmann::json categories = nlohmann::json::array();
  for (int c = 1; c <= kNumShapeClasses; ++c) {
    categories.push_back(
        {{"id", c}, {"name", std::string(kClassNames[c])}, {"supercategory", "shape"}});
  }
  nlohmann::json image_list = nlohmann::json::array();
  nlohmann::json annotations = nlohmann::json::array();
  int64_t annotation_id = 0;
  for (const AnnotatedImage& image : images) {
    image_list.push_back({{"id", image.id},
                          {"file_name", image.file_name},
                          {"width", image.width},
                          {"height", image.height}});
    for (const ShapeInstance& shape : image.shapes) {
      nlohmann::json polygon = nlohmann::json::array();
      for (const cv::Point2f& p : shape.polygon) {
        polygon.push_back(Rounded(p.x));
        polygon.push_back(Rounded(p.y));
      }
      annotations.push_back(
          {{"id", ++annotation_id},
           {"image_id", image.id},
           {"category_id", static_cast<int>(shape.shape_class)},
           {"bbox",
            {Rounded(shape.box.x), Rounded(shape.box.y), Rounded(shape.box.width),
             Rounded(shape.box.height)}},
           {"area", shape.visible_pixels},
           {"segmentation", nlohmann::json::array({polygon})},
           {"iscrowd", 0}});
    }
  }
  return {{"info", {{"description", "vitserve-shapes synthetic scenes"}}},
          {"images", image_list},
          {"annotations", annotations},
          {"categories", categories}};
}

}  // namespace vitserve::shapes
