#include "bench/bench_util.h"

#include <chrono>
#include <cstdio>
#include <exception>
#include <stdexcept>

#include <c10/util/Exception.h>

#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "common/flag_names.h"

#ifdef VITSERVE_WITH_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAFunctions.h>
#endif

namespace vitserve::bench {

at::ScalarType ParsePrecision(const std::string& precision) {
  if (precision == "fp32") return at::kFloat;
  if (precision == "fp16") return at::kHalf;
  if (precision == "bf16") return at::kBFloat16;
  throw std::invalid_argument("precision must be fp32, fp16 or bf16, got '" + precision + "'");
}

std::vector<int64_t> ParsePositiveList(const std::string& text) {
  std::vector<int64_t> values;
  for (absl::string_view part : absl::StrSplit(text, ',')) {
    int64_t value = 0;
    if (!absl::SimpleAtoi(part, &value) || value < 1) {
      throw std::invalid_argument("expected positive integers separated by commas, got '" +
                                  text + "'");
    }
    values.push_back(value);
  }
  return values;
}

void Synchronize(const at::Device& device) {
#ifdef VITSERVE_WITH_CUDA
  if (device.is_cuda()) c10::cuda::device_synchronize();
#endif
}

void ResetPeakMemory(const at::Device& device) {
#ifdef VITSERVE_WITH_CUDA
  if (device.is_cuda()) {
    c10::cuda::CUDACachingAllocator::emptyCache();
    c10::cuda::CUDACachingAllocator::resetPeakStats(device.index() < 0 ? 0 : device.index());
  }
#endif
}

double PeakMemoryMiB(const at::Device& device) {
#ifdef VITSERVE_WITH_CUDA
  if (device.is_cuda()) {
    const auto stats =
        c10::cuda::CUDACachingAllocator::getDeviceStats(device.index() < 0 ? 0 : device.index());
    const auto aggregate = static_cast<size_t>(c10::CachingAllocator::StatType::AGGREGATE);
    return static_cast<double>(stats.allocated_bytes[aggregate].peak) / 1048576.0;
  }
#endif
  return 0.0;
}

Timing TimeSteps(const std::function<void()>& step, const at::Device& device,
                 double budget_seconds, int64_t min_iterations, int sync_every) {
  using Clock = std::chrono::steady_clock;
  Synchronize(device);
  Timing timing;
  const auto start = Clock::now();
  while (timing.seconds < budget_seconds || timing.iterations < min_iterations) {
    for (int i = 0; i < sync_every; ++i) step();
    timing.iterations += sync_every;
    Synchronize(device);
    timing.seconds = std::chrono::duration<double>(Clock::now() - start).count();
  }
  return timing;
}

int RunBenchmark(int argc, char** argv, const char* usage, const std::function<int()>& run,
                 const char* error_prefix) {
  absl::SetProgramUsageMessage(usage);
  std::vector<std::string> args = NormalizeFlagNames(argc, argv);
  std::vector<char*> pointers = ArgvPointers(args);
  absl::ParseCommandLine(static_cast<int>(pointers.size()), pointers.data());
  try {
    return run();
  } catch (const c10::Error& e) {  // Without LibTorch's C++ backtrace.
    std::fprintf(stderr, "%s: %s\n", error_prefix, e.what_without_backtrace());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s: %s\n", error_prefix, e.what());
    return 1;
  }
}

}  // namespace vitserve::bench
