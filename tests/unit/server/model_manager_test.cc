#include "server/model_manager.h"

#include <fstream>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/core/InferenceMode.h>
#include <torch/cuda.h>

#include "absl/synchronization/notification.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "absl/strings/str_cat.h"
#include "models/heads/topk.h"
#include "models/model_loader.h"
#include "models/registry.h"
#include "models/weights/safetensors.h"
#include "models/weights/state_dict.h"
#include "server/config/file_util.h"
#include "server/metrics/server_metrics.h"

namespace vitserve {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;

// shvit_s1 with random weights: the smallest zoo model, fast on CPU. Batches of at most 2 keep
// the load-time warm-up short.
constexpr char kGoodConfig[] = R"pb(
  architecture: "shvit_s1"
  allow_random_weights: true
  batching { max_batch_size: 2 max_queue_delay_us: 100 }
)pb";

class ModelManagerTest : public ::testing::Test {
 protected:
  // One intra-op thread: on a small, shared CI machine OpenMP's barrier waits turn a 0.3 s load
  // (build + warm-up) into 15 s. Production sizes its threads elsewhere.
  static void SetUpTestSuite() { at::set_num_threads(1); }

  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    repo_ = JoinPath(::testing::TempDir(), std::string("vitserve_mm_") + info->name());
    RemoveTree(repo_);
    ASSERT_TRUE(MakeDirectories(repo_).ok());
  }
  void TearDown() override { RemoveTree(repo_); }

  // (std::filesystem is off limits in binaries that link LibTorch: see file_util.h.)
  void WriteConfig(const std::string& model, const std::string& text) {
    ASSERT_TRUE(MakeDirectories(JoinPath(repo_, model)).ok());
    std::ofstream(JoinPath(JoinPath(repo_, model), "config.pbtxt")) << text;
  }

  std::unique_ptr<ModelManager> QuickManager() {
    ModelManagerOptions options;
    options.quick_model = "shvit_s1";
    options.defaults.max_batch_size = 2;
    auto manager = ModelManager::Create(options, &registry_, &metrics_);
    EXPECT_TRUE(manager.ok()) << manager.status();
    return manager.ok() ? *std::move(manager) : nullptr;
  }

  std::unique_ptr<ModelManager> RepositoryManager() {
    ModelManagerOptions options;
    options.repository_dir = repo_;
    auto manager = ModelManager::Create(options, &registry_, &metrics_);
    EXPECT_TRUE(manager.ok()) << manager.status();
    return manager.ok() ? *std::move(manager) : nullptr;
  }

  // Schedules one zero image and waits for its result.
  static absl::StatusOr<at::Tensor> Infer(const ServableModel& model) {
    const int64_t size = model.preprocess_spec().input_size;
    return Infer(model, at::zeros({1, 3, size, size}));
  }

  // Schedules `images` as one task (reading `output_columns`) and waits for its result.
  static absl::StatusOr<at::Tensor> Infer(const ServableModel& model, const at::Tensor& images,
                                          int64_t output_columns = 0) {
    absl::Notification done;
    absl::StatusOr<at::Tensor> result;
    auto task = std::make_unique<InferenceTask>();
    task->input = images;
    task->output_columns = output_columns;
    task->on_done = [&](absl::StatusOr<at::Tensor> r) {
      result = std::move(r);
      done.Notify();
    };
    absl::Status status = model.Schedule(&task);
    if (!status.ok()) return status;
    done.WaitForNotification();
    return result;
  }

  ModelRegistry registry_ = BuiltinModelRegistry();
  prometheus::Registry prometheus_;
  ServerMetrics metrics_{prometheus_};
  std::string repo_;
};

