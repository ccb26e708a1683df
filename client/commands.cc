#include "client/commands.h"

#include <fcntl.h>
#include <sys/mman.h>  // shm_open, shm_unlink
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "client/annotate.h"
#include "client/grpc_status.h"
#include "client/image_io.h"
#include "common/kserve_datatype.h"
#include "common/result_json.h"
#include "client/result_format.h"

namespace vitserve::client {
namespace {

int Usage(std::ostream& err, absl::string_view message) {
  err << "error: " << message << "\nRun 'vitserve-client help' for usage.\n";
  return kExitUsage;
}

int Fail(std::ostream& err, const absl::Status& status) {
  err << "error: " << FormatStatus(status) << "\n";
  return kExitFailure;
}

absl::StatusOr<std::unique_ptr<VisionClient>> ConnectFrom(const CliOptions& options) {
  return VisionClient::Connect(options.server, options.client);
}

// --- classify / detect / segment ------------------------------------------------------

absl::Status CheckResultCount(int got, size_t want) {
  if (got == static_cast<int>(want)) return absl::OkStatus();
  return absl::InternalError(
      absl::StrCat("server returned ", got, " results for ", want, " images"));
}

std::string MaskPath(const std::string& output_dir, const std::string& image) {
  namespace fs = std::filesystem;
  return (fs::path(output_dir) / (fs::path(image).stem().string() + ".mask.png")).string();
}

absl::Status WriteFile(const std::string& path, const std::string& bytes) {
  std::ofstream file(path, std::ios::binary | std::ios::trunc);
  if (!file) {
    return absl::PermissionDeniedError(
        absl::StrCat("cannot write '", path, "': ", std::strerror(errno)));
  }
  file.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  file.close();
  if (!file) return absl::UnknownError(absl::StrCat("short write to '", path, "'"));
  return absl::OkStatus();
}

// Sends options.args in requests of options.batch images, in order, one request at a time,
// and prints one result per image. Stops at the first failure.
absl::Status RunTask(VisionClient& client, const CliOptions& options, std::ostream& out) {
  using FlagDir = std::pair<const char*, const std::string*>;
  for (const auto& [flag, dir] : {FlagDir{"--output-dir", &options.output_dir},
                                  FlagDir{"--annotate", &options.annotate_dir}}) {
    if (dir->empty()) continue;
    std::error_code ec;
    std::filesystem::create_directories(*dir, ec);
    if (ec) {
      return absl::PermissionDeniedError(
          absl::StrCat("cannot create ", flag, " '", *dir, "': ", ec.message()));
    }
  }
  const size_t n = options.args.size();
  for (size_t begin = 0; begin < n; begin += options.batch) {
    const size_t end = std::min(n, begin + static_cast<size_t>(options.batch));
    std::vector<v1::Image> images;
    for (size_t i = begin; i < end; ++i) {
      absl::StatusOr<v1::Image> image = ReadImageFile(options.args[i]);
      if (!image.ok()) return image.status();
      images.push_back(*std::move(image));
    }
    auto add_images = [&](auto* request) {
      request->set_model(options.model);
      for (v1::Image& image : images) *request->add_images() = std::move(image);
    };
    if (options.command == "classify") {
      v1::ClassifyRequest request;
      add_images(&request);
      request.set_top_k(options.top_k);
      absl::StatusOr<v1::ClassifyResponse> response = client.Classify(request);
      if (!response.ok()) return response.status();
      if (auto s = CheckResultCount(response->results_size(), end - begin); !s.ok()) return s;
      for (size_t i = begin; i < end; ++i) {
        const auto& result = response->results(static_cast<int>(i - begin));
        out << (options.json ? ClassificationJson(options.args[i], options.model, result) + "\n"
                             : ClassificationText(options.args[i], options.model, result));
      }
    } else if (options.command == "detect") {
      v1::DetectRequest request;
      add_images(&request);
      request.set_score_threshold(static_cast<float>(options.score_threshold));
      request.set_max_detections(options.max_detections);
      absl::StatusOr<v1::DetectResponse> response = client.Detect(request);
      if (!response.ok()) return response.status();
      if (auto s = CheckResultCount(response->results_size(), end - begin); !s.ok()) return s;
      for (size_t i = begin; i < end; ++i) {
        const auto& result = response->results(static_cast<int>(i - begin));
        if (!options.annotate_dir.empty()) {
          if (auto s = AnnotateDetections(options.args[i], result,
                                          AnnotatedPath(options.annotate_dir, options.args[i]));
              !s.ok()) {
            return s;
          }
        }
        out << (options.json ? DetectionsJson(options.args[i], options.model, result) + "\n"
                             : DetectionsText(options.args[i], options.model, result));
      }
    } else {
      v1::SegmentRequest request;
      add_images(&request);
      request.set_format(v1::SegmentRequest::PNG);
      absl::StatusOr<v1::SegmentResponse> response = client.Segment(request);
      if (!response.ok()) return response.status();
      if (auto s = CheckResultCount(response->results_size(), end - begin); !s.ok()) return s;
      for (size_t i = begin; i < end; ++i) {
        const auto& result = response->results(static_cast<int>(i - begin));
        std::string mask_file;
        if (!options.output_dir.empty()) {
          mask_file = MaskPath(options.output_dir, options.args[i]);
          if (auto s = WriteFile(mask_file, result.mask()); !s.ok()) return s;
        }
        if (!options.annotate_dir.empty()) {
          if (auto s = AnnotateSegmentation(options.args[i], result,
                                            AnnotatedPath(options.annotate_dir, options.args[i]));
              !s.ok()) {
            return s;
          }
        }
        out << (options.json
                    ? SegmentationJson(options.args[i], options.model, result, mask_file) + "\n"
                    : SegmentationText(options.args[i], options.model, result, mask_file));
      }
    }
    out.flush();
  }
  return absl::OkStatus();
}

// --- models / health ------------------------------------------------------------------

absl::Status RunModels(VisionClient& client, const CliOptions& options, std::ostream& out) {
  absl::StatusOr<v1::ListModelsResponse> models = client.ListModels();
  if (!models.ok()) return models.status();
  if (options.json) {
    for (const v1::ModelDescription& m : models->models()) out << ModelJson(m) << "\n";
  } else {
    out << ModelsTable(*models);
  }
  return absl::OkStatus();
}

// Prints SERVING or NOT_SERVING first; returns whether the server (and --model) is ready.
absl::StatusOr<bool> RunHealth(VisionClient& client, const CliOptions& options,
                               std::ostream& out) {
  absl::StatusOr<bool> live = client.ServerLive();
  if (!live.ok()) return live.status();
  absl::StatusOr<bool> ready = client.ServerReady();
  if (!ready.ok()) return ready.status();
  // The standard protocol too (what Kubernetes gRPC probes read). A server without it (some
  // other KServe implementation) is judged on KServe alone.
  using HealthResponse = grpc::health::v1::HealthCheckResponse;
  absl::StatusOr<HealthResponse::ServingStatus> grpc_health = client.HealthCheck("");
  std::string grpc_health_name;
  if (grpc_health.ok()) {
    grpc_health_name = HealthResponse::ServingStatus_Name(*grpc_health);
  } else if (grpc_health.status().code() == absl::StatusCode::kUnimplemented) {
    grpc_health_name = "UNIMPLEMENTED";
  } else {
    return grpc_health.status();
  }
  struct ModelHealth {
    std::string name;
    bool ready;
    std::string state;
  };
  std::vector<ModelHealth> models;
  if (!options.model.empty()) {
    absl::StatusOr<bool> model_ready = client.ModelReady(options.model);
    if (!model_ready.ok()) return model_ready.status();
    models.push_back({options.model, *model_ready, *model_ready ? "READY" : "NOT_READY"});
  } else {
    absl::StatusOr<v1::ListModelsResponse> list = client.ListModels();
    if (!list.ok()) return list.status();
    for (const auto& m : list->models()) models.push_back({m.name(), m.ready(), m.state()});
  }
  bool serving = *live && *ready &&
                 (!grpc_health.ok() || *grpc_health == HealthResponse::SERVING);
  // With --model, that model must be ready too; without it, the server's readiness decides.
  if (!options.model.empty()) serving = serving && models.front().ready;
  const char* verdict = serving ? "SERVING" : "NOT_SERVING";
  if (options.json) {
    OrderedJson json = {{"status", verdict},
                        {"live", *live},
                        {"ready", *ready},
                        {"grpc_health", grpc_health_name}};
    OrderedJson& listed = json["models"] = OrderedJson::array();
    for (const auto& m : models) {
      listed.push_back({{"name", m.name}, {"ready", m.ready}, {"state", m.state}});
    }
    out << DumpJson(json) << "\n";
  } else {
    out << verdict << "\n";
    out << "  server: live " << (*live ? "yes" : "no") << ", ready " << (*ready ? "yes" : "no")
        << ", grpc.health.v1 " << grpc_health_name << "\n";
    for (const auto& m : models) {
      out << "  model " << m.name << ": " << (m.ready ? "SERVING" : "NOT_SERVING");
      if (!m.state.empty()) out << " (" << m.state << ")";
      out << "\n";
    }
  }
  return serving;
}

// --- bench ----------------------------------------------------------------------------

absl::StatusOr<BenchOptions> BenchOptionsFrom(const CliOptions& o) {
  BenchOptions b;
  b.concurrency = o.concurrency;
  b.rate = o.rate;
  if (o.arrival == "constant") {
    b.arrival = BenchOptions::Arrival::kConstant;
  } else if (o.arrival == "poisson") {
    b.arrival = BenchOptions::Arrival::kPoisson;
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("--arrival must be constant or poisson, not '", o.arrival, "'"));
  }
  b.duration = absl::Seconds(o.duration_s);
  b.warmup = absl::Seconds(o.warmup_s);
  b.images_per_request = o.batch;
  return b;
}

int RunBenchCommand(const CliOptions& options, std::ostream& out, std::ostream& err) {
  absl::StatusOr<BenchOptions> bench_options = BenchOptionsFrom(options);
  if (!bench_options.ok()) return Usage(err, bench_options.status().message());
  // One client (connection) per channel, each with its own workload; calls go round robin.
  std::vector<std::unique_ptr<VisionClient>> clients;
  std::vector<std::shared_ptr<void>> resources;  // Released before the clients they use.
  std::vector<StartCallFn> starts;
  absl::StatusOr<BenchWorkload> workload;
  for (int i = 0; i < options.channels; ++i) {
    auto client = ConnectFrom(options);
    if (!client.ok()) return Usage(err, client.status().message());
    workload = MakeBenchWorkload(**client, options);
    if (!workload.ok()) {
      if (absl::IsInvalidArgument(workload.status()) &&
          workload.status().message().rfind("--", 0) == 0) {
        return Usage(err, workload.status().message());
      }
      return Fail(err, workload.status());
    }
    clients.push_back(*std::move(client));
    resources.push_back(workload->resources);
    starts.push_back(workload->start_call);
  }
  StartCallFn start_call = starts.front();
  if (starts.size() > 1) {
    start_call = [starts, next = std::make_shared<std::atomic<size_t>>(0)](
                     std::function<void(absl::Status)> done) {
      starts[next->fetch_add(1, std::memory_order_relaxed) % starts.size()](std::move(done));
    };
  }
  absl::StatusOr<BenchResult> result = RunBench(start_call, *bench_options, &err);
  if (!result.ok()) return Usage(err, result.status().message());
  BenchDescription description{options.model, workload->rpc, workload->input, *bench_options};
  out << (options.json ? BenchJson(description, *result) + "\n"
                       : BenchText(description, *result));
  if (result->ok_requests == 0 && result->errors > 0) {
    // Every call failed: report the first error like any other failed call.
    const auto& [code, message] = *result->first_error_by_code.begin();
    err << "error: " << code << ": " << message << "\n";
    return kExitFailure;
  }
  return kExitOk;
}

// Calls of `service`'s `method` on `client`, each sending `request`, serialised once here.
StartCallFn SerializedCalls(VisionClient* client, const std::string& service,
                            const std::string& method,
                            const google::protobuf::MessageLite& request) {
  auto serialized = std::make_shared<const VisionClient::SerializedRequest>(
      VisionClient::Serialize(service, method, request));
  return [client, serialized](std::function<void(absl::Status)> done) {
    client->StartSerialized(*serialized, std::move(done));
  };
}

// A POSIX shared memory object this process created and registered with the server as region
// `name`: unregistered, unmapped and unlinked on destruction. `client` must outlive it.
class BenchSharedMemory {
 public:
  static absl::StatusOr<std::shared_ptr<BenchSharedMemory>> Create(VisionClient* client,
                                                                   std::string name,
                                                                   size_t bytes) {
    const std::string key = "/" + name;
    const int fd = shm_open(key.c_str(), O_CREAT | O_EXCL | O_RDWR, 0600);
    if (fd < 0) {
      return absl::InternalError(
          absl::StrCat("cannot create shared memory '", key, "': ", std::strerror(errno)));
    }
    // Zeros (ftruncate's): the compute cost does not depend on the values, so this process
    // never maps the object; the server reads it.
    const int error = ftruncate(fd, static_cast<off_t>(bytes)) == 0 ? 0 : errno;
    close(fd);
    if (error != 0) {
      shm_unlink(key.c_str());
      return absl::InternalError(
          absl::StrCat("cannot size shared memory '", key, "': ", std::strerror(error)));
    }
    std::shared_ptr<BenchSharedMemory> memory(
        new BenchSharedMemory(client, std::move(name), key));
    absl::Status registered = client->RegisterSystemSharedMemory(memory->name_, key, bytes);
    if (!registered.ok()) {
      memory->registered_ = false;
      return absl::Status(registered.code(),
                          absl::StrCat("registering shared memory: ", registered.message()));
    }
    return memory;
  }

