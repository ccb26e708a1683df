// Reading and writing the safetensors format (https://github.com/huggingface/safetensors):
// an 8-byte little-endian header length, a JSON header mapping each tensor name to
// {dtype, shape, data_offsets} (plus an optional "__metadata__" string map), then raw data.
//
// SafetensorsFile::Open memory-maps the file read-only and validates the whole header up front
// (length bounds, JSON, dtypes, shapes, offsets inside the data section, byte size ==
// numel * itemsize), so later accessors cannot read out of bounds. Tensors of dtype F32, F16 and
// BF16 can be read; the format's other dtypes (e.g. the I64 `num_batches_tracked` counters in
// timm state dicts) are validated and listed but Tensor() refuses them. Assumes a
// little-endian host, as the format does.
// Ownership: SafetensorsFile owns the mapping (unmapped when the last user goes away).
// Tensor() returns a zero-copy view whose storage keeps the mapping alive, so a view may outlive
// the SafetensorsFile object; views are read-only (the mapping is PROT_READ; writing crashes).
// Thread-safety: a SafetensorsFile is immutable after Open(); all const methods may be called
// concurrently.
// Errors: NOT_FOUND (no such file or tensor), INVALID_ARGUMENT (corrupt or truncated file,
// unsupported dtype; the message names the file and, where relevant, the tensor), INTERNAL
// (I/O failure while writing).
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace vitserve {

struct SafetensorsTensorInfo {
  std::string dtype_name;  // As in the file: "F32", "I64", ...
  // at::kFloat, at::kHalf or at::kBFloat16; at::ScalarType::Undefined for the other dtypes of
  // the format, which are validated but cannot be read as tensors (Tensor() refuses them).
  at::ScalarType dtype = at::ScalarType::Undefined;
  std::vector<int64_t> shape;
  int64_t begin = 0;  // Byte offsets relative to the start of the data section.
  int64_t end = 0;
};

class SafetensorsFile {
 public:
  static absl::StatusOr<SafetensorsFile> Open(const std::string& path);

  SafetensorsFile(SafetensorsFile&&) = default;
  SafetensorsFile& operator=(SafetensorsFile&&) = default;
  SafetensorsFile(const SafetensorsFile&) = default;  // Shares the mapping.
  SafetensorsFile& operator=(const SafetensorsFile&) = default;

  const std::string& path() const { return path_; }
  // Tensor names, sorted.
  std::vector<std::string> Names() const;
  bool Contains(std::string_view name) const { return tensors_.count(name) > 0; }
  const std::map<std::string, SafetensorsTensorInfo, std::less<>>& tensors() const {
    return tensors_;
  }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

  // A CPU tensor viewing the mapped bytes, in the file's dtype (copied instead when the data is
  // not aligned for its dtype). Clone or convert it before writing to it. INVALID_ARGUMENT for
  // dtypes other than F32, F16, BF16.
  absl::StatusOr<at::Tensor> Tensor(std::string_view name) const;

 private:
  struct Mapping;
  SafetensorsFile() = default;

  std::string path_;
  std::shared_ptr<const Mapping> mapping_;
  const uint8_t* data_ = nullptr;  // Start of the data section inside the mapping.
  std::map<std::string, SafetensorsTensorInfo, std::less<>> tensors_;
  std::map<std::string, std::string> metadata_;
};

// Writes `tensors` (any device; F32, F16 or BF16; made contiguous) to `path`, replacing it.
// The file is written under a temporary name and renamed, so readers never see half a file.
absl::Status WriteSafetensors(const std::string& path,
                              const std::map<std::string, at::Tensor>& tensors,
                              const std::map<std::string, std::string>& metadata = {});

// "F32" for at::kFloat etc.; empty for dtypes the format support here does not cover.
std::string_view SafetensorsDtypeName(at::ScalarType dtype);

}  // namespace vitserve
