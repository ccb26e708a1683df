// glibc malloc settings for the processes that run LibTorch's CPU operators.
#pragma once

#include <malloc.h>

#include <cstdlib>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/string_view.h"

namespace vitserve {

// glibc's malloc serves large blocks with mmap and gives freed memory at the top of a heap back
// to the kernel once it exceeds the trim threshold; both thresholds start small and adapt. A CPU
// forward pass allocates and frees megabytes of activations per operator, so it then takes a
// page fault for every 4 KiB page it writes, every batch. Measured on the 2-core development
// machine (shvit_s1, fp32, batch 8, served): 6,962 page faults per batch and a 67 ms forward
// pass by default; 11 and 41 ms with these settings. The cost: a process keeps up to
// kTrimThresholdBytes of freed memory per malloc arena instead of returning it.
inline constexpr int kMmapThresholdBytes = 32 << 20;  // glibc's largest (64-bit)
inline constexpr int kTrimThresholdBytes = 256 << 20;

// Whether a GLIBC_TUNABLES value sets malloc parameters itself (its settings then win).
inline bool TunablesSetMalloc(absl::string_view tunables) {
  return absl::StrContains(tunables, "glibc.malloc.");
}

// Applies the thresholds above, unless the environment's GLIBC_TUNABLES sets malloc
// parameters. They are process-wide and apply to later allocations: call it early in main(),
// before the tensor work. vitserve and vitserve-bench-model do for CPU models only (on the H200,
// CUDA serving measured no better with them and 0.03-0.08 ms slower at one request at a time).
// The vitserve binary links tcmalloc (VITSERVE_TCMALLOC) unless built without it: its mallopt
// accepts and ignores these, and it keeps freed memory for reuse by itself (served CPU
// throughput measured the same: docs/performance.md, run 29).
// Errors: INTERNAL when glibc refuses a setting.
inline absl::Status KeepFreedMemoryForReuse() {
  const char* tunables = std::getenv("GLIBC_TUNABLES");
  if (tunables != nullptr && TunablesSetMalloc(tunables)) return absl::OkStatus();
  // Either call also turns off glibc's adaptation of both thresholds.
  if (mallopt(M_MMAP_THRESHOLD, kMmapThresholdBytes) == 0 ||
      mallopt(M_TRIM_THRESHOLD, kTrimThresholdBytes) == 0) {
    return absl::InternalError("glibc refused the malloc thresholds (mallopt)");
  }
  return absl::OkStatus();
}

}  // namespace vitserve
