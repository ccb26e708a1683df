// RgbImage: a decoded 8-bit RGB image, the currency between decode and preprocess.
//
// Ownership: `pixels` owns its memory (never a view into a request buffer).
// Thread-safety: a plain value; distinct objects may be used from different threads.
#pragma once

#include <opencv2/core/mat.hpp>

namespace vitserve {

struct RgbImage {
  cv::Mat pixels;  // CV_8UC3, RGB channel order, continuous rows.
  int width() const { return pixels.cols; }
  int height() const { return pixels.rows; }
};

}  // namespace vitserve
