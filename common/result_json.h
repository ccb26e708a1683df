// The JSON form of vitserve's task results, one object per image, shared by the client's
// `--json` lines (client/result_format.h) and the server's plain REST endpoint
// (server/rest/rest_server.h), so both always use the same field names:
//   classify: {"image":"cat.jpg","model":"m","classes":[{"index":281,"label":"tabby","score":0.91}]}
//   detect:   {"image":..,"model":..,"boxes":[{"x1":..,"y1":..,"x2":..,"y2":..,"score":..,
//              "index":..,"label":..}]}
//   segment:  {"image":..,"model":..,"width":W,"height":H,"mask_png_bytes":N[,"mask_file":P]}
// Scores and coordinates keep 6 significant digits; NaN and infinities are written as null.
// Objects keep their fields in this order (nlohmann::ordered_json).
//
// Thread-safety: pure functions.
#pragma once

#include <string>
#include "absl/strings/string_view.h"

#include "nlohmann/json.hpp"
#include "vitserve/v1/vision.pb.h"

namespace vitserve {

using OrderedJson = nlohmann::ordered_json;

// `value` rounded to `significant_digits` (as printf's %g), for compact, stable output.
double RoundSignificant(double value, int significant_digits = 6);

// `value` rounded as above, as a JSON number written the way %g writes it: a whole number
// without a fraction ("2", not "2.0"); NaN and infinities as null.
OrderedJson JsonNumber(double value, int significant_digits = 6);

// One line of JSON: invalid UTF-8 in strings (a label, a file name) is replaced by U+FFFD
// rather than failing the whole document.
std::string DumpJson(const OrderedJson& value);
std::string DumpJson(const nlohmann::json& value);

OrderedJson ClassificationToJson(absl::string_view image, absl::string_view model,
                                 const v1::Classification& result);
OrderedJson DetectionsToJson(absl::string_view image, absl::string_view model,
                             const v1::Detections& result);
// `mask_file` is where the mask was written; empty (no field) when it was not.
OrderedJson SegmentationToJson(absl::string_view image, absl::string_view model,
                               const v1::SegmentationMap& result, absl::string_view mask_file);

}  // namespace vitserve
