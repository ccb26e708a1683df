// Reading, normalising and validating a model's config.pbtxt (vitserve.v1.ModelConfig), in the
// style of Triton's model_config_utils: Parse -> Normalize -> Validate, each returning a status.
//
// Normalisation fills every field a user may leave unset: the serving name from the model
// directory, task and input geometry/normalisation from the architecture's ModelInfo (timm's
// pretrained_cfg), device/precision/batching from the server's flags (ServerDefaults), and the
// default weights and labels files. Validation then checks the fully populated config, so the
// rest of the server never sees a zero or empty field.
//
// Thread-safety: free functions without shared state. Errors: INVALID_ARGUMENT naming the config
// file and the field ("<path>: field 'batching.max_batch_size' ..."); parse errors as
// "<path>:<line>:<column>: <message>" (1-based); NOT_FOUND for a missing file.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "models/registry.h"
#include "vitserve/v1/model_config.pb.h"

namespace vitserve {

// Server-wide defaults (from command-line flags) for fields a config leaves unset.
struct ServerDefaults {
  std::string device = "cpu";                // "cpu", "cuda" or "cuda:N"
  v1::Precision precision = v1::FP32;
  uint32_t max_batch_size = 8;
  uint64_t max_queue_delay_us = 1000;
  uint32_t max_queue_size = 256;
  uint64_t default_timeout_ms = 0;           // 0: no timeout for requests without a deadline
  uint32_t instance_count = 0;               // --instance-count; 0: automatic (see below)
  bool cuda_graphs = true;                   // --cuda-graphs
  // --cuda-graph-batch-sizes; empty: powers of two below max_batch_size (CudaGraphBatchSizes).
  std::vector<uint32_t> cuda_graph_batch_sizes;
  bool device_preprocessing = true;          // --device-preprocessing (models on CUDA only)
  bool channels_last = true;                 // --channels-last (models on CUDA only)
  bool approximate_gelu = true;              // --approximate-gelu (ModelConfig.approximate_gelu)
  bool gpu_jpeg_decoding = true;             // --gpu-jpeg-decoding (with device_preprocessing)
  std::string kserve_input_datatype = "FP32";  // --kserve-input-datatype: FP32 or UINT8
  // --executor-idle-spin-us (server-wide, no config field): BatchingOptions::idle_spin; -1:
  // kGpuIdleSpin for models on a GPU, none on the CPU (ModelIdleSpin).
  int64_t executor_idle_spin_us = -1;
};

// Limits enforced by ValidateModelConfig.
inline constexpr uint32_t kMaxBatchSizeLimit = 1024;
inline constexpr uint32_t kMaxInstanceCount = 64;
// Instances per model on a GPU when neither its config nor --instance-count says: two let one
// batch's copies, preprocessing and output overlap another's forward pass. Measured on the H200
// (2026-12-02, fp16, raw images, 256 clients, docs/performance.md): one -> two instances served
// shvit_s1 17,972 -> 20,118 img/s, deit_tiny 15,728 -> 17,331, vit_base 5,791 -> 6,028.
inline constexpr uint32_t kAutoInstanceCountOnCuda = 2;
// On a CPU, two instances, each forward pass on half the cores (DefaultIntraOpThreads): while
// one instance's batch is assembled and answered the other computes, and each OpenMP team is
// half as wide, so a thread that the preprocessing pool or gRPC preempts stalls fewer others at
// a barrier. Measured on 2 cores (2026-12-03, shvit_s1 fp32 batch 8, bench/cpu_target.sh,
// docs/performance.md): served at 97.6% of the model alone (median of 5 rounds) against 67-78%
// with one instance on both cores; a lone request took 19.2 ms (p50) against 16.1.
inline constexpr uint32_t kAutoInstanceCountOnCpu = 2;

// LibTorch intra-op threads when --intra-op-threads is 0, for models on `device` ("cpu",
// "cuda", "cuda:N"), given the cores there are and --instance-count (0: automatic): on CUDA 1
// (requests already run in parallel on the preprocessing pool, and parallel copies of small
// tensors only spin); on a CPU the cores shared among the instances, at least 1.
int DefaultIntraOpThreads(std::string_view device, int cores, int instance_count_flag);
inline constexpr uint32_t kMaxInputSize = 4096;

// Default file names inside a model directory.
inline constexpr char kConfigFileName[] = "config.pbtxt";
inline constexpr char kDefaultWeightsFile[] = "model.safetensors";
inline constexpr char kDefaultLabelsFile[] = "labels.txt";

// Parses protobuf text format. NOT_FOUND: no such file; INVALID_ARGUMENT
// "<path>:<line>:<col>: <message>" (an unknown field says `unknown field "<name>"`).
absl::StatusOr<v1::ModelConfig> ParseModelConfigFile(const std::string& path);
// Same, from text already in memory; `path` is used in messages only.
absl::StatusOr<v1::ModelConfig> ParseModelConfigText(const std::string& text,
                                                     const std::string& path);

// Fills unset fields (see the file comment). `model_dir` is the model's directory: its last path
// component is the expected model name and the labels file default is looked up in it. An empty
// `model_dir` (quick mode) names the model after its architecture and sets no default weights or
// labels. `config_path` is used in messages only. Errors (INVALID_ARGUMENT): no architecture, an
// unknown architecture (the known names listed), a name that differs from the directory, a task
// that differs from the architecture's.
absl::Status NormalizeModelConfig(const ModelRegistry& registry, const ServerDefaults& defaults,
                                  const std::string& model_dir, const std::string& config_path,
                                  v1::ModelConfig* config);

// Checks a normalised config. INVALID_ARGUMENT naming `config_path` and the field.
absl::Status ValidateModelConfig(const v1::ModelConfig& config, const std::string& config_path);

// Detection defaults and limits (DetectionConfig, DetectRequest).
inline constexpr float kDefaultScoreThreshold = 0.3f;
inline constexpr uint32_t kDefaultMaxDetections = 100;
inline constexpr uint32_t kMaxDetections = 10000;

// The config enum of a registry task, and back (TASK_UNSPECIFIED gives classification).
v1::Task ToProtoTask(ModelTask task);
ModelTask FromProtoTask(v1::Task task);

// Checks device syntax only ("cpu", "cuda", "cuda:N"); whether the host has it is the runtime's
// business (runtime/device.h).
absl::Status ValidateDeviceString(const std::string& device);

// Checks a KServe input datatype that metadata may declare: "FP32" or "UINT8" (the server flag
// --kserve-input-datatype and the config field kserve_input_datatype both use it).
absl::Status ValidateKserveInputDatatype(const std::string& datatype);

// The config that quick mode (`vitserve --model NAME [--weights FILE]`) serves: architecture
// NAME, named NAME, normalised and validated. An empty `weights_path` serves random weights
// (allow_random_weights). Errors: as NormalizeModelConfig / ValidateModelConfig.
absl::StatusOr<v1::ModelConfig> QuickModeConfig(const ModelRegistry& registry,
                                                const ServerDefaults& defaults,
                                                const std::string& architecture,
                                                const std::string& weights_path);

// Class names, one per line ('\r' trimmed; trailing empty lines ignored). NOT_FOUND: no file;
// INVALID_ARGUMENT: the count differs from `expected_count` (both counts named).
absl::StatusOr<std::vector<std::string>> ReadLabels(const std::string& path,
                                                    int64_t expected_count);

}  // namespace vitserve
