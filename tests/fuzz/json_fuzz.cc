// libFuzzer target: the safetensors header JSON parser (models/weights/internal/json.h) on
// arbitrary bytes. It must return a value or an error, never crash, hang or read out of bounds;
// a value it accepts must survive quoting its strings back (JsonQuote) and parsing again.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "models/weights/internal/json.h"

namespace {

void CheckStrings(const vitserve::weights_internal::JsonValue& value) {
  using vitserve::weights_internal::JsonValue;
  if (value.type == JsonValue::Type::kString) {
    absl::StatusOr<JsonValue> again =
        vitserve::weights_internal::ParseJson(vitserve::weights_internal::JsonQuote(value.string));
    if (!again.ok() || again->string != value.string) __builtin_trap();
  }
  for (const JsonValue& item : value.array) CheckStrings(item);
  for (const auto& [key, member] : value.object) CheckStrings(member);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  absl::StatusOr<vitserve::weights_internal::JsonValue> value =
      vitserve::weights_internal::ParseJson(text);
  if (value.ok()) CheckStrings(*value);
  return 0;
}
