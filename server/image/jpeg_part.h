// A Classify request's JPEG files on their way, still encoded, to a model instance that decodes
// them on its GPU (nvJPEG; ModelInstance with image_preprocess.gpu_jpeg_decode). The batcher
// moves a request's input as one tensor, so the files travel as one uint8 tensor [N, W]: row i
// holds the i-th file behind a 16-byte prefix (its decoded width and height as int32, its
// length in bytes as int64, in this machine's byte order: the tensor never leaves the process)
// and is zero-padded to W, the longest file's prefix and bytes.
//
// The tensor's rank (2) tells it apart from a batch's other parts: float32 [N,3,S,S] rows and
// uint8 [N,H,W,3] pixels.
// Thread-safety: pure functions.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string_view>
#include <vector>

namespace vitserve {

// One encoded JPEG and the size it decodes to (as stored: no EXIF orientation).
struct EncodedJpeg {
  std::string_view bytes;
  int width = 0;
  int height = 0;
};

inline constexpr int64_t kJpegPartPrefixBytes = 16;

// The sizes of the part that holds `jpegs` (at least one): {N, W}.
std::vector<int64_t> JpegPartSizes(const std::vector<EncodedJpeg>& jpegs);

// Writes `jpegs` into `part`, a contiguous CPU uint8 tensor of JpegPartSizes(jpegs).
void FillJpegPart(const std::vector<EncodedJpeg>& jpegs, at::Tensor& part);

// Whether `part` has the shape of a JPEG part: a contiguous CPU uint8 tensor [N, W], N >= 1,
// W > kJpegPartPrefixBytes.
bool IsJpegPart(const at::Tensor& part);

// Row `row` of a JPEG part (IsJpegPart). Its bytes point into the part. Rows whose prefix does
// not fit the part (not written by FillJpegPart) come back with empty bytes.
EncodedJpeg JpegInPart(const at::Tensor& part, int64_t row);

}  // namespace vitserve
