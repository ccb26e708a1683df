// Synthetic scenes for training and scoring detection, segmentation and classification models
// (vitserve-shapes): coloured, textured, rotated shapes of a few classes on varied backgrounds,
// with exact ground truth (each shape's polygon and box, and a per-pixel class map).
//
// Ground truth: a shape's polygon and box are the whole shape (shapes lie inside the image and
// may be partly covered by later ones, by at most kMaxOccludedFraction of their area); the class
// map holds what is visible (0 = background). Everything follows from the seed: the same
// (seed, index) gives the same scene on the same build.
//
// Thread-safety: the functions are pure; GenerateScene may run concurrently for different
// indices. Errors: invalid options give InvalidArgumentError.
#pragma once

#include <array>
#include <cstdint>
#include <string_view>
#include <vector>

#include <opencv2/core.hpp>

#include "absl/status/statusor.h"

namespace vitserve::shapes {

// Class indices: 0 is the background; the shapes are 1..kNumShapeClasses (COCO category ids
// and the models' class indices alike).
enum class ShapeClass : int { kCircle = 1, kSquare, kTriangle, kStar, kHexagon };
inline constexpr int kNumShapeClasses = 5;
// Names by class index, index 0 the background.
inline constexpr std::array<std::string_view, kNumShapeClasses + 1> kClassNames = {
    "background", "circle", "square", "triangle", "star", "hexagon"};

// A shape may lose at most this fraction of its pixels to the shapes drawn over it.
inline constexpr double kMaxOccludedFraction = 0.3;

struct SceneOptions {
  // Image size; 0 for both: a random size per image, width 256..640, height 192..480.
  int width = 0;
  int height = 0;
  int min_shapes = 1;
  int max_shapes = 6;
};

struct ShapeInstance {
  ShapeClass shape_class = ShapeClass::kCircle;
  std::vector<cv::Point2f> polygon;  // Image coordinates (pixel centres at +0.5), inside it.
  cv::Rect2f box;                    // The polygon's bounds.
  int64_t visible_pixels = 0;        // Its pixels in the class map.
};

struct Scene {
  cv::Mat image;     // CV_8UC3, RGB.
  cv::Mat class_map;  // CV_8UC1, same size: class index per pixel, 0 = background.
  std::vector<ShapeInstance> shapes;  // In drawing order (later ones on top).
};

// The outline of a shape of `shape_class` centred at `centre` with circumradius `radius`,
// rotated by `angle_radians` (counter-clockwise on screen). Circles are 48-gons, stars have 5
// points (10 vertices).
std::vector<cv::Point2f> ShapeOutline(ShapeClass shape_class, cv::Point2f centre, float radius,
                                      float angle_radians);

// Scene number `index` of the set made with `seed`.
absl::StatusOr<Scene> GenerateScene(const SceneOptions& options, uint64_t seed, int64_t index);

// A random generator state for (seed, index): SplitMix64 of both, so neighbouring seeds and
// indices give unrelated streams and scene i does not depend on how many scenes are made.
uint64_t SceneSeed(uint64_t seed, int64_t index);

}  // namespace vitserve::shapes
