#include "server/config/model_repository.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status_macros.h"
#include "server/config/file_util.h"

namespace vitserve {

absl::StatusOr<ModelRepository> ModelRepository::Open(const std::string& root) {
  if (root.empty() || !IsDirectory(root)) {
    return absl::NotFoundError(
        absl::StrCat("model repository '", root, "' is not a directory"));
  }
  return ModelRepository(root);
}

std::vector<std::string> ModelRepository::ModelNames() const {
  std::vector<std::string> names;
  for (std::string& name : ListSubdirectories(root_)) {
    if (IsRegularFile(JoinPath(JoinPath(root_, name), kConfigFileName))) {
      names.push_back(std::move(name));
    }
  }
  std::sort(names.begin(), names.end());
  return names;
}

std::string ModelRepository::ModelDir(const std::string& name) const {
  return JoinPath(root_, name);
}

std::string ModelRepository::ConfigPath(const std::string& name) const {
  return JoinPath(ModelDir(name), kConfigFileName);
}

absl::StatusOr<v1::ModelConfig> ModelRepository::LoadConfig(
    const std::string& name, const ModelRegistry& registry,
    const ServerDefaults& defaults) const {
  const std::string path = ConfigPath(name);
  if (name.empty() || name == "." || name == ".." || name.find('/') != std::string::npos ||
      !IsRegularFile(path)) {
    return absl::NotFoundError(absl::StrCat("no model '", name, "' in repository '", root_,
                                            "'; available: ",
                                            absl::StrJoin(ModelNames(), ", ")));
  }
  VITSERVE_ASSIGN_OR_RETURN(v1::ModelConfig config, ParseModelConfigFile(path));
  VITSERVE_RETURN_IF_ERROR(
      NormalizeModelConfig(registry, defaults, ModelDir(name), path, &config));
  VITSERVE_RETURN_IF_ERROR(ValidateModelConfig(config, path));
  return config;
}

}  // namespace vitserve
