#include "common/result_json.h"

#include <cmath>
#include <cstdio>
#include <cstdint>
#include <cstdlib>

namespace vitserve {
namespace {

OrderedJson Number(double value) { return JsonNumber(value); }

std::string Text(absl::string_view s) { return std::string(s); }

}  // namespace

double RoundSignificant(double value, int significant_digits) {
  if (!std::isfinite(value) || value == 0.0) return value;
  char buffer[64];
  std::snprintf(buffer, sizeof(buffer), "%.*g", significant_digits, value);
  return std::strtod(buffer, nullptr);
}

OrderedJson JsonNumber(double value, int significant_digits) {
  if (!std::isfinite(value)) return nullptr;  // JSON has no NaN or infinity.
  const double rounded = RoundSignificant(value, significant_digits);
  if (std::fabs(rounded) < 9.0e15 && rounded == std::trunc(rounded)) {
    return static_cast<int64_t>(rounded);
  }
  return rounded;
}

std::string DumpJson(const OrderedJson& value) {
  return value.dump(-1, ' ', /*ensure_ascii=*/false, nlohmann::json::error_handler_t::replace);
}

std::string DumpJson(const nlohmann::json& value) {
  return value.dump(-1, ' ', /*ensure_ascii=*/false, nlohmann::json::error_handler_t::replace);
}

OrderedJson ClassificationToJson(absl::string_view image, absl::string_view model,
                                 const v1::Classification& result) {
  OrderedJson out = {{"image", Text(image)}, {"model", Text(model)}};
  OrderedJson& classes = out["classes"] = OrderedJson::array();
  for (const v1::ClassScore& c : result.classes()) {
    classes.push_back({{"index", c.index()}, {"label", c.label()}, {"score", Number(c.score())}});
  }
  return out;
}

OrderedJson DetectionsToJson(absl::string_view image, absl::string_view model,
                             const v1::Detections& result) {
  OrderedJson out = {{"image", Text(image)}, {"model", Text(model)}};
  OrderedJson& boxes = out["boxes"] = OrderedJson::array();
  for (const v1::Box& b : result.boxes()) {
    boxes.push_back({{"x1", Number(b.x1())},
                     {"y1", Number(b.y1())},
                     {"x2", Number(b.x2())},
                     {"y2", Number(b.y2())},
                     {"score", Number(b.score())},
                     {"index", b.index()},
                     {"label", b.label()}});
  }
  return out;
}

OrderedJson SegmentationToJson(absl::string_view image, absl::string_view model,
                               const v1::SegmentationMap& result, absl::string_view mask_file) {
  OrderedJson out = {{"image", Text(image)},
                     {"model", Text(model)},
                     {"width", result.width()},
                     {"height", result.height()},
                     {"mask_png_bytes", result.mask().size()}};
  if (!mask_file.empty()) out["mask_file"] = Text(mask_file);
  return out;
}

}  // namespace vitserve
