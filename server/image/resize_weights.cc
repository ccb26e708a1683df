#include "server/image/resize_weights.h"

#include <algorithm>
#include <cmath>

namespace vitserve {
namespace {

// Keys' cubic convolution kernel with OpenCV's a = -0.75, for a distance |x| in [0, 2).
double Cubic(double x) {
  constexpr double a = -0.75;
  x = std::abs(x);
  if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0;
  if (x < 2.0) return ((a * x - 5.0 * a) * x + 8.0 * a) * x - 4.0 * a;
  return 0.0;
}

// OpenCV resizes 8-bit images with interpolation coefficients in fixed point, multiples of
// 1/2048 (rounded to nearest); using the same quantised coefficients makes the matrices give its
// pixels, not just nearly its pixels, once the result is rounded to 8 bits.
constexpr double kCoefficientScale = 2048.0;
float Quantised(double coefficient) {
  return static_cast<float>(std::nearbyint(coefficient * kCoefficientScale) / kCoefficientScale);
}

// Adds the interpolating taps for resized pixel `r` (cubic or linear) to `row`.
void InterpolatingTaps(int64_t r, double scale, int64_t source_length, ResizeFilter filter,
                       float* row) {
  // Source coordinate of the resized pixel's centre, pixel centres at +0.5; in single precision,
  // as OpenCV computes it.
  const float x = static_cast<float>((static_cast<double>(r) + 0.5) * scale - 0.5);
  const int64_t left = static_cast<int64_t>(std::floor(x));
  const float t = x - static_cast<float>(left);
  auto clamp = [source_length](int64_t i) { return std::clamp<int64_t>(i, 0, source_length - 1); };
  if (filter == ResizeFilter::kLinear) {
    // cv::INTER_LINEAR: before the first and past the last pixel centre, the edge pixel alone.
    if (left < 0) {
      row[0] += 1.0f;
    } else if (left >= source_length - 1) {
      row[source_length - 1] += 1.0f;
    } else {
      row[left] += Quantised(1.0 - t);
      row[left + 1] += Quantised(t);
    }
    return;
  }
  for (int64_t k = -1; k <= 2; ++k) {
    row[clamp(left + k)] += Quantised(Cubic(static_cast<double>(t) - static_cast<double>(k)));
  }
}

// Adds the area-averaging weights for resized pixel `r` to `row`: the cell
// [r * scale, (r + 1) * scale) of the source, each source pixel weighted by the fraction of the
// cell it covers.
void AreaTaps(int64_t r, double scale, int64_t source_length, float* row) {
  const double begin = static_cast<double>(r) * scale;
  const double end = std::min(begin + scale, static_cast<double>(source_length));
  const double cell = end - begin;
  if (cell <= 0.0) {  // Only through rounding at the very end: take the last pixel.
    row[source_length - 1] += 1.0f;
    return;
  }
  const int64_t first = static_cast<int64_t>(std::floor(begin));
  const int64_t last = std::min(static_cast<int64_t>(std::ceil(end)), source_length);
  for (int64_t i = first; i < last; ++i) {
    const double covered =
        std::min(end, static_cast<double>(i + 1)) - std::max(begin, static_cast<double>(i));
    // OpenCV ignores slivers of a thousandth of a pixel or less (floating-point noise).
    if (covered > 1e-3) row[i] += static_cast<float>(covered / cell);
  }
}

}  // namespace

std::vector<float> ResizeCropMatrix(int64_t source_length, int64_t resized_length,
                                    int64_t crop_offset, int64_t output_length,
                                    ResizeFilter filter) {
  std::vector<float> weights(static_cast<size_t>(output_length * source_length), 0.0f);
  // OpenCV's step: the source length over the resized length, in double precision.
  const double scale = static_cast<double>(source_length) / static_cast<double>(resized_length);
  for (int64_t u = 0; u < output_length; ++u) {
    float* row = weights.data() + u * source_length;
    const int64_t r = u + crop_offset;
    if (filter == ResizeFilter::kArea) {
      AreaTaps(r, scale, source_length, row);
    } else {
      InterpolatingTaps(r, scale, source_length, filter, row);
    }
  }
  return weights;
}

}  // namespace vitserve
