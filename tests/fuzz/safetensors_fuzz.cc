// libFuzzer target: a whole safetensors file as SafetensorsFile::Open reads it (memory-mapped,
// header validated against the data section) and every tensor it then hands out. A file Open
// accepts must give each F32/F16/BF16 tensor as exactly its byte range, readable to the end
// (summed here, so an out-of-bounds view would fault under ASan); other dtypes must be refused.
// The bytes go through a file of this process's own (the reader takes a path), rewritten for
// every input.
#include <ATen/ATen.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>

#include "models/weights/safetensors.h"

namespace {

const std::string& FuzzFile() {
  static const std::string path =
      "/tmp/vitserve-safetensors-fuzz-" + std::to_string(getpid()) + ".safetensors";
  return path;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FILE* file = std::fopen(FuzzFile().c_str(), "wb");
  if (file == nullptr) return 0;
  const bool written = std::fwrite(data, 1, size, file) == size;
  std::fclose(file);
  if (!written) return 0;
  absl::StatusOr<vitserve::SafetensorsFile> opened = vitserve::SafetensorsFile::Open(FuzzFile());
  if (!opened.ok()) return 0;
  for (const auto& [name, info] : opened->tensors()) {
    if (info.begin < 0 || info.end < info.begin) __builtin_trap();
    absl::StatusOr<at::Tensor> tensor = opened->Tensor(name);
    if (info.dtype == at::ScalarType::Undefined) {
      if (tensor.ok()) __builtin_trap();  // Only F32, F16 and BF16 are handed out.
      continue;
    }
    if (!tensor.ok()) __builtin_trap();
    if (tensor->numel() * static_cast<int64_t>(tensor->element_size()) != info.end - info.begin) {
      __builtin_trap();
    }
    (void)tensor->to(at::kDouble).sum().item<double>();  // Reads every byte of the view.
  }
  return 0;
}