  ~BenchSharedMemory() {
    if (registered_) client_->UnregisterSystemSharedMemory(name_).IgnoreError();
    shm_unlink(key_.c_str());
  }
  BenchSharedMemory(const BenchSharedMemory&) = delete;
  BenchSharedMemory& operator=(const BenchSharedMemory&) = delete;

  const std::string& name() const { return name_; }

 private:
  BenchSharedMemory(VisionClient* client, std::string name, std::string key)
      : client_(client), name_(std::move(name)), key_(std::move(key)) {}

  VisionClient* const client_;
  const std::string name_;
  const std::string key_;
  bool registered_ = true;
};

void SetSharedMemoryParameters(const std::string& region, int64_t offset, int64_t bytes,
                               google::protobuf::Map<std::string, inference::InferParameter>* p) {
  (*p)["shared_memory_region"].set_string_param(region);
  (*p)["shared_memory_offset"].set_int64_param(offset);
  (*p)["shared_memory_byte_size"].set_int64_param(bytes);
}

// Puts `request`'s input and every output `metadata` declares in shared memory registered
// with the server: one region for the input, one for the outputs (shared by all calls, as
// perf_analyzer's are). Returns what keeps them registered.
absl::StatusOr<std::shared_ptr<void>> MoveTensorsToSharedMemory(
    VisionClient* client, const inference::ModelMetadataResponse& metadata, int64_t batch,
    int64_t input_bytes, inference::ModelInferRequest* request) {
  const std::string stem = absl::StrCat("vitserve_bench_", getpid(), "_",
                                        reinterpret_cast<uintptr_t>(client));
  struct Regions {
    std::shared_ptr<BenchSharedMemory> input, outputs;
  };
  auto regions = std::make_shared<Regions>();
  absl::StatusOr<std::shared_ptr<BenchSharedMemory>> input =
      BenchSharedMemory::Create(client, stem + "_input", static_cast<size_t>(input_bytes));
  if (!input.ok()) return input.status();
  regions->input = *std::move(input);
  request->clear_raw_input_contents();
  SetSharedMemoryParameters(regions->input->name(), 0, input_bytes,
                            request->mutable_inputs(0)->mutable_parameters());
  std::vector<std::pair<std::string, int64_t>> outputs;  // Name, bytes.
  int64_t output_bytes = 0;
  for (const auto& output : metadata.outputs()) {
    const int64_t element_bytes = KServeDatatypeBytes(output.datatype());
    int64_t bytes = element_bytes;
    for (int i = 0; i < output.shape_size(); ++i) {
      const int64_t dim = output.shape(i) < 0 && i == 0 ? batch : output.shape(i);
      if (dim < 0 || element_bytes == 0) {
        return absl::FailedPreconditionError(absl::StrCat(
            "model output '", output.name(), "' (", output.datatype(),
            ") has no fixed size; --shared-memory system needs outputs of a fixed-size datatype "
            "and fixed dimensions beyond the batch"));
      }
      bytes *= dim;
    }
    outputs.emplace_back(output.name(), bytes);
    output_bytes += bytes;
  }
  if (output_bytes > 0) {
    absl::StatusOr<std::shared_ptr<BenchSharedMemory>> region =
        BenchSharedMemory::Create(client, stem + "_outputs", static_cast<size_t>(output_bytes));
    if (!region.ok()) return region.status();
    regions->outputs = *std::move(region);
    int64_t offset = 0;
    for (const auto& [name, bytes] : outputs) {
      auto* wanted = request->add_outputs();
      wanted->set_name(name);
      SetSharedMemoryParameters(regions->outputs->name(), offset, bytes,
                                wanted->mutable_parameters());
      offset += bytes;
    }
  }
  return std::shared_ptr<void>(std::move(regions));
}

template <typename Request>
std::shared_ptr<Request> TaskRequest(const CliOptions& options, const v1::Image& image) {
  auto request = std::make_shared<Request>();
  request->set_model(options.model);
  for (int i = 0; i < options.batch; ++i) *request->add_images() = image;
  return request;
}

}  // namespace

