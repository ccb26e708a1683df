#include "tools/shapes/scene.h"

#include <algorithm>
#include <cmath>
#include <random>
#include <utility>

#include <opencv2/imgproc.hpp>

#include "absl/strings/str_cat.h"

namespace vitserve::shapes {
namespace {

constexpr float kPi = 3.14159265358979f;
constexpr int kMaxPlacementTries = 100;

// Uniform draws from one scene's generator.
class Random {
 public:
  explicit Random(uint64_t state) : engine_(state), pixel_noise_(engine_()) {}
  double Uniform(double lo, double hi) { return std::uniform_real_distribution<double>(lo, hi)(engine_); }
  int Int(int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(engine_); }  // [lo, hi]
  bool Chance(double p) { return Uniform(0.0, 1.0) < p; }
  cv::Vec3b Colour() {
    return cv::Vec3b(static_cast<uint8_t>(Int(0, 255)), static_cast<uint8_t>(Int(0, 255)),
                     static_cast<uint8_t>(Int(0, 255)));
  }
  // OpenCV's generator for per-pixel noise (much faster than a distribution per pixel), seeded
  // from this one: a local object, not OpenCV's thread-wide cv::theRNG().
  cv::RNG& pixel_noise() { return pixel_noise_; }

 private:
  std::mt19937_64 engine_;
  cv::RNG pixel_noise_;
};

int ColourDistance(const cv::Vec3b& a, const cv::Vec3b& b) {
  return std::abs(a[0] - b[0]) + std::abs(a[1] - b[1]) + std::abs(a[2] - b[2]);
}

cv::Vec3b Shifted(const cv::Vec3b& colour, int delta) {
  return cv::Vec3b(cv::saturate_cast<uint8_t>(colour[0] + delta),
                   cv::saturate_cast<uint8_t>(colour[1] + delta),
                   cv::saturate_cast<uint8_t>(colour[2] + delta));
}

// Adds zero-mean Gaussian noise of `sigma` grey levels to `image` (CV_8UC3).
void AddNoise(cv::Mat& image, double sigma, Random& random) {
  cv::Mat noise(image.size(), CV_16SC3);
  random.pixel_noise().fill(noise, cv::RNG::NORMAL, 0.0, sigma);
  cv::Mat widened;
  image.convertTo(widened, CV_16SC3);
  widened += noise;
  widened.convertTo(image, CV_8UC3);
}

// A background: flat, a gradient, a low-contrast checkerboard or soft blobs, with mild noise.
cv::Mat Background(cv::Size size, Random& random) {
  cv::Mat image(size, CV_8UC3);
  const cv::Vec3b a = random.Colour();
  const cv::Vec3b b = Shifted(a, random.Int(-60, 60));
  switch (random.Int(0, 3)) {
    case 0:
      image.setTo(cv::Scalar(a[0], a[1], a[2]));
      break;
    case 1: {  // Linear gradient from a to another colour along a random direction.
      const cv::Vec3b c = random.Colour();
      const double angle = random.Uniform(0, 2 * kPi);
      const double dx = std::cos(angle), dy = std::sin(angle);
      const double span = std::abs(dx) * size.width + std::abs(dy) * size.height;
      for (int y = 0; y < size.height; ++y) {
        for (int x = 0; x < size.width; ++x) {
          double t = (dx * x + dy * y) / span;
          t = t - std::floor(t);
          for (int ch = 0; ch < 3; ++ch) {
            image.at<cv::Vec3b>(y, x)[ch] = static_cast<uint8_t>(a[ch] + t * (c[ch] - a[ch]));
          }
        }
      }
      break;
    }
    case 2: {  // Checkerboard of two close colours.
      const int cell = random.Int(8, 48);
      for (int y = 0; y < size.height; ++y) {
        for (int x = 0; x < size.width; ++x) {
          image.at<cv::Vec3b>(y, x) = ((x / cell + y / cell) % 2 == 0) ? a : b;
        }
      }
      break;
    }
    default: {  // Soft blobs of close colours.
      image.setTo(cv::Scalar(a[0], a[1], a[2]));
      const int blobs = random.Int(3, 12);
      for (int i = 0; i < blobs; ++i) {
        const cv::Vec3b c = Shifted(a, random.Int(-50, 50));
        cv::circle(image, cv::Point(random.Int(0, size.width - 1), random.Int(0, size.height - 1)),
                   random.Int(10, std::max(11, std::min(size.width, size.height) / 3)),
                   cv::Scalar(c[0], c[1], c[2]), cv::FILLED);
      }
      cv::GaussianBlur(image, image, cv::Size(0, 0), 6.0);
      break;
    }
  }
  AddNoise(image, random.Uniform(0.0, 6.0), random);
  return image;
}

// The fill of a shape over the whole image (only its pixels are used): flat, stripes, speckles
// or a gradient, starting from `colour`.
cv::Mat Texture(cv::Size size, const cv::Vec3b& colour, Random& random) {
  cv::Mat texture(size, CV_8UC3, cv::Scalar(colour[0], colour[1], colour[2]));
  const cv::Vec3b other = Shifted(colour, random.Chance(0.5) ? 45 : -45);
  switch (random.Int(0, 3)) {
    case 0:
      break;
    case 1: {  // Stripes of the other colour.
      const double angle = random.Uniform(0, kPi);
      const int spacing = random.Int(6, 18);
      const int thickness = std::max(1, spacing / random.Int(2, 4));
      const int reach = size.width + size.height;
      const cv::Point2d along(std::cos(angle), std::sin(angle));
      const cv::Point2d across(-along.y, along.x);
      for (int k = -reach; k <= reach; k += spacing) {
        const cv::Point2d mid = across * k;
        cv::line(texture, mid - along * reach, mid + along * reach,
                 cv::Scalar(other[0], other[1], other[2]), thickness);
      }
      break;
    }
    case 2: {  // Speckles.
      const int count = size.area() / random.Int(20, 60);
      for (int i = 0; i < count; ++i) {
        texture.at<cv::Vec3b>(random.Int(0, size.height - 1), random.Int(0, size.width - 1)) = other;
      }
      break;
    }
    default: {  // Vertical gradient towards the other colour.
      for (int y = 0; y < size.height; ++y) {
        const double t = static_cast<double>(y) / std::max(1, size.height - 1);
        cv::Vec3b row;
        for (int ch = 0; ch < 3; ++ch) {
          row[ch] = static_cast<uint8_t>(colour[ch] + t * (other[ch] - colour[ch]));
        }
        texture.row(y).setTo(cv::Scalar(row[0], row[1], row[2]));
      }
      break;
    }
  }
  return texture;
}

// The polygon's pixels (centres at +0.5 in its coordinates) as a CV_8UC1 mask of `size`.
cv::Mat Rasterise(const std::vector<cv::Point2f>& polygon, cv::Size size) {
  constexpr int kShift = 4;  // Sub-pixel vertex precision: 1/16 pixel.
  std::vector<cv::Point> fixed;
  fixed.reserve(polygon.size());
  for (const cv::Point2f& p : polygon) {
    fixed.emplace_back(static_cast<int>(std::lround((p.x - 0.5f) * (1 << kShift))),
                       static_cast<int>(std::lround((p.y - 0.5f) * (1 << kShift))));
  }
  cv::Mat mask = cv::Mat::zeros(size, CV_8UC1);
  cv::fillPoly(mask, std::vector<std::vector<cv::Point>>{fixed}, cv::Scalar(255), cv::LINE_8, kShift);
  return mask;
}

// The smallest axis-aligned rectangle holding every point.
cv::Rect2f Bounds(const std::vector<cv::Point2f>& points) {
  float left = points.front().x, right = left, top = points.front().y, bottom = top;
  for (const cv::Point2f& p : points) {
    left = std::min(left, p.x);
    right = std::max(right, p.x);
    top = std::min(top, p.y);
    bottom = std::max(bottom, p.y);
  }
  return cv::Rect2f(left, top, right - left, bottom - top);
}

}  // namespace

uint64_t SceneSeed(uint64_t seed, int64_t index) {
  auto split_mix = [](uint64_t x) {
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
  };
  return split_mix(split_mix(seed) ^ static_cast<uint64_t>(index));
}

std::vector<cv::Point2f> ShapeOutline(ShapeClass shape_class, cv::Point2f centre, float radius,
                                      float angle_radians) {
  std::vector<float> radii;  // Per vertex, counter-clockwise from angle 0.
  switch (shape_class) {
    case ShapeClass::kCircle:
      radii.assign(48, radius);
      break;
    case ShapeClass::kSquare:
      radii.assign(4, radius);
      break;
    case ShapeClass::kTriangle:
      radii.assign(3, radius);
      break;
    case ShapeClass::kStar:
      for (int i = 0; i < 10; ++i) radii.push_back(i % 2 == 0 ? radius : 0.45f * radius);
      break;
    case ShapeClass::kHexagon:
      radii.assign(6, radius);
      break;
  }
  std::vector<cv::Point2f> outline;
  const int n = static_cast<int>(radii.size());
  for (int i = 0; i < n; ++i) {
    const float angle = angle_radians + 2.0f * kPi * static_cast<float>(i) / static_cast<float>(n);
    // Screen y grows downwards: counter-clockwise on screen is -sin.
    outline.emplace_back(centre.x + radii[i] * std::cos(angle), centre.y - radii[i] * std::sin(angle));
  }
  return outline;
}

absl::StatusOr<Scene> GenerateScene(const SceneOptions& options, uint64_t seed, int64_t index) {
  if ((options.width == 0) != (options.height == 0) || options.width < 0 || options.height < 0 ||
      (options.width > 0 && (options.width < 32 || options.height < 32 || options.width > 8192 ||
                             options.height > 8192))) {
    return absl::InvalidArgumentError(absl::StrCat(
        "image size must be 32..8192 on each side (or 0x0 for random sizes), got ",
        options.width, "x", options.height));
  }
  if (options.max_shapes < 1 || options.max_shapes > 64) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_shapes must be 1..64, got ", options.max_shapes));
  }
  Random random(SceneSeed(seed, index));
  const cv::Size size = options.width > 0 ? cv::Size(options.width, options.height)
                                          : cv::Size(random.Int(256, 640), random.Int(192, 480));
  Scene scene;
  scene.image = Background(size, random);
  scene.class_map = cv::Mat::zeros(size, CV_8UC1);
  std::vector<cv::Mat> visible;    // Per shape: its pixels not yet covered.
  std::vector<int64_t> full_area;  // Per shape: its pixels when drawn.
  const int wanted = random.Int(1, options.max_shapes);
  const int short_side = std::min(size.width, size.height);
  for (int placed = 0, tries = 0; placed < wanted && tries < kMaxPlacementTries; ++tries) {
    const auto shape_class = static_cast<ShapeClass>(random.Int(1, kNumShapeClasses));
    const float radius = static_cast<float>(
        std::max(10.0, random.Uniform(0.07, 0.25) * short_side));
    const cv::Point2f centre(static_cast<float>(random.Uniform(0, size.width)),
                             static_cast<float>(random.Uniform(0, size.height)));
    std::vector<cv::Point2f> outline =
        ShapeOutline(shape_class, centre, radius, static_cast<float>(random.Uniform(0, 2 * kPi)));
    const cv::Rect2f box = Bounds(outline);
    if (box.x < 1 || box.y < 1 || box.br().x > size.width - 1 || box.br().y > size.height - 1) {
      continue;  // Shapes lie wholly inside the image.
    }
    cv::Mat mask = Rasterise(outline, size);
    const int64_t area = cv::countNonZero(mask);
    if (area < 50) continue;
    bool covers_too_much = false;
    for (size_t i = 0; i < visible.size() && !covers_too_much; ++i) {
      cv::Mat left;
      cv::bitwise_and(visible[i], ~mask, left);
      covers_too_much = cv::countNonZero(left) < (1.0 - kMaxOccludedFraction) * full_area[i];
    }
    if (covers_too_much) continue;
    // A colour that stands out from what is under the shape.
    const cv::Scalar under = cv::mean(scene.image, mask);
    const cv::Vec3b under_colour(static_cast<uint8_t>(under[0]), static_cast<uint8_t>(under[1]),
                                 static_cast<uint8_t>(under[2]));
    cv::Vec3b colour = random.Colour();
    for (int attempt = 0; attempt < 32 && ColourDistance(colour, under_colour) < 150; ++attempt) {
      colour = random.Colour();
    }
    Texture(size, colour, random).copyTo(scene.image, mask);
    scene.class_map.setTo(cv::Scalar(static_cast<int>(shape_class)), mask);
    for (cv::Mat& other : visible) cv::bitwise_and(other, ~mask, other);
    visible.push_back(mask);
    full_area.push_back(area);
    scene.shapes.push_back(ShapeInstance{shape_class, std::move(outline), box, 0});
    ++placed;
  }
  for (size_t i = 0; i < scene.shapes.size(); ++i) {
    scene.shapes[i].visible_pixels = cv::countNonZero(visible[i]);
  }
  if (random.Chance(0.5)) cv::GaussianBlur(scene.image, scene.image, cv::Size(3, 3), 0.0);
  AddNoise(scene.image, random.Uniform(0.0, 4.0), random);
  return scene;
}

}  // namespace vitserve::shapes
