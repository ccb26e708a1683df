// Maps an architecture name (timm's model name, e.g. "vit_tiny_patch16_224", "shvit_s1") to its
// ModelInfo and a factory that builds a randomly initialised VisionModel.
//
// Each model family contributes one `Register<Family>Models(ModelRegistry&)` function (declared
// in its folder, e.g. models/vit/vit_models.h); BuiltinModelRegistry() calls them all. There is
// no global registry: the server builds one at start-up and passes it by reference.
// Ownership: the registry owns the ModelInfo records; FindInfo() returns a pointer into it that
// stays valid while the registry lives and is not registered into. Create() returns a new model
// owned by the caller.
// Thread-safety: Register() must not overlap with anything else; the const methods may be
// called concurrently.
// Errors: ALREADY_EXISTS (duplicate name), INVALID_ARGUMENT (empty name or null factory),
// NOT_FOUND (unknown name; the message lists the known ones), INTERNAL (a factory threw).
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "models/model_info.h"
#include "models/vision_model.h"

namespace vitserve {

using ModelFactory = std::function<std::shared_ptr<VisionModel>(const ModelInfo&)>;

// The factory every family registers: `make(config)` with `config.num_classes` set to the
// registered ModelInfo's class count. `Config` is the family's config struct.
template <typename Config, typename Make>
ModelFactory FactoryWithClassCount(Config config, Make make) {
  return [config = std::move(config), make = std::move(make)](
             const ModelInfo& info) -> std::shared_ptr<VisionModel> {
    Config sized = config;
    sized.num_classes = info.num_classes;
    return make(sized);
  };
}

class ModelRegistry {
 public:
  ModelRegistry() = default;
  ModelRegistry(ModelRegistry&&) = default;
  ModelRegistry& operator=(ModelRegistry&&) = default;
  ModelRegistry(const ModelRegistry&) = default;
  ModelRegistry& operator=(const ModelRegistry&) = default;

  absl::Status Register(ModelInfo info, ModelFactory factory);
  absl::StatusOr<const ModelInfo*> FindInfo(std::string_view architecture) const;
  // A new model with random weights, in train() mode, on CPU, fp32.
  absl::StatusOr<std::shared_ptr<VisionModel>> Create(std::string_view architecture) const;
  // The same architecture built for `task` with `num_classes` classes (the registered info
  // with those two replaced is in `info`): e.g. shvit_s1 as a segmentation model. INVALID_ARGUMENT
  // when the architecture does not support the task (the message lists what it supports) or
  // num_classes < 1.
  struct TaskModel {
    ModelInfo info;
    std::shared_ptr<VisionModel> model;
  };
  absl::StatusOr<TaskModel> CreateForTask(std::string_view architecture, ModelTask task,
                                          int64_t num_classes) const;
  std::vector<std::string> Names() const;  // Sorted.

 private:
  struct Entry {
    ModelInfo info;
    ModelFactory factory;
  };
  std::string UnknownModelMessage(std::string_view architecture) const;
  absl::StatusOr<std::shared_ptr<VisionModel>> Build(const Entry& entry, const ModelInfo& info) const;

  std::map<std::string, Entry, std::less<>> entries_;
};

// A registry holding every model of the zoo. Throws std::logic_error only if the zoo's own
// registrations collide, a programming error that the registry unit test catches.
ModelRegistry BuiltinModelRegistry();

}  // namespace vitserve