TEST_F(ModelManagerTest, QuickModeServesTheModel) {
  auto manager = QuickManager();
  ASSERT_NE(manager, nullptr);
  ASSERT_TRUE(manager->LoadAll().ok());
  EXPECT_TRUE(manager->AllReady());

  absl::StatusOr<std::shared_ptr<const ServableModel>> model = manager->Get("shvit_s1");
  ASSERT_TRUE(model.ok()) << model.status();
  const ServableModel& m = **model;
  EXPECT_EQ(m.name(), "shvit_s1");
  EXPECT_TRUE(m.random_weights());
  EXPECT_GT(m.parameter_count(), 1'000'000);
  EXPECT_EQ(m.preprocess_spec().input_size, 224);
  EXPECT_EQ(m.info().num_classes, 1000);
  ASSERT_EQ(m.labels().size(), 1000u);
  EXPECT_EQ(m.labels()[7], "7");
  EXPECT_EQ(m.config().device(), "cpu");

  absl::StatusOr<at::Tensor> logits = Infer(m);
  ASSERT_TRUE(logits.ok()) << logits.status();
  EXPECT_EQ(logits->sizes(), (at::IntArrayRef{1, 1000}));
  EXPECT_EQ(logits->scalar_type(), at::kFloat);
  // On the CPU the host computes the top-k: the rows are the logits alone.
  EXPECT_EQ(m.output_layout().num_classes, 1000);
  EXPECT_EQ(m.output_layout().device_top_k, 0);

  const ModelStatisticsSnapshot stats = m.Statistics();
  EXPECT_EQ(stats.success.count, 1u);
  EXPECT_EQ(stats.inference_count, 1u);
  EXPECT_EQ(stats.execution_count, 1u);
  EXPECT_EQ(stats.queue.count, 1u);
  ASSERT_EQ(stats.batch_stats.size(), 1u);
  EXPECT_EQ(stats.batch_stats[0].batch_size, 1u);
  EXPECT_GT(stats.last_inference_ms, 0u);

  EXPECT_EQ(manager->Load("shvit_s1").code(), absl::StatusCode::kFailedPrecondition);
}

TEST_F(ModelManagerTest, ScheduleRejectsWrongInputAndLeavesTask) {
  auto manager = QuickManager();
  ASSERT_TRUE(manager->LoadAll().ok());
  auto model = manager->Get("shvit_s1");
  ASSERT_TRUE(model.ok());
  auto task = std::make_unique<InferenceTask>();
  task->input = at::zeros({1, 3, 100, 100});
  task->on_done = [](absl::StatusOr<at::Tensor>) {};
  absl::Status status = (*model)->Schedule(&task);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(), HasSubstr("[N,3,224,224]"));
  ASSERT_NE(task, nullptr);
  EXPECT_TRUE(static_cast<bool>(task->on_done));
  EXPECT_EQ((*model)->Statistics().fail.count, 1u);

  // Columns the model's rows do not have.
  task->input = at::zeros({1, 3, 224, 224});
  task->output_columns = 7;
  status = (*model)->Schedule(&task);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(), HasSubstr("output_columns 7"));
  ASSERT_NE(task, nullptr);
  EXPECT_EQ(task->output_columns, 7);
}

TEST_F(ModelManagerTest, UnknownModelIsNotFoundAndListsNames) {
  auto manager = QuickManager();
  ASSERT_TRUE(manager->LoadAll().ok());
  auto model = manager->Get("resnet50");
  EXPECT_EQ(model.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(model.status().message(), AllOf(HasSubstr("resnet50"), HasSubstr("shvit_s1")));
}

TEST_F(ModelManagerTest, BrokenConfigFailsOnlyThatModel) {
  WriteConfig("good", kGoodConfig);
  WriteConfig("bad", "architecture: \"shvit_s1\"\nbatching { max_batch: 4 }\n");
  auto manager = RepositoryManager();
  ASSERT_NE(manager, nullptr);
  absl::Status status = manager->LoadAll();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(), AllOf(HasSubstr("1 of 2"), HasSubstr("bad")));

  const std::vector<ModelStatus> list = manager->List();
  ASSERT_EQ(list.size(), 2u);
  EXPECT_EQ(list[0].name, "bad");
  EXPECT_EQ(list[0].state, ModelState::kFailed);
  EXPECT_THAT(list[0].reason, AllOf(HasSubstr("bad/config.pbtxt:2:"),
                                    HasSubstr("unknown field \"max_batch\"")));
  EXPECT_EQ(list[1].name, "good");
  EXPECT_EQ(list[1].state, ModelState::kReady);

  auto good = manager->Get("good");
  ASSERT_TRUE(good.ok()) << good.status();
  EXPECT_TRUE(Infer(**good).ok());
  auto bad = manager->Get("bad");
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(bad.status().message(), HasSubstr("max_batch"));
  EXPECT_FALSE(manager->AllReady());
}

