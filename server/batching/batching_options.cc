#include "server/batching/batching_options.h"

#include "absl/strings/str_cat.h"

namespace vitserve {

absl::Status ValidateBatchingOptions(const BatchingOptions& options) {
  if (options.max_batch_size < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_batch_size must be >= 1, got ", options.max_batch_size));
  }
  if (options.max_queue_delay < absl::ZeroDuration() ||
      options.max_queue_delay == absl::InfiniteDuration()) {
    return absl::InvalidArgumentError(absl::StrCat("max_queue_delay must be finite and >= 0, got ",
                                                   absl::FormatDuration(options.max_queue_delay)));
  }
  for (int size : options.preferred_batch_sizes) {
    if (size < 1 || size > options.max_batch_size) {
      return absl::InvalidArgumentError(absl::StrCat(
          "preferred_batch_sizes entries must be in [1, max_batch_size=", options.max_batch_size,
          "], got ", size));
    }
  }
  if (options.max_queue_size < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_queue_size must be >= 1, got ", options.max_queue_size));
  }
  if (options.default_timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        absl::StrCat("default_timeout must be positive or infinite, got ",
                     absl::FormatDuration(options.default_timeout)));
  }
  if (options.idle_spin < absl::ZeroDuration() || options.idle_spin > kMaxIdleSpin) {
    return absl::InvalidArgumentError(
        absl::StrCat("idle_spin must be in [0, ", absl::FormatDuration(kMaxIdleSpin), "], got ",
                     absl::FormatDuration(options.idle_spin)));
  }
  return absl::OkStatus();
}

absl::Duration ModelIdleSpin(int64_t idle_spin_us, bool on_gpu) {
  if (idle_spin_us < 0) return on_gpu ? kGpuIdleSpin : absl::ZeroDuration();
  return absl::Microseconds(idle_spin_us);
}

}  // namespace vitserve