absl::StatusOr<BenchWorkload> MakeBenchWorkload(VisionClient& client,
                                                const CliOptions& options) {
  BenchWorkload workload;
  workload.input = options.input.empty() ? (options.image.empty() ? "raw" : "jpeg")
                                         : options.input;
  if (workload.input == "encoded") workload.input = "jpeg";
  VisionClient* c = &client;

  if (options.shared_memory != "none" && options.shared_memory != "system") {
    return absl::InvalidArgumentError(absl::StrCat(
        "--shared-memory must be none or system, not '", options.shared_memory, "'"));
  }
  if (options.shared_memory == "system" && workload.input != "tensor") {
    return absl::InvalidArgumentError(
        "--shared-memory system needs --input tensor (KServe ModelInfer)");
  }
  if (workload.input == "tensor") {
    if (!options.image.empty()) {
      return absl::InvalidArgumentError(
          "--image cannot be used with --input tensor (the client never decodes images); "
          "use --input jpeg");
    }
    absl::StatusOr<inference::ModelMetadataResponse> metadata = client.ModelMetadata(options.model);
    if (!metadata.ok()) return metadata.status();
    if (metadata->inputs().empty()) {
      return absl::FailedPreconditionError(
          absl::StrCat("model '", options.model, "' declares no inputs in its metadata"));
    }
    const auto& input = metadata->inputs(0);
    // Image datatypes (the bench sends zeros): vitserve declares FP32 or UINT8; FP16 and BF16
    // are for other KServe servers.
    const bool supported = input.datatype() == "FP32" || input.datatype() == "FP16" ||
                           input.datatype() == "BF16" || input.datatype() == "UINT8";
    const int64_t element_bytes = KServeDatatypeBytes(input.datatype());
    if (!supported) {
      return absl::FailedPreconditionError(absl::StrCat(
          "model input '", input.name(), "' has datatype ", input.datatype(),
          "; --input tensor supports FP32, FP16, BF16 and UINT8"));
    }
    auto request = std::make_shared<inference::ModelInferRequest>();
    request->set_model_name(options.model);
    auto* tensor = request->add_inputs();
    tensor->set_name(input.name());
    tensor->set_datatype(input.datatype());
    int64_t elements = 1;
    for (int i = 0; i < input.shape_size(); ++i) {
      int64_t dim = input.shape(i);
      if (dim < 0 && i == 0) dim = options.batch;
      if (dim < 0) {
        return absl::FailedPreconditionError(absl::StrCat(
            "model input '", input.name(), "' has a variable dimension ", i,
            "; --input tensor needs fixed dimensions beyond the batch"));
      }
      tensor->add_shape(dim);
      elements *= dim;
    }
    // Zeros: the compute cost does not depend on the pixel values.
    request->add_raw_input_contents(std::string(elements * element_bytes, '\0'));
    if (options.shared_memory == "system") {
      absl::StatusOr<std::shared_ptr<void>> regions = MoveTensorsToSharedMemory(
          c, *metadata, options.batch, elements * element_bytes, request.get());
      if (!regions.ok()) return regions.status();
      workload.resources = *std::move(regions);
    }
    workload.rpc = "ModelInfer";
    workload.start_call = SerializedCalls(
        c, inference::GRPCInferenceService::service_full_name(), "ModelInfer", *request);
    return workload;
  }

  absl::StatusOr<v1::ModelDescription> model = client.GetModel(options.model);
  if (!model.ok()) return model.status();
  v1::Image image;
  if (workload.input == "jpeg") {
    if (options.image.empty()) {
      return absl::InvalidArgumentError(
          "--input jpeg needs --image FILE (an encoded JPEG/PNG/BMP/WebP file)");
    }
    absl::StatusOr<v1::Image> file = ReadImageFile(options.image);
    if (!file.ok()) return file.status();
    image = *std::move(file);
  } else if (workload.input == "raw") {
    if (!options.image.empty()) {
      return absl::InvalidArgumentError(
          "--input raw sends a synthetic image and cannot use --image (the client never "
          "decodes images); use --input jpeg");
    }
    const uint32_t size = model->input_size() > 0 ? model->input_size() : 224;
    absl::StatusOr<v1::Image> raw = SyntheticRawImage(size, size);
    if (!raw.ok()) return raw.status();
    image = *std::move(raw);
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("--input must be jpeg, raw or tensor, not '", workload.input, "'"));
  }

  switch (model->task()) {
    case v1::DETECTION: {
      auto request = TaskRequest<v1::DetectRequest>(options, image);
      workload.rpc = "Detect";
      workload.start_call =
          SerializedCalls(c, v1::Vision::service_full_name(), "Detect", *request);
      break;
    }
    case v1::SEGMENTATION: {
      auto request = TaskRequest<v1::SegmentRequest>(options, image);
      workload.rpc = "Segment";
      workload.start_call =
          SerializedCalls(c, v1::Vision::service_full_name(), "Segment", *request);
      break;
    }
    default: {
      auto request = TaskRequest<v1::ClassifyRequest>(options, image);
      request->set_top_k(options.top_k);
      workload.rpc = "Classify";
      workload.start_call =
          SerializedCalls(c, v1::Vision::service_full_name(), "Classify", *request);
    }
  }
  return workload;
}