TEST_F(ModelManagerTest, MissingWeightsWithoutRandomAllowedFails) {
  WriteConfig("m", "architecture: \"shvit_s1\"");
  auto manager = RepositoryManager();
  EXPECT_EQ(manager->LoadAll().code(), absl::StatusCode::kNotFound);
  auto model = manager->Get("m");
  EXPECT_EQ(model.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(model.status().message(),
              AllOf(HasSubstr("model.safetensors"), HasSubstr("allow_random_weights")));
}

TEST_F(ModelManagerTest, UnloadStopsHandingOutButHeldHandleFinishes) {
  WriteConfig("good", kGoodConfig);
  auto manager = RepositoryManager();
  ASSERT_TRUE(manager->LoadAll().ok());
  auto held = manager->Get("good");
  ASSERT_TRUE(held.ok());

  ASSERT_TRUE(manager->Unload("good").ok());
  auto after = manager->Get("good");
  EXPECT_EQ(after.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(after.status().message(), HasSubstr("unloaded"));
  EXPECT_EQ(manager->List()[0].state, ModelState::kUnavailable);
  EXPECT_TRUE(Infer(**held).ok());  // The held handle still serves.
  EXPECT_EQ(manager->Unload("nope").code(), absl::StatusCode::kNotFound);

  ASSERT_TRUE(manager->Load("good").ok());  // And it can come back.
  EXPECT_TRUE(manager->Get("good").ok());
  EXPECT_EQ(manager->Load("nope").code(), absl::StatusCode::kNotFound);
}

TEST_F(ModelManagerTest, ReloadSwapsAndKeepsHeldHandleUsable) {
  WriteConfig("good", kGoodConfig);
  auto manager = RepositoryManager();
  ASSERT_TRUE(manager->LoadAll().ok());
  auto old_handle = manager->Get("good");
  ASSERT_TRUE(old_handle.ok());

  ASSERT_TRUE(manager->Load("good").ok());
  auto new_handle = manager->Get("good");
  ASSERT_TRUE(new_handle.ok());
  EXPECT_NE(old_handle->get(), new_handle->get());
  EXPECT_TRUE(Infer(**old_handle).ok());
  EXPECT_TRUE(Infer(**new_handle).ok());

  // A reload that fails keeps the old version serving.
  WriteConfig("good", "architecture: \"shvit_s1\" input { crop_pct: 3 }");
  EXPECT_EQ(manager->Load("good").code(), absl::StatusCode::kInvalidArgument);
  auto still = manager->Get("good");
  ASSERT_TRUE(still.ok());
  EXPECT_EQ(still->get(), new_handle->get());
}

TEST_F(ModelManagerTest, ReleasingLastHandleInsideOnDoneDoesNotDeadlock) {
  auto manager = QuickManager();
  ASSERT_TRUE(manager->LoadAll().ok());
  auto handle = std::make_shared<std::shared_ptr<const ServableModel>>(*manager->Get("shvit_s1"));
  ASSERT_TRUE(manager->Unload("shvit_s1").ok());  // Now `handle` is the last reference.
  absl::Notification done;
  auto task = std::make_unique<InferenceTask>();
  task->input = at::zeros({1, 3, 224, 224});
  task->on_done = [handle, &done](absl::StatusOr<at::Tensor> result) {
    handle->reset();  // Contract violation: the destructor must not join its own thread.
    done.Notify();
  };
  const ServableModel* raw = handle->get();
  ASSERT_TRUE(raw->Schedule(&task).ok());
  handle.reset();  // The callback now owns the only reference.
  EXPECT_TRUE(done.WaitForNotificationWithTimeout(absl::Seconds(20)));
}

TEST_F(ModelManagerTest, ShutdownMakesModelsUnavailable) {
  auto manager = QuickManager();
  ASSERT_TRUE(manager->LoadAll().ok());
  auto held = manager->Get("shvit_s1");
  ASSERT_TRUE(held.ok());
  manager->Shutdown(absl::Seconds(5));
  EXPECT_FALSE(manager->AllReady());
  EXPECT_EQ(manager->Get("shvit_s1").status().code(), absl::StatusCode::kUnavailable);
  auto task = std::make_unique<InferenceTask>();
  task->input = at::zeros({1, 3, 224, 224});
  task->on_done = [](absl::StatusOr<at::Tensor>) {};
  EXPECT_EQ((*held)->Schedule(&task).code(), absl::StatusCode::kUnavailable);
}

// Runs only on a CUDA host (the lead's H100): two fp16 instances on one GPU share a batcher.
TEST_F(ModelManagerTest, ServesOnCudaInHalfPrecisionWithTwoInstances) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  WriteConfig("gpu", R"pb(
    architecture: "shvit_s1"
    allow_random_weights: true
    device: "cuda:0"
    precision: FP16
    instance_count: 2
    batching { max_batch_size: 4 max_queue_delay_us: 2000 }
  )pb");
  // Declared before the manager, so they outlive its executor threads.
  constexpr int kTasks = 16;
  absl::Mutex mu;
  int ok = 0, finished = 0;
  auto manager = RepositoryManager();
  ASSERT_TRUE(manager->LoadAll().ok());
  auto model = manager->Get("gpu");
  ASSERT_TRUE(model.ok()) << model.status();
  for (int i = 0; i < kTasks; ++i) {
    auto task = std::make_unique<InferenceTask>();
    task->input = at::rand({1 + i % 2, 3, 224, 224});
    task->on_done = [&](absl::StatusOr<at::Tensor> r) {
      absl::MutexLock lock(&mu);
      if (r.ok() && r->device().is_cpu() && r->scalar_type() == at::kFloat &&
          r->size(1) == 1000 && at::isfinite(*r).all().item<bool>()) {
        ++ok;
      }
      ++finished;
    };
    ASSERT_TRUE((*model)->Schedule(&task).ok());
  }
  absl::MutexLock lock(&mu);
  mu.Await(absl::Condition(+[](int* n) { return *n == kTasks; }, &finished));
  EXPECT_EQ(ok, kTasks);
}

// With random weights every instance serves the same model: an image gets one answer whichever
// executor computes it (each instance's LoadModel draws its own weights, which the manager
// replaces with the first instance's).
TEST_F(ModelManagerTest, InstancesOfARandomWeightsModelAnswerAlike) {
  WriteConfig("twins", R"pb(
    architecture: "shvit_s1"
    allow_random_weights: true
    device: "cpu"
    instance_count: 2
    input { size: 64 }
    batching { max_batch_size: 1 max_queue_delay_us: 0 }
  )pb");
  constexpr int kTasks = 24;
  absl::Mutex mu;
  std::vector<at::Tensor> outputs;
  std::set<std::thread::id> executors;
  int finished = 0;
  auto manager = RepositoryManager();
  ASSERT_TRUE(manager->LoadAll().ok());
  auto model = manager->Get("twins");
  ASSERT_TRUE(model.ok()) << model.status();
  const at::Tensor image = at::rand({1, 3, 64, 64});
  for (int i = 0; i < kTasks; ++i) {
    auto task = std::make_unique<InferenceTask>();
    task->input = image;
    task->on_done = [&](absl::StatusOr<at::Tensor> r) {
      absl::MutexLock lock(&mu);
      if (r.ok()) outputs.push_back(*r);
      executors.insert(std::this_thread::get_id());  // on_done runs on the executor
      ++finished;
    };
    ASSERT_TRUE((*model)->Schedule(&task).ok());
  }
  absl::MutexLock lock(&mu);
  mu.Await(absl::Condition(+[](int* n) { return *n == kTasks; }, &finished));
  ASSERT_EQ(outputs.size(), static_cast<size_t>(kTasks));
  EXPECT_EQ(executors.size(), 2u) << "both instances should have computed";
  for (const at::Tensor& output : outputs) {
    EXPECT_TRUE(at::allclose(output, outputs.front(), 1e-5, 1e-6));
  }
}

// Every family captures into CUDA graphs and, replayed with padding, answers as the same weights
// do eagerly on CPU. Runs only on a CUDA host.
TEST_F(ModelManagerTest, CudaGraphsServeEveryFamilyWithTheEagerCpuAnswers) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  for (const char* architecture :
       {"shvit_s1", "deit_tiny_patch16_224", "vim_tiny", "vittm_small", "vit_small_tokenlearner",
        "deit_small_fibottention"}) {
    SCOPED_TRACE(architecture);
    const std::string name = std::string("g_") + architecture;
    std::shared_ptr<VisionModel> source = registry_.Create(architecture).value();
    ASSERT_TRUE(MakeDirectories(JoinPath(repo_, name)).ok());
    ASSERT_TRUE(
        WriteSafetensors(JoinPath(JoinPath(repo_, name), "model.safetensors"),
                         StateDictTensors(*source))
            .ok());
    WriteConfig(name, absl::StrCat("architecture: \"", architecture, "\"\n",
                                   "device: \"cuda:0\" precision: FP32 cuda_graphs: true\n",
                                   "batching { max_batch_size: 4 max_queue_delay_us: 100 }"));
  }
  auto manager = RepositoryManager();
  ASSERT_TRUE(manager->LoadAll().ok());
  for (const char* architecture :
       {"shvit_s1", "deit_tiny_patch16_224", "vim_tiny", "vittm_small", "vit_small_tokenlearner",
        "deit_small_fibottention"}) {
    SCOPED_TRACE(architecture);
    const std::string name = std::string("g_") + architecture;
    auto model = manager->Get(name);
    ASSERT_TRUE(model.ok()) << model.status();
    LoadOptions load;
    load.weights_path = JoinPath(JoinPath(repo_, name), "model.safetensors");
    absl::StatusOr<LoadedModel> cpu = LoadModel(registry_, architecture, load);
    ASSERT_TRUE(cpu.ok()) << cpu.status();
    for (int64_t rows : {3, 1}) {  // Padded into the bucket of 4, then exactly bucket 1.
      at::manual_seed(rows);
      const at::Tensor images = at::rand({rows, 3, 224, 224});
      const absl::StatusOr<at::Tensor> result = Infer(**model, images);
      ASSERT_TRUE(result.ok()) << result.status();
      c10::InferenceMode guard;
      const at::Tensor expected = cpu->module->forward(images);
      EXPECT_TRUE(at::allclose(*result, expected, 1e-3, 1e-3))
          << "rows " << rows << ": max |diff| "
          << (*result - expected).abs().max().item<float>();
      // Asked for, the rows carry the softmax top-k the GPU computed (in the same CUDA graph):
      // the logits as without them, and the places TopKSoftmax gives for those logits.
      const ClassifierOutputLayout layout = (**model).output_layout();
      ASSERT_EQ(layout.num_classes, 1000);
      ASSERT_EQ(layout.device_top_k, kDeviceTopK);
      const absl::StatusOr<at::Tensor> with_top_k = Infer(**model, images, layout.columns());
      ASSERT_TRUE(with_top_k.ok()) << with_top_k.status();
      ASSERT_EQ(with_top_k->size(1), layout.columns());
      const at::Tensor logits = with_top_k->narrow(1, 0, layout.num_classes);
      EXPECT_TRUE(at::allclose(logits, *result, 1e-5, 1e-6));
      const auto host = TopKSoftmax(logits, kDeviceTopK);
      const auto device = TopKOfOutput(*with_top_k, layout, kDeviceTopK);
      ASSERT_TRUE(host.ok() && device.ok()) << host.status() << device.status();
      // The GPU's expf and the host's std::exp may differ in the last bit, so two classes
      // whose probabilities agree to that precision may swap places (seen with shvit_s1's
      // random weights): each place must name a distinct class whose probability, computed
      // on the host, is the host's score at that place.
      const at::Tensor probabilities = at::softmax(logits.to(at::kDouble), 1);
      for (int64_t r = 0; r < rows; ++r) {
        std::set<int64_t> places;
        for (int64_t j = 0; j < kDeviceTopK; ++j) {
          const int64_t index = (*device)[r][j].index;
          ASSERT_TRUE(index >= 0 && index < layout.num_classes) << index;
          EXPECT_TRUE(places.insert(index).second) << "row " << r << " repeats class " << index;
          EXPECT_NEAR(probabilities[r][index].item<double>(), (*host)[r][j].score, 1e-6)
              << "row " << r << " place " << j << ": class " << index << " (host: class "
              << (*host)[r][j].index << ")";
          EXPECT_NEAR((*device)[r][j].score, (*host)[r][j].score, 1e-6);
        }
      }
    }
  }
}

