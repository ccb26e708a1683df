#include "models/registry.h"

#include <exception>
#include <stdexcept>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "models/fibottention/fibottention_models.h"
#include "models/shvit/shvit_models.h"
#include "models/tokenlearner/tokenlearner_models.h"
#include "models/vim/vim_models.h"
#include "models/vit/vit_models.h"
#include "models/vittm/vittm_models.h"

namespace vitserve {

absl::Status ModelRegistry::Register(ModelInfo info, ModelFactory factory) {
  if (info.architecture.empty()) {
    return absl::InvalidArgumentError("model architecture name must not be empty");
  }
  if (!factory) {
    return absl::InvalidArgumentError(
        absl::StrCat("model '", info.architecture, "' registered without a factory"));
  }
  if (entries_.count(info.architecture) > 0) {
    return absl::AlreadyExistsError(
        absl::StrCat("model '", info.architecture, "' is already registered"));
  }
  std::string name = info.architecture;
  entries_.emplace(std::move(name), Entry{std::move(info), std::move(factory)});
  return absl::OkStatus();
}

std::string ModelRegistry::UnknownModelMessage(std::string_view architecture) const {
  return absl::StrCat("unknown model architecture '", std::string(architecture),
                      "'; known: ", absl::StrJoin(Names(), ", "));
}

absl::StatusOr<const ModelInfo*> ModelRegistry::FindInfo(std::string_view architecture) const {
  auto it = entries_.find(architecture);
  if (it == entries_.end()) return absl::NotFoundError(UnknownModelMessage(architecture));
  return &it->second.info;
}

absl::StatusOr<std::shared_ptr<VisionModel>> ModelRegistry::Create(
    std::string_view architecture) const {
  auto it = entries_.find(architecture);
  if (it == entries_.end()) return absl::NotFoundError(UnknownModelMessage(architecture));
  std::shared_ptr<VisionModel> model;
  try {
    model = it->second.factory(it->second.info);
  } catch (const std::exception& e) {  // c10::Error derives from std::exception.
    return absl::InternalError(
        absl::StrCat("building model '", std::string(architecture), "' failed: ", e.what()));
  }
  if (model == nullptr) {
    return absl::InternalError(
        absl::StrCat("factory of '", std::string(architecture), "' returned null"));
  }
  return model;
}

std::vector<std::string> ModelRegistry::Names() const {
  std::vector<std::string> names;
  names.reserve(entries_.size());
  for (const auto& [name, entry] : entries_) names.push_back(name);
  return names;  // std::map keeps them sorted.
}

ModelRegistry BuiltinModelRegistry() {
  ModelRegistry registry;
  // The zoo's own names never collide, so a failure here is a programming error caught by the
  // registry unit test; it is reported loudly rather than silently skipping a family.
  const std::vector<absl::Status> results = {
      RegisterVitModels(registry),    RegisterShvitModels(registry),
      RegisterVimModels(registry),    RegisterVittmModels(registry),
      RegisterTokenlearnerModels(registry), RegisterFibottentionModels(registry)};
  for (const absl::Status& status : results) {
    if (!status.ok()) {
      throw std::logic_error(
          absl::StrCat("builtin model registration failed: ", status.ToString()));
    }
  }
  return registry;
}

}  // namespace vitserve
