// libFuzzer target: the KServe v2 REST infer request reader (server/rest/kserve_json.h) on
// arbitrary bodies, with and without Triton's binary-data extension (the first byte picks
// whether and where the JSON header ends). It must return a request or an error, never crash,
// hang or read out of bounds; an accepted request has one raw content per input, all in the
// message or all as views of the body (binary data), and all of it came from the body.
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
  // Each input's bytes are either all in the message or all views of the body.
  const size_t in_message = static_cast<size_t>(request.raw_input_contents_size());
  const size_t as_views = parsed->binary_inputs.size();
  if ((in_message == 0) == (as_views == 0)) __builtin_trap();
  if (in_message + as_views != static_cast<size_t>(request.inputs_size())) __builtin_trap();
  for (std::string_view view : parsed->binary_inputs) {
    if (view.data() < body.data() || view.data() + view.size() > body.data() + body.size()) {
      __builtin_trap();
    }
  }
  if (header_length && *header_length > body.size()) __builtin_trap();
  return 0;
}