// The detector and the segmenter (shvit_s1 with their heads, built from a config) capture into
// CUDA graphs too and, replayed with padding, answer as the same weights do eagerly on CPU: in
// fp32 closely, in fp16 within half precision. Runs only on a CUDA host.
TEST_F(ModelManagerTest, CudaGraphsServeDenseModelsWithTheEagerCpuAnswers) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  struct Case {
    const char* name;
    const char* architecture;
    ModelTask task;
    const char* task_field;
    int64_t classes;
    const char* precision;
    double tolerance;
  };
  const std::vector<Case> cases = {
      {"seg32", "shvit_s1", ModelTask::kSegmentation, "SEGMENTATION", 6, "FP32", 1e-3},
      {"det32", "shvit_s1", ModelTask::kDetection, "DETECTION", 5, "FP32", 1e-3},
      {"seg16", "shvit_s1", ModelTask::kSegmentation, "SEGMENTATION", 6, "FP16", 5e-2},
      {"det16", "shvit_s1", ModelTask::kDetection, "DETECTION", 5, "FP16", 5e-2},
      {"vitseg32", "deit_tiny_patch16_224", ModelTask::kSegmentation, "SEGMENTATION", 6, "FP32",
       1e-3},
      {"vitdet16", "deit_tiny_patch16_224", ModelTask::kDetection, "DETECTION", 5, "FP16", 5e-2},
  };
  for (const Case& c : cases) {
    std::shared_ptr<VisionModel> source =
        registry_.CreateForTask(c.architecture, c.task, c.classes).value().model;
    ASSERT_TRUE(MakeDirectories(JoinPath(repo_, c.name)).ok());
    ASSERT_TRUE(WriteSafetensors(JoinPath(JoinPath(repo_, c.name), "model.safetensors"),
                                 StateDictTensors(*source))
                    .ok());
    WriteConfig(c.name, absl::StrCat("architecture: \"", c.architecture, "\" task: ", c.task_field,
                                     " num_classes: ", c.classes, "\n", "device: \"cuda:0\" precision: ",
                                     c.precision, " cuda_graphs: true\n",
                                     "batching { max_batch_size: 4 max_queue_delay_us: 100 }"));
  }
  auto manager = RepositoryManager();
  ASSERT_TRUE(manager->LoadAll().ok());
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    auto model = manager->Get(c.name);
    ASSERT_TRUE(model.ok()) << model.status();
    LoadOptions load;
    load.weights_path = JoinPath(JoinPath(repo_, c.name), "model.safetensors");
    load.task = c.task;
    load.num_classes = c.classes;
    absl::StatusOr<LoadedModel> cpu = LoadModel(registry_, c.architecture, load);
    ASSERT_TRUE(cpu.ok()) << cpu.status();
    for (int64_t rows : {3, 1}) {  // Padded into the bucket of 4, then exactly bucket 1.
      at::manual_seed(rows);
      const at::Tensor images = at::rand({rows, 3, 224, 224});
      const absl::StatusOr<at::Tensor> result = Infer(**model, images);
      ASSERT_TRUE(result.ok()) << result.status();
      c10::InferenceMode guard;
      const at::Tensor expected = cpu->module->forward(images);
      const at::Tensor served = result->to(at::kCPU, at::kFloat);
      ASSERT_EQ(served.sizes(), expected.sizes());
      // Relative to the outputs' scale: fp16 keeps about three significant digits.
      const double scale = std::max(1.0, expected.abs().max().item<double>());
      EXPECT_LT((served - expected).abs().max().item<double>(), c.tolerance * scale)
          << "rows " << rows;
    }
  }
}

TEST_F(ModelManagerTest, CreateValidatesOptions) {
  ModelManagerOptions options;
  EXPECT_EQ(ModelManager::Create(options, &registry_, &metrics_).status().code(),
            absl::StatusCode::kInvalidArgument);
  options.repository_dir = JoinPath(repo_, "missing");
  EXPECT_EQ(ModelManager::Create(options, &registry_, &metrics_).status().code(),
            absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace vitserve
