// ModelRepository: a Triton-style directory of models, `<root>/<model>/config.pbtxt` beside the
// model's weights (`*.safetensors`) and `labels.txt`.
//
// The repository is read on demand: ModelNames() lists the directory each time, so models added
// later can be loaded by name without restarting.
// Ownership: a value type holding the root path. Thread-safety: const methods may be called
// concurrently (they only read the file system).
// Errors: Open: NOT_FOUND (no such directory); LoadConfig: NOT_FOUND (no such model, the
// available ones listed) and the errors of Parse/Normalize/ValidateModelConfig (model_config.h).
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "models/registry.h"
#include "server/config/model_config.h"
#include "vitserve/v1/model_config.pb.h"

namespace vitserve {

class ModelRepository {
 public:
  static absl::StatusOr<ModelRepository> Open(const std::string& root);

  const std::string& root() const { return root_; }
  // Subdirectories holding a config.pbtxt, sorted.
  std::vector<std::string> ModelNames() const;
  // `<root>/<name>`.
  std::string ModelDir(const std::string& name) const;
  // `<root>/<name>/config.pbtxt`.
  std::string ConfigPath(const std::string& name) const;
  // Parse + normalise + validate `name`'s config.
  absl::StatusOr<v1::ModelConfig> LoadConfig(const std::string& name,
                                             const ModelRegistry& registry,
                                             const ServerDefaults& defaults) const;

 private:
  explicit ModelRepository(std::string root) : root_(std::move(root)) {}
  std::string root_;
};

}  // namespace vitserve
