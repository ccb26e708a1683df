// Resize-and-crop as matrices: the weights that let a resize followed by a centre crop run as
// two matrix products (rows, then columns) on any device, e.g. on the GPU for a whole batch of
// uint8 images (server/image/tensor_preprocess.h).
//
// Each matrix reproduces what cv::resize does along one axis with the filter that Preprocess
// picks (see preprocess.h), without OpenCV's 8-bit rounding of the result:
//   kArea   (shrinking): the average of the source pixels the output pixel's cell covers, each
//                        weighted by its covered fraction (cv::INTER_AREA);
//   kCubic  (enlarging): Keys' cubic convolution with a = -0.75 over the four nearest source
//                        pixels, edge pixels repeated (cv::INTER_CUBIC);
//   kLinear (enlarging): the two nearest source pixels, edge pixels repeated (cv::INTER_LINEAR).
// Source and output pixel centres are at +0.5, as in OpenCV, PIL and torchvision.
//
// Thread-safety: pure functions.
#pragma once

#include <cstdint>
#include <vector>

namespace vitserve {

enum class ResizeFilter { kArea, kCubic, kLinear };

// Row-major [output_length, source_length] weights: output pixel u (0-based) of the crop is
// sum_i W[u * source_length + i] * source[i], where the crop is pixels
// [crop_offset, crop_offset + output_length) of the source resized to resized_length.
// Needs 1 <= source_length, 1 <= output_length and 0 <= crop_offset with
// crop_offset + output_length <= resized_length (checked by the caller's geometry).
std::vector<float> ResizeCropMatrix(int64_t source_length, int64_t resized_length,
                                    int64_t crop_offset, int64_t output_length,
                                    ResizeFilter filter);

}  // namespace vitserve
