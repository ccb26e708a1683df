// libFuzzer target: a model repository's config.pbtxt (text the server reads from disk, which
// may come from anyone who can write the repository) through the parser and the validator.
#include <cstddef>
#include <cstdint>
#include <string>

#include "server/config/model_config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  absl::StatusOr<vitserve::v1::ModelConfig> config =
      vitserve::ParseModelConfigText(text, "fuzz/config.pbtxt");
  if (config.ok()) (void)vitserve::ValidateModelConfig(*config, "fuzz/config.pbtxt");
  return 0;
}
