#include "models/weights/state_dict.h"

#include <c10/core/GradMode.h>

#include <exception>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace vitserve {
namespace {

bool IsIgnored(absl::string_view name) { return absl::EndsWith(name, "num_batches_tracked"); }

std::string Shape(at::IntArrayRef sizes) {
  return absl::StrCat("[", absl::StrJoin(sizes, ","), "]");
}

}  // namespace

std::map<std::string, at::Tensor> StateDictTensors(const torch::nn::Module& module) {
  std::map<std::string, at::Tensor> tensors;
  for (const auto& item : module.named_parameters(/*recurse=*/true)) {
    tensors.emplace(item.key(), item.value());
  }
  for (const auto& item : module.named_buffers(/*recurse=*/true)) {
    if (!IsIgnored(item.key())) tensors.emplace(item.key(), item.value());
  }
  return tensors;
}

absl::Status LoadStateDict(torch::nn::Module& module, const SafetensorsFile& file) {
  const std::map<std::string, at::Tensor> expected = StateDictTensors(module);
  std::vector<std::string> missing;
  std::vector<std::string> mismatched;
  std::vector<std::string> unexpected;
  for (const auto& [name, tensor] : expected) {
    auto it = file.tensors().find(name);
    if (it == file.tensors().end()) {
      missing.push_back(absl::StrCat(name, " ", Shape(tensor.sizes())));
    } else if (at::IntArrayRef(it->second.shape) != tensor.sizes()) {
      mismatched.push_back(absl::StrCat(name, ": checkpoint ", Shape(it->second.shape),
                                        " vs model ", Shape(tensor.sizes())));
    } else if (it->second.dtype == at::ScalarType::Undefined) {
      mismatched.push_back(absl::StrCat(name, ": checkpoint dtype ", it->second.dtype_name,
                                        " is not a floating-point type (F32, F16, BF16)"));
    }
  }
  for (const auto& [name, info] : file.tensors()) {
    if (!IsIgnored(name) && expected.count(name) == 0) {
      unexpected.push_back(absl::StrCat(name, " ", Shape(info.shape)));
    }
  }
  if (!missing.empty() || !mismatched.empty() || !unexpected.empty()) {
    std::string message = absl::StrCat(
        "checkpoint '", file.path(), "' does not match the model: ", missing.size(), " missing, ",
        unexpected.size(), " unexpected, ", mismatched.size(), " with the wrong shape or dtype");
    const size_t bad = missing.size() + mismatched.size();
    if (bad * 2 > expected.size()) {
      absl::StrAppend(&message, " (", bad, " of the model's ", expected.size(),
                      " tensors are absent or mis-shaped: the file is most likely for another "
                      "architecture)");
    }
    if (!missing.empty()) absl::StrAppend(&message, "; missing: ", absl::StrJoin(missing, ", "));
    if (!unexpected.empty()) {
      absl::StrAppend(&message, "; unexpected: ", absl::StrJoin(unexpected, ", "));
    }
    if (!mismatched.empty()) {
      absl::StrAppend(&message, "; wrong shape or dtype: ", absl::StrJoin(mismatched, ", "));
    }
    return absl::InvalidArgumentError(message);
  }
  try {
    c10::NoGradGuard no_grad;
    for (const auto& [name, tensor] : expected) {
      absl::StatusOr<at::Tensor> source = file.Tensor(name);
      if (!source.ok()) return source.status();
      // copy_ converts dtype and device; the source is a read-only view of the mapping.
      at::Tensor(tensor).copy_(*source);
    }
  } catch (const std::exception& e) {
    return absl::InternalError(
        absl::StrCat("copying checkpoint '", file.path(), "' into the model failed: ", e.what()));
  }
  return absl::OkStatus();
}

}  // namespace vitserve
