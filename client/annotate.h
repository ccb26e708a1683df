// Results drawn on a copy of the image, for people to look at (vitserve-client detect|segment
// --annotate DIR): each box with its label and score, or the label map blended over the image,
// as DIR/<image stem>.annotated.png.
// Thread-safety: pure functions. Errors: INVALID_ARGUMENT for an image or mask OpenCV cannot
// decode or whose size disagrees with the result; PERMISSION_DENIED when the file cannot be
// written.
#pragma once

#include <string>

#include "absl/status/status.h"
#include "vitserve/v1/vision.pb.h"

namespace vitserve::client {

std::string AnnotatedPath(const std::string& dir, const std::string& image_path);

absl::Status AnnotateDetections(const std::string& image_path, const v1::Detections& result,
                                const std::string& out_path);

// `result.mask` must be a PNG label map of the image's size (what Segment answers by default).
absl::Status AnnotateSegmentation(const std::string& image_path,
                                  const v1::SegmentationMap& result, const std::string& out_path);

}  // namespace vitserve::client
