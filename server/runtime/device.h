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

// Makes LibTorch's CPU operators called from the current thread run on it alone, whatever the
// process-wide intra-op thread count (which the other threads keep). For threads that already
// run in parallel with each other, such as the preprocessing pool: with LibTorch's OpenMP, every
// thread that runs a parallel operator gets a team of its own, and once the teams' threads
// outnumber the cores, OpenMP stops spin-waiting at barriers for every team, the forward pass's
// included, which then sleeps and wakes at each of its hundreds of small operators (measured on
// 2 cores: a CPU model's forward pass 85 ms in the server against 51 ms alone).
void RunTorchSeriallyOnThisThread();

// Bytes the CUDA caching allocator holds (reserved) on `device`; 0 for CPU or without CUDA.
double GpuMemoryUsedBytes(const c10::Device& device);

}  // namespace vitserve
