// vitserve-shapes' scenes (tools/shapes/scene.h) and their COCO form (tools/shapes/coco.h).
#include <cmath>
#include <set>

#include <opencv2/imgproc.hpp>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tools/shapes/coco.h"
#include "tools/shapes/scene.h"

namespace vitserve::shapes {
namespace {

TEST(ShapeOutlineTest, VertexCountsAndRadius) {
  const cv::Point2f centre(100, 80);
  const std::vector<std::pair<ShapeClass, size_t>> expected = {
      {ShapeClass::kCircle, 48}, {ShapeClass::kSquare, 4}, {ShapeClass::kTriangle, 3},
      {ShapeClass::kStar, 10},   {ShapeClass::kHexagon, 6}};
  for (const auto& [shape_class, vertices] : expected) {
    const std::vector<cv::Point2f> outline = ShapeOutline(shape_class, centre, 20.0f, 0.3f);
    ASSERT_EQ(outline.size(), vertices) << static_cast<int>(shape_class);
    float farthest = 0;
    for (const cv::Point2f& p : outline) farthest = std::max(farthest, static_cast<float>(cv::norm(p - centre)));
    EXPECT_NEAR(farthest, 20.0f, 1e-3);
  }
  // Star: inner vertices at 45% of the radius.
  const std::vector<cv::Point2f> star = ShapeOutline(ShapeClass::kStar, centre, 20.0f, 0.0f);
  EXPECT_NEAR(cv::norm(star[1] - centre), 9.0, 1e-3);
  // Angle 0 puts the first vertex to the right of the centre; a quarter turn puts it above
  // (screen y grows downwards).
  EXPECT_NEAR(ShapeOutline(ShapeClass::kSquare, centre, 10.0f, 0.0f)[0].x, 110.0f, 1e-4);
  EXPECT_NEAR(ShapeOutline(ShapeClass::kSquare, centre, 10.0f, static_cast<float>(M_PI / 2))[0].y,
              70.0f, 1e-4);
}

TEST(GenerateSceneTest, SameSeedAndIndexGiveTheSameScene) {
  const SceneOptions options;
  const absl::StatusOr<Scene> a = GenerateScene(options, 7, 3);
  const absl::StatusOr<Scene> b = GenerateScene(options, 7, 3);
  const absl::StatusOr<Scene> other = GenerateScene(options, 8, 3);
  ASSERT_TRUE(a.ok() && b.ok() && other.ok());
  ASSERT_EQ(a->image.size(), b->image.size());
  EXPECT_EQ(cv::norm(a->image, b->image, cv::NORM_INF), 0.0);
  EXPECT_EQ(cv::norm(a->class_map, b->class_map, cv::NORM_INF), 0.0);
  ASSERT_EQ(a->shapes.size(), b->shapes.size());
  EXPECT_TRUE(a->image.size() != other->image.size() ||
              cv::norm(a->image, other->image, cv::NORM_INF) > 0);
}

// Ground truth agrees with the pixels: classes in range, every shape inside the image, visible
// for at least 70% of its own area and found under its class in the map, and the map's shape
// pixels are exactly the shapes' visible pixels.
TEST(GenerateSceneTest, GroundTruthMatchesTheClassMap) {
  SceneOptions options;
  int64_t total_shapes = 0;
  std::set<int> classes_seen;
  for (int64_t index = 0; index < 40; ++index) {
    SCOPED_TRACE(index);
    const absl::StatusOr<Scene> scene = GenerateScene(options, 11, index);
    ASSERT_TRUE(scene.ok()) << scene.status();
    const cv::Size size = scene->image.size();
    EXPECT_GE(size.width, 256);
    EXPECT_LE(size.width, 640);
    EXPECT_GE(size.height, 192);
    EXPECT_LE(size.height, 480);
    EXPECT_EQ(scene->class_map.size(), size);
    EXPECT_EQ(scene->image.type(), CV_8UC3);
    EXPECT_EQ(scene->class_map.type(), CV_8UC1);
    ASSERT_FALSE(scene->shapes.empty());
    EXPECT_LE(scene->shapes.size(), 6u);
    double max_class = 0;
    cv::minMaxLoc(scene->class_map, nullptr, &max_class);
    EXPECT_LE(max_class, kNumShapeClasses);
    int64_t visible_total = 0;
    for (const ShapeInstance& shape : scene->shapes) {
      classes_seen.insert(static_cast<int>(shape.shape_class));
      EXPECT_GE(shape.box.x, 0);
      EXPECT_GE(shape.box.y, 0);
      EXPECT_LE(shape.box.br().x, size.width);
      EXPECT_LE(shape.box.br().y, size.height);
      const double area = cv::contourArea(shape.polygon);
      EXPECT_GE(shape.visible_pixels, (1.0 - kMaxOccludedFraction) * area * 0.9)
          << "class " << static_cast<int>(shape.shape_class);
      // The map under the shape's box (widened by a pixel: rasterising keeps edge pixels
      // whose centres are just outside the outline) holds its class on its visible pixels.
      const cv::Rect box =
          cv::Rect(cv::Point(static_cast<int>(std::floor(shape.box.x)) - 1,
                             static_cast<int>(std::floor(shape.box.y)) - 1),
                   cv::Point(static_cast<int>(std::ceil(shape.box.br().x)) + 1,
                             static_cast<int>(std::ceil(shape.box.br().y)) + 1)) &
          cv::Rect(0, 0, size.width, size.height);
      cv::Mat same_class;
      cv::compare(scene->class_map(box), static_cast<int>(shape.shape_class), same_class,
                  cv::CMP_EQ);
      EXPECT_GE(cv::countNonZero(same_class), shape.visible_pixels);
      visible_total += shape.visible_pixels;
    }
    EXPECT_EQ(cv::countNonZero(scene->class_map), visible_total);
    total_shapes += static_cast<int64_t>(scene->shapes.size());
  }
  EXPECT_GT(total_shapes, 80);  // About 3.5 per scene on average.
  EXPECT_EQ(classes_seen.size(), static_cast<size_t>(kNumShapeClasses));
}

TEST(GenerateSceneTest, FixedSizeAndShapeLimit) {
  SceneOptions options;
  options.width = 320;
  options.height = 240;
  options.max_shapes = 1;
  for (int64_t index = 0; index < 5; ++index) {
    const absl::StatusOr<Scene> scene = GenerateScene(options, 1, index);
    ASSERT_TRUE(scene.ok());
    EXPECT_EQ(scene->image.cols, 320);
    EXPECT_EQ(scene->image.rows, 240);
    EXPECT_EQ(scene->shapes.size(), 1u);
  }
}

TEST(GenerateSceneTest, RejectsBadOptions) {
  SceneOptions one_side;
  one_side.width = 100;
  EXPECT_EQ(GenerateScene(one_side, 0, 0).status().code(), absl::StatusCode::kInvalidArgument);
  SceneOptions tiny;
  tiny.width = tiny.height = 8;
  EXPECT_EQ(GenerateScene(tiny, 0, 0).status().code(), absl::StatusCode::kInvalidArgument);
  SceneOptions no_shapes;
  no_shapes.max_shapes = 0;
  EXPECT_EQ(GenerateScene(no_shapes, 0, 0).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(CocoDatasetTest, ImagesAnnotationsAndCategories) {
  ShapeInstance star{ShapeClass::kStar, {{10.123f, 20.0f}, {30.0f, 20.0f}, {20.0f, 40.456f}},
                     cv::Rect2f(10.123f, 20.0f, 19.877f, 20.456f), 123};
  ShapeInstance square{ShapeClass::kSquare, {{1, 1}, {5, 1}, {5, 5}, {1, 5}},
                       cv::Rect2f(1, 1, 4, 4), 16};
  const nlohmann::json coco = CocoDataset(
      {AnnotatedImage{1, "000001.jpg", 64, 48, {star, square}}, AnnotatedImage{2, "000002.jpg", 32, 32, {}}});
  ASSERT_EQ(coco["images"].size(), 2u);
  EXPECT_EQ(coco["images"][0]["file_name"], "000001.jpg");
  EXPECT_EQ(coco["images"][0]["width"], 64);
  EXPECT_EQ(coco["images"][0]["height"], 48);
  ASSERT_EQ(coco["annotations"].size(), 2u);
  const nlohmann::json& first = coco["annotations"][0];
  EXPECT_EQ(first["id"], 1);
  EXPECT_EQ(first["image_id"], 1);
  EXPECT_EQ(first["category_id"], 4);
  EXPECT_EQ(first["area"], 123);
  EXPECT_EQ(first["iscrowd"], 0);
  EXPECT_DOUBLE_EQ(first["bbox"][0].get<double>(), 10.12);
  EXPECT_DOUBLE_EQ(first["bbox"][3].get<double>(), 20.46);
  ASSERT_EQ(first["segmentation"].size(), 1u);
  EXPECT_EQ(first["segmentation"][0].size(), 6u);
  EXPECT_DOUBLE_EQ(first["segmentation"][0][5].get<double>(), 40.46);
  EXPECT_EQ(coco["annotations"][1]["id"], 2);
  EXPECT_EQ(coco["annotations"][1]["category_id"], 2);
  ASSERT_EQ(coco["categories"].size(), static_cast<size_t>(kNumShapeClasses));
  EXPECT_EQ(coco["categories"][0]["id"], 1);
  EXPECT_EQ(coco["categories"][0]["name"], "circle");
  EXPECT_EQ(coco["categories"][4]["name"], "hexagon");
}

}  // namespace
}  // namespace vitserve::shapes
