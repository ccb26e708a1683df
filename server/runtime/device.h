// Device selection and device-memory reporting for model instances.
//
// Thread-safety: free functions, safe to call concurrently.
// Errors: ParseDevice returns INVALID_ARGUMENT for bad syntax or a CUDA index beyond the
// host's devices, FAILED_PRECONDITION when CUDA is requested but this build/host has none.
#pragma once

#include <string_view>

#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>

#include "absl/status/statusor.h"

namespace vitserve {

// "cpu", "cuda" (= "cuda:0") or "cuda:N".
absl::StatusOr<c10::Device> ParseDevice(std::string_view device);

// Bytes the CUDA caching allocator holds (reserved) on `device`; 0 for CPU or without CUDA.
double GpuMemoryUsedBytes(const c10::Device& device);

}  // namespace vitserve
