// libFuzzer target: the safetensors header reader (models/weights/internal/safetensors_header.h,
// on nlohmann-json) on arbitrary bytes. It must return a header or an error, never crash, hang
// or read out of bounds; a header it accepts must survive being written back
// (SafetensorsHeaderJson) and read again unchanged.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "models/weights/internal/safetensors_header.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using vitserve::weights_internal::ParseSafetensorsHeader;
  using vitserve::weights_internal::SafetensorsHeader;
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  absl::StatusOr<SafetensorsHeader> header = ParseSafetensorsHeader(text);
  if (!header.ok()) return 0;
  absl::StatusOr<std::string> written = SafetensorsHeaderJson(*header);
  if (!written.ok()) __builtin_trap();  // What was read as UTF-8 must be writable.
  absl::StatusOr<SafetensorsHeader> again = ParseSafetensorsHeader(*written);
  if (!again.ok() || again->metadata != header->metadata || again->tensors != header->tensors) {
    __builtin_trap();
  }
  return 0;
}
