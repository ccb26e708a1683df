#include "models/vision_model.h"

#include <exception>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace vitserve {

std::vector<torch::Tensor> VisionModel::Features(const torch::Tensor& images) {
  TORCH_CHECK(false, "this backbone gives no spatial feature maps (no detection or segmentation "
                     "heads can use it)");
}

absl::StatusOr<torch::Tensor> ForwardOrStatus(VisionModel& model, const torch::Tensor& images) {
  try {
    return model.forward(images);
  } catch (const c10::OutOfMemoryError& e) {
    return absl::ResourceExhaustedError(
        absl::StrCat("model forward ran out of device memory: ", e.what_without_backtrace()));
  } catch (const c10::Error& e) {
    // what_without_backtrace() keeps the message readable in an RPC reply.
    return absl::InvalidArgumentError(
        absl::StrCat("model forward failed: ", e.what_without_backtrace()));
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("model forward failed: ", e.what()));
  }
}

}  // namespace vitserve