std::string UsageText() {
  return R"(vitserve-client: command-line client of a vitserve server.

Usage: vitserve-client <command> [flags] [IMAGE...]

Commands:
  classify --model NAME [--top-k K] [--batch B] [--json] IMAGE...
      Classify image files (JPEG, PNG, BMP, WebP; sent as bytes, decoded by the server).
      Prints the top-k classes per image; with --json one object per image per line:
        {"image":"cat.jpg","model":"shvit_s1","classes":[{"index":281,"label":"tabby","score":0.91}]}
  detect --model NAME [--score-threshold S] [--max-detections N] [--batch B] [--json]
         [--annotate DIR] IMAGE...
      Detect objects; --json lines carry "boxes":[{"x1","y1","x2","y2","score","index","label"}]
      in original image pixels. --annotate DIR draws the boxes with their labels and scores on a
      copy of each image: DIR/<image stem>.annotated.png.
  segment --model NAME [--output-dir DIR] [--annotate DIR] [--batch B] [--json] IMAGE...
      Segment images; --json lines carry "width","height","mask_png_bytes" (and "mask_file").
      --output-dir DIR writes each label map as DIR/<image stem>.mask.png; --annotate DIR blends
      it, one colour per class, over a copy of the image: DIR/<image stem>.annotated.png.
  models [--json]
      List the served models: name, task, input size, readiness, architecture, parameters,
      precision, device; with --json one object per model per line.
  health [--model NAME] [--json]
      Print SERVING or NOT_SERVING (KServe ServerLive + ServerReady, and the standard
      grpc.health.v1 status when the server offers it), then per-model readiness.
      Exit status 0 only when the server (and --model, if given) is ready.
  bench --model NAME [--concurrency N | --rate R] [--duration T] [--warmup W] [--batch B]
        [--input jpeg|raw|tensor] [--image FILE] [--arrival constant|poisson] [--channels C]
        [--shared-memory none|system] [--json]
      Load test. Closed loop (default): N requests outstanding, each next one sent when one
      completes. Open loop (--rate R): R requests/s sent on schedule whatever the completions.
      Runs W + T seconds (default 0 + 10); prints progress each second to stderr and then
      requests, images, throughput (img/s, req/s), latency p50/p90/p95/p99/max (ms) and errors
      by gRPC code; --json prints one object with "throughput_img_s","throughput_req_s",
      "p50_ms","p90_ms","p95_ms","p99_ms","max_ms","requests","errors","errors_by_code",...
      Inputs: jpeg = the --image file (encoded, decoded by the server; default when --image is
      given); raw = a synthetic RGB8 image of the model's input size (default otherwise);
      tensor = a zero FP32 tensor through KServe ModelInfer, as perf_analyzer sends; with
      --shared-memory system its input and outputs travel in POSIX shared memory registered
      with the server (server flag --allow-client-shm, same host), as with perf_analyzer
      --shared-memory system.
      The RPC follows the model's task (Classify, Detect or Segment); its request is
      serialised once and the same bytes re-sent by every call, so that the load generator
      takes little of a host it shares with the server. --channels C spreads the
      requests round robin over C connections (default 1), so that one connection's thread
      does not limit the load on a many-core server.
  help
      This text.

Common flags:
  --server HOST:PORT   server address (default localhost:8001)
  --timeout SECONDS    deadline of each call (default 30)
  --batch B            images per request (default 1: one request per image, sent in order)
  --json               machine-readable output, one JSON object per line
  --tls-ca FILE        connect over TLS, trusting the CA certificates (PEM) in FILE
  --tls-cert FILE --tls-key FILE
                       mutual TLS: this client's certificate and key (PEM)
  --token-file FILE    send the bearer token on FILE's first line with every call (needs TLS)

Errors: a failed call prints "error: <CODE>: <server message>" to stderr, e.g.
  error: NOT_FOUND: model 'foo' is not loaded
Exit status: 0 success, 1 failed call or not serving, 2 usage error.

Examples:
  vitserve-client classify --server localhost:8001 --model shvit_s1 --top-k 3 cat.jpg dog.png
  vitserve-client classify --model shvit_s1 --json images/*.jpg > results.jsonl
  vitserve-client segment --model seg --output-dir masks/ street.jpg
  vitserve-client models --json
  vitserve-client health --model shvit_s1 && echo ready
  vitserve-client bench --model shvit_s1 --concurrency 16 --duration 30 --warmup 5
  vitserve-client bench --model shvit_s1 --rate 200 --arrival poisson --input jpeg --image cat.jpg
  vitserve-client bench --model shvit_s1 --input tensor --batch 8 --concurrency 4 --json
)";
}

int RunCli(const CliOptions& options, std::ostream& out, std::ostream& err) {
  const std::string& cmd = options.command;
  if (cmd.empty()) return Usage(err, "missing command (classify, detect, segment, models, "
                                     "health, bench, help)");
  if (cmd == "help") {
    out << UsageText();
    return kExitOk;
  }
  const bool task = cmd == "classify" || cmd == "detect" || cmd == "segment";
  if (!task && cmd != "models" && cmd != "health" && cmd != "bench") {
    return Usage(err, absl::StrCat("unknown command '", cmd,
                                   "'; expected classify, detect, segment, models, health, "
                                   "bench or help"));
  }
  if (options.server.empty()) return Usage(err, "--server HOST:PORT must not be empty");
  if ((task || cmd == "bench") && options.model.empty()) {
    return Usage(err, absl::StrCat(cmd, " needs --model NAME (see 'vitserve-client models')"));
  }
  if (task && options.args.empty()) {
    return Usage(err, absl::StrCat(cmd, " needs at least one IMAGE file"));
  }
  if (!task && !options.args.empty()) {
    return Usage(err, absl::StrCat(cmd, " takes no positional arguments; got '",
                                   options.args.front(), "'"));
  }
  if (options.batch < 1) return Usage(err, "--batch must be >= 1");
  if (options.channels < 1) return Usage(err, "--channels must be >= 1");
  if (options.top_k < 0) return Usage(err, "--top-k must be >= 0");
  if (options.max_detections < 0) return Usage(err, "--max-detections must be >= 0");
  if (!options.output_dir.empty() && cmd != "segment") {
    return Usage(err, "--output-dir applies to segment only");
  }
  if (!options.annotate_dir.empty() && cmd != "segment" && cmd != "detect") {
    return Usage(err, "--annotate applies to detect and segment only");
  }
  if (options.client.timeout <= absl::ZeroDuration()) {
    return Usage(err, "--timeout must be positive");
  }
  if (cmd == "bench") return RunBenchCommand(options, out, err);

  auto client = ConnectFrom(options);
  if (!client.ok()) return Usage(err, client.status().message());
  if (task) {
    absl::Status status = RunTask(**client, options, out);
    return status.ok() ? kExitOk : Fail(err, status);
  }
  if (cmd == "models") {
    absl::Status status = RunModels(**client, options, out);
    return status.ok() ? kExitOk : Fail(err, status);
  }
  absl::StatusOr<bool> serving = RunHealth(**client, options, out);
  if (!serving.ok()) {
    out << "NOT_SERVING\n";
    return Fail(err, serving.status());
  }
  return *serving ? kExitOk : kExitFailure;
}

}  // namespace vitserve::client
