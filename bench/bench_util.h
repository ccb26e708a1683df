// Pieces every model benchmark here shares: the precision and list flags, device
// synchronisation, peak device memory and the timed loop. One definition, so that the numbers
// of vitserve-bench-model and vitserve-bench-vim-vs-deit are measured the same way.
//
// Thread-safety: call from one thread. Errors: the parsers throw std::invalid_argument, which the
// benchmarks' main() reports.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace vitserve::bench {

// "fp32", "fp16" or "bf16".
at::ScalarType ParsePrecision(const std::string& precision);

// "1,8,32" -> {1, 8, 32}; every entry must be a positive integer.
std::vector<int64_t> ParsePositiveList(const std::string& text);

// Waits for the device's queued work (no-op on CPU).
void Synchronize(const at::Device& device);

// Peak memory of the CUDA caching allocator (allocated bytes, MiB) since the last reset; 0 on
// CPU or in builds without CUDA. Reset also empties the cache so that earlier cases do not count.
void ResetPeakMemory(const at::Device& device);
double PeakMemoryMiB(const at::Device& device);

struct Timing {
  int64_t iterations = 0;
  double seconds = 0;
};

// A benchmark's main(): sets the --help usage text, parses the flags (dashes or underscores, as
// the server accepts them), then runs `run`; an exception (a bad --device, a CUDA failure)
// prints "<error_prefix>: <what>" and returns 1.
int RunBenchmark(int argc, char** argv, const char* usage, const std::function<int()>& run,
                 const char* error_prefix = "error");

// Runs `step` for at least `budget_seconds` and `min_iterations`, synchronising the device
// every `sync_every` steps only, so that the GPU queue stays full between clock reads.
Timing TimeSteps(const std::function<void()>& step, const at::Device& device,
                 double budget_seconds, int64_t min_iterations = 3, int sync_every = 1);

}  // namespace vitserve::bench
