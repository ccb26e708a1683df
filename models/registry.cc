#include "models/registry.h"

#include <algorithm>
#include <exception>
#include <stdexcept>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status_macros.h"
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

absl::StatusOr<std::shared_ptr<VisionModel>> ModelRegistry::Build(const Entry& entry,
                                                                  const ModelInfo& info) const {
  std::shared_ptr<VisionModel> model;
  try {
    model = entry.factory(info);
  } catch (const std::exception& e) {  // c10::Error derives from std::exception.
    return absl::InternalError(
        absl::StrCat("building model '", info.architecture, "' failed: ", e.what()));
  }
  if (model == nullptr) {
    return absl::InternalError(absl::StrCat("factory of '", info.architecture, "' returned null"));
  }
  return model;
}

absl::StatusOr<std::shared_ptr<VisionModel>> ModelRegistry::Create(
    std::string_view architecture) const {
  auto it = entries_.find(architecture);
  if (it == entries_.end()) return absl::NotFoundError(UnknownModelMessage(architecture));
  return Build(it->second, it->second.info);
}

absl::StatusOr<ModelRegistry::TaskModel> ModelRegistry::CreateForTask(
    std::string_view architecture, ModelTask task, int64_t num_classes) const {
  auto it = entries_.find(architecture);
  if (it == entries_.end()) return absl::NotFoundError(UnknownModelMessage(architecture));
  const ModelInfo& registered = it->second.info;
  if (std::find(registered.tasks.begin(), registered.tasks.end(), task) == registered.tasks.end()) {
    std::vector<std::string> supported;
    for (ModelTask t : registered.tasks) supported.emplace_back(ModelTaskName(t));
    return absl::InvalidArgumentError(absl::StrCat(
        "architecture '", registered.architecture, "' cannot be built for ",
        std::string(ModelTaskName(task)), "; it supports: ", absl::StrJoin(supported, ", ")));
  }
  if (num_classes < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("a model needs at least one class, got ", num_classes));
  }
  TaskModel built;
  built.info = registered;
  built.info.task = task;
  built.info.num_classes = num_classes;
  VITSERVE_ASSIGN_OR_RETURN(built.model, Build(it->second, built.info));
  return built;
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
