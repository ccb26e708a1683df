#include "server/runtime/device.h"

#include <dlfcn.h>

#include <ATen/Parallel.h>

#include <torch/cuda.h>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

#ifdef VITSERVE_WITH_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#endif

namespace vitserve {

absl::StatusOr<c10::Device> ParseDevice(std::string_view device_view) {
  // Debian's abseil has its own string_view type; StrCat takes that one.
  const absl::string_view device(device_view.data(), device_view.size());
  if (device == "cpu") return c10::Device(c10::kCPU);
  int index = 0;
  if (device == "cuda") {
    index = 0;
  } else if (device.substr(0, 5) == "cuda:") {
    absl::string_view digits = device.substr(5);
    if (digits.empty() || digits.find_first_not_of("0123456789") != absl::string_view::npos ||
        !absl::SimpleAtoi(digits, &index) || index > 127) {
      return absl::InvalidArgumentError(absl::StrCat(
          "device '", device, "': the CUDA index must be a small non-negative integer"));
    }
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("device '", device, "' is not one of \"cpu\", \"cuda\", \"cuda:N\""));
  }
  if (!torch::cuda::is_available()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "CUDA device requested but this build/host has no CUDA: device '", device,
        "' (use --device=cpu or a CUDA host)"));
  }
  const int64_t count = static_cast<int64_t>(torch::cuda::device_count());
  if (index >= count) {
    return absl::InvalidArgumentError(absl::StrCat("device '", device, "': this host has ", count,
                                                   " CUDA device(s), indices 0..", count - 1));
  }
  return c10::Device(c10::kCUDA, static_cast<c10::DeviceIndex>(index));
}

double GpuMemoryUsedBytes(const c10::Device& device) {
#ifdef VITSERVE_WITH_CUDA
  if (device.is_cuda() && torch::cuda::is_available()) {
    const c10::DeviceIndex index = device.has_index() ? device.index() : 0;
    const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(index);
    return static_cast<double>(
        stats.reserved_bytes[static_cast<size_t>(c10::CachingAllocator::StatType::AGGREGATE)]
            .current);
  }
#endif
  return 0.0;
}

void RunTorchSeriallyOnThisThread() {
  // LibTorch keeps two thread counts per thread, OpenMP's (ATen's parallel loops, oneDNN) and
  // MKL's (its math functions open parallel regions of their own), and sets both from the
  // process-wide count on the thread's first use of ATen. So use ATen first, then lower both for
  // this thread alone; ATen has no per-thread setter. The setters are looked up at run time in
  // the OpenMP runtime and the MKL that LibTorch loaded (builds without them have none).
  (void)at::get_num_threads();
  static const auto omp_set_num_threads =
      reinterpret_cast<void (*)(int)>(dlsym(RTLD_DEFAULT, "omp_set_num_threads"));
  // MKL's C function (its lower-case names are the Fortran interface, which takes a pointer).
  static const auto mkl_set_num_threads_local =
      reinterpret_cast<int (*)(int)>(dlsym(RTLD_DEFAULT, "MKL_Set_Num_Threads_Local"));
  if (omp_set_num_threads != nullptr) omp_set_num_threads(1);
  if (mkl_set_num_threads_local != nullptr) mkl_set_num_threads_local(1);
}

}  // namespace vitserve
