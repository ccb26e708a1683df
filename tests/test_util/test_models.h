// Small deterministic models for server-level tests, registered under their own architecture
// names so a test serves them through the real VitServer and ModelManager.
//
// kProbeModel ("test_probe"): 32x32 input, 10 classes, logits = fixed weights . flattened input.
//   The weights are a fixed formula (no random numbers), different for every pixel position and
//   channel, so (a) different images give probability vectors that differ by ~1e-1 while the
//   same image in different batches agrees to ~1e-7, and (b) a layout bug (rows swapped,
//   channels or H/W transposed) changes the result.
// kSegmentationProbe ("test_segment_probe"): a segmentation model, 32x32 input, 3 classes,
//   scores at stride 4 ([N,3,8,8]) from each 4x4 cell's mean brightness b (normalised units):
//   class 0 (0.5 - |b|) wins for mid grey, class 1 (-b) for dark, class 2 (b) for bright. So a
//   test can draw dark, grey and bright regions and check where the label map puts them.
// kDetectionProbe ("test_detect_probe"): a detection model (CenterNet output, 32x32 input,
//   stride 4, 2 classes) that finds the bright (class 0) or, when there is none, the dark
//   (class 1) pixels of the image and answers one peak at the cell nearest their centroid,
//   whose box is exactly their centroid and extent in input pixels. So a test can place a
//   rectangle and check the box the server maps back to the original image.
// kGatedModel ("test_gated"): the probe model, whose forward() first reports to a ComputeGate
//   and blocks while the gate is held: a test can keep a batch "computing" for as long as it
//   needs (deadlines, full queues, drain) without sleeping and guessing; the gate can also make
//   it run out of memory above a number of rows (ComputeGate::SetMemoryBudget).
//
// Ownership: RegisterTestModels borrows `gate`, which must outlive every model built from the
// registry.
// Thread-safety: ComputeGate is thread-safe; the models follow VisionModel's contract.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "models/registry.h"

namespace vitserve {

inline constexpr char kProbeModel[] = "test_probe";
inline constexpr char kGatedModel[] = "test_gated";
inline constexpr char kSegmentationProbe[] = "test_segment_probe";
inline constexpr int64_t kSegmentationProbeClasses = 3;
inline constexpr char kDetectionProbe[] = "test_detect_probe";
inline constexpr int64_t kDetectionProbeClasses = 2;
inline constexpr int64_t kTestModelInputSize = 32;
inline constexpr int64_t kTestModelClasses = 10;

// Where a kGatedModel's forward passes are counted and, while held, stopped.
class ComputeGate {
 public:
  // Forward passes entering from now on wait until Release().
  void Hold();
  void Release();
  // Clears the counts (e.g. of the warm-up batches a model runs at load).
  void ResetCounts();
  // Waits until at least `batches` forward passes have entered since the last ResetCounts;
  // false on timeout.
  bool WaitForBatches(int64_t batches, absl::Duration timeout);
  int64_t BatchesEntered() const;
  // The batch sizes of every forward pass since the last ResetCounts, in order.
  std::vector<int64_t> BatchSizes() const;

  // From now on a forward pass of more than `max_rows` rows throws c10::OutOfMemoryError, as
  // a device short of memory does; a negative `max_rows` (the start) lifts the limit.
  void SetMemoryBudget(int64_t max_rows);

  // Called by the model: counts a batch of `rows`, waits while held, then throws
  // c10::OutOfMemoryError when `rows` exceeds the memory budget.
  void Enter(int64_t rows);

 private:
  mutable absl::Mutex mu_;
  bool held_ ABSL_GUARDED_BY(mu_) = false;
  int64_t max_rows_ ABSL_GUARDED_BY(mu_) = -1;
  std::vector<int64_t> batch_sizes_ ABSL_GUARDED_BY(mu_);
};

// Registers kProbeModel, kSegmentationProbe, kDetectionProbe and, bound to `gate`, kGatedModel.
void RegisterTestModels(ModelRegistry& registry, ComputeGate* gate);

// A registry with the builtin zoo and the test models.
ModelRegistry RegistryWithTestModels(ComputeGate* gate);

}  // namespace vitserve
