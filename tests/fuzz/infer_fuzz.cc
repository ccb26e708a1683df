// libFuzzer target: the KServe v2 REST infer request reader (server/rest/kserve_json.h) on
// arbitrary bodies, with and without Triton's binary-data extension (the first byte picks
// whether and where the JSON header ends). It must return a request or an error, never crash,
// hang or read out of bounds; an accepted request has one raw content per input, and all of it
// came from the body.
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>

#include "server/rest/kserve_json.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const std::string_view body(reinterpret_cast<const char*>(data + 1), size - 1);
  std::optional<size_t> header_length;
  if (data[0] & 1) header_length = (static_cast<size_t>(data[0]) * 7) % (body.size() + 2);
  absl::StatusOr<vitserve::ParsedInferRequest> parsed =
      vitserve::ParseInferRequest(body, header_length, "m", "");
  if (!parsed.ok()) return 0;
  const inference::ModelInferRequest& request = parsed->request;
  if (request.raw_input_contents_size() != request.inputs_size()) __builtin_trap();
  if (header_length && *header_length > body.size()) __builtin_trap();
  return 0;
}
