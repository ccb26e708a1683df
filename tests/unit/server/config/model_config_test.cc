#include "server/config/model_config.h"

#include <fstream>
#include <initializer_list>
#include <string>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "models/registry.h"
#include "server/config/file_util.h"
#include "server/config/model_repository.h"

namespace vitserve {
namespace {

using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::ElementsAreArray;
using ::testing::HasSubstr;

// A fresh directory under the test temp dir, removed at the end of the test.
// (std::filesystem is off limits in binaries that link LibTorch: see file_util.h.)
class TempDir {
 public:
  TempDir() {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    std::string name = std::string("vitserve_config_") + info->test_suite_name() + "_" +
                       info->name();
    for (char& c : name) {
      if (c == '/') c = '_';
    }
    path_ = JoinPath(::testing::TempDir(), name);
    RemoveTree(path_);
    EXPECT_TRUE(MakeDirectories(path_).ok());
  }
  ~TempDir() { RemoveTree(path_); }
  std::string Write(const std::string& relative, const std::string& text) const {
    const std::string file = JoinPath(path_, relative);
    EXPECT_TRUE(MakeDirectories(file.substr(0, file.rfind('/'))).ok());
    std::ofstream(file) << text;
    return file;
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

class ModelConfigTest : public ::testing::Test {
 protected:
  // Parses `text` as <dir>/<model>/config.pbtxt, then normalises and validates it.
  absl::Status Check(const std::string& text, const std::string& model = "m") {
    absl::StatusOr<v1::ModelConfig> config = ParseModelConfigText(text, "m/config.pbtxt");
    if (!config.ok()) return config.status();
    absl::Status s = NormalizeModelConfig(registry_, defaults_, JoinPath(dir_.path(), model),
                                          "m/config.pbtxt", &*config);
    if (!s.ok()) return s;
    return ValidateModelConfig(*config, "m/config.pbtxt");
  }
  // `text` parsed and normalised with defaults_ (no validation): what a field defaults to.
  absl::StatusOr<v1::ModelConfig> Normalized(const char* text) {
    absl::StatusOr<v1::ModelConfig> config = ParseModelConfigText(text, "a/config.pbtxt");
    if (!config.ok()) return config.status();
    absl::Status s = NormalizeModelConfig(registry_, defaults_, dir_.path() + "/a", "a", &*config);
    if (!s.ok()) return s;
    return config;
  }

  // One row of a flag-against-config table: a config, the server flag's value, and what the
  // field normalises to.
  struct FlagCase {
    const char* text;
    bool flag;
    bool expected;
  };
  // Normalises each case's config with the server default `flag` set to the case's flag value
  // and checks the boolean config field `field` against the case.
  void ExpectFieldFollows(bool ServerDefaults::*flag, bool (v1::ModelConfig::*field)() const,
                          std::initializer_list<FlagCase> cases) {
    for (const FlagCase& c : cases) {
      SCOPED_TRACE(c.text);
      defaults_.*flag = c.flag;
      absl::StatusOr<v1::ModelConfig> config = Normalized(c.text);
      ASSERT_TRUE(config.ok()) << config.status();
      EXPECT_EQ(((*config).*field)(), c.expected);
    }
  }

  ModelRegistry registry_ = BuiltinModelRegistry();
  ServerDefaults defaults_;
  TempDir dir_;
};

TEST_F(ModelConfigTest, ParsesFile) {
  const std::string path = dir_.Write("m/config.pbtxt", R"pb(
    architecture: "shvit_s1"
    precision: BF16
    instance_count: 2
    batching { max_batch_size: 16 preferred_batch_sizes: [4, 8] max_queue_delay_us: 500 }
    input { interpolation: "bilinear" }
  )pb");
  absl::StatusOr<v1::ModelConfig> config = ParseModelConfigFile(path);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->architecture(), "shvit_s1");
  EXPECT_EQ(config->precision(), v1::BF16);
  EXPECT_EQ(config->instance_count(), 2u);
  EXPECT_EQ(config->batching().max_batch_size(), 16u);
  EXPECT_THAT(config->batching().preferred_batch_sizes(), ElementsAre(4u, 8u));
}

TEST_F(ModelConfigTest, MissingFileIsNotFoundWithPath) {
  const std::string path = dir_.path() + "/nope/config.pbtxt";
  absl::StatusOr<v1::ModelConfig> config = ParseModelConfigFile(path);
  EXPECT_EQ(config.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(config.status().message(), HasSubstr(path));
}

TEST_F(ModelConfigTest, SyntaxErrorNamesFileLineAndColumn) {
  const std::string path =
      dir_.Write("m/config.pbtxt", "architecture: \"shvit_s1\"\nbatching {\n  max_batch_size: x\n}\n");
  absl::StatusOr<v1::ModelConfig> config = ParseModelConfigFile(path);
  EXPECT_EQ(config.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(config.status().message(), HasSubstr(path + ":3:19:"));
}

TEST_F(ModelConfigTest, UnknownFieldIsNamed) {
  absl::StatusOr<v1::ModelConfig> config = ParseModelConfigText(
      "architecture: \"shvit_s1\"\nbatching { max_batch: 4 }\n", "repo/m/config.pbtxt");
  EXPECT_EQ(config.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(config.status().message(),
              AllOf(HasSubstr("repo/m/config.pbtxt:2:"), HasSubstr("unknown field \"max_batch\""),
                    HasSubstr("vitserve.v1.BatchingPolicy")));
}

TEST_F(ModelConfigTest, NormalizationFillsFromArchitectureAndDefaults) {
  dir_.Write("s4/labels.txt", "a\nb\n");
  v1::ModelConfig config;
  config.set_architecture("shvit_s4");
  defaults_.device = "cuda:1";
  defaults_.precision = v1::FP16;
  defaults_.max_batch_size = 32;
  ASSERT_TRUE(NormalizeModelConfig(registry_, defaults_, dir_.path() + "/s4", "c", &config).ok());
  EXPECT_EQ(config.name(), "s4");
  EXPECT_EQ(config.task(), v1::CLASSIFICATION);
  EXPECT_EQ(config.input().size(), 256u);
  EXPECT_EQ(config.input().mean_size(), 3);
  EXPECT_FLOAT_EQ(config.input().crop_pct(), 0.875f);
  EXPECT_EQ(config.device(), "cuda:1");
  EXPECT_EQ(config.precision(), v1::FP16);
  EXPECT_EQ(config.batching().max_batch_size(), 32u);
  EXPECT_EQ(config.batching().max_queue_delay_us(), 1000u);
  EXPECT_EQ(config.batching().max_queue_size(), 256u);
  EXPECT_EQ(config.instance_count(), kAutoInstanceCountOnCuda);  // On CUDA, no flag given.
  EXPECT_EQ(config.weights(), "model.safetensors");
  EXPECT_EQ(config.labels(), "labels.txt");
  EXPECT_TRUE(ValidateModelConfig(config, "c").ok());

  v1::ModelConfig deit;
  deit.set_architecture("deit_tiny_patch16_224");
  ASSERT_TRUE(NormalizeModelConfig(registry_, defaults_, dir_.path() + "/d", "c", &deit).ok());
  EXPECT_EQ(deit.input().size(), 224u);
  EXPECT_THAT(deit.input().mean(), ElementsAre(0.485f, 0.456f, 0.406f));
  EXPECT_THAT(deit.input().std(), ElementsAre(0.229f, 0.224f, 0.225f));
  EXPECT_EQ(deit.labels(), "");  // No labels.txt in that directory.
}

// instance_count: the config's value, else --instance-count, else (0) 2 on CUDA and 2 on CPU.
TEST_F(ModelConfigTest, InstanceCountComesFromTheConfigTheFlagOrTheDevice) {
  struct Case {
    const char* text;
    uint32_t flag;
    uint32_t expected;
  };
  const Case cases[] = {
      {R"pb(architecture: "shvit_s1" device: "cuda")pb", 0, kAutoInstanceCountOnCuda},
      {R"pb(architecture: "shvit_s1" device: "cuda:1")pb", 0, kAutoInstanceCountOnCuda},
      {R"pb(architecture: "shvit_s1" device: "cpu")pb", 0, kAutoInstanceCountOnCpu},
      {R"pb(architecture: "shvit_s1" device: "cpu" instance_count: 1)pb", 0, 1},
      {R"pb(architecture: "shvit_s1" device: "cuda")pb", 3, 3},
      {R"pb(architecture: "shvit_s1" device: "cpu")pb", 3, 3},
      {R"pb(architecture: "shvit_s1" device: "cuda" instance_count: 1)pb", 3, 1},
  };
  for (const Case& c : cases) {
    defaults_.instance_count = c.flag;
    auto parsed = ParseModelConfigText(c.text, "m/config.pbtxt");
    ASSERT_TRUE(parsed.ok()) << parsed.status();
    ASSERT_TRUE(NormalizeModelConfig(registry_, defaults_, dir_.path() + "/m", "c", &*parsed).ok());
    EXPECT_EQ(parsed->instance_count(), c.expected) << c.text << " flag " << c.flag;
  }
}

// --intra-op-threads 0: 1 on CUDA; on a CPU the cores shared among the instances.
TEST(DefaultIntraOpThreadsTest, SharesTheCoresAmongTheInstancesOnCpu) {
  EXPECT_EQ(kAutoInstanceCountOnCpu, 2u);
  EXPECT_EQ(DefaultIntraOpThreads("cuda", 16, 0), 1);
  EXPECT_EQ(DefaultIntraOpThreads("cuda:1", 16, 4), 1);
  EXPECT_EQ(DefaultIntraOpThreads("cpu", 2, 0), 1);    // two automatic instances
  EXPECT_EQ(DefaultIntraOpThreads("cpu", 16, 0), 8);
  EXPECT_EQ(DefaultIntraOpThreads("cpu", 15, 0), 7);
  EXPECT_EQ(DefaultIntraOpThreads("cpu", 16, 1), 16);  // --instance-count 1: every core
  EXPECT_EQ(DefaultIntraOpThreads("cpu", 16, 4), 4);
  EXPECT_EQ(DefaultIntraOpThreads("cpu", 1, 0), 1);    // never 0
  EXPECT_EQ(DefaultIntraOpThreads("cpu", 2, 8), 1);
}

TEST_F(ModelConfigTest, ExplicitValuesWin) {
  v1::ModelConfig config;
  config.set_architecture("shvit_s1");
  config.mutable_input()->set_size(288);
  config.set_device("cpu");
  ASSERT_TRUE(NormalizeModelConfig(registry_, defaults_, dir_.path() + "/m", "c", &config).ok());
  EXPECT_EQ(config.input().size(), 288u);
}

// cuda_graphs is `optional`: unset takes --cuda-graphs, an explicit false beats a true default.
TEST_F(ModelConfigTest, CudaGraphsFollowTheFlagUnlessTheConfigSaysOtherwise) {
  ExpectFieldFollows(&ServerDefaults::cuda_graphs, &v1::ModelConfig::cuda_graphs,
                     {
                         {R"pb(architecture: "shvit_s1")pb", true, true},
                         {R"pb(architecture: "shvit_s1" cuda_graphs: false)pb", true, false},
                         {R"pb(architecture: "shvit_s1" cuda_graphs: true)pb", false, true},
                     });
}

// cuda_graph_batch_sizes: a config without any takes --cuda-graph-batch-sizes, less the sizes
// above its max batch; a config's own list replaces the flag's, not merges with it.
TEST_F(ModelConfigTest, CudaGraphBatchSizesComeFromTheConfigElseTheFlag) {
  struct Case {
    const char* text;
    std::vector<uint32_t> flag;
    std::vector<uint32_t> expected;
  };
  const Case cases[] = {
      {R"pb(architecture: "shvit_s1" batching { max_batch_size: 128 })pb", {}, {}},
      {R"pb(architecture: "shvit_s1" batching { max_batch_size: 128 })pb", {48, 96}, {48, 96}},
      {R"pb(architecture: "shvit_s1" batching { max_batch_size: 64 })pb", {48, 96}, {48}},
      {R"pb(architecture: "shvit_s1" batching { max_batch_size: 128 }
            cuda_graph_batch_sizes: [16, 112])pb",
       {48, 96},
       {16, 112}},
  };
  for (const Case& c : cases) {
    defaults_.cuda_graph_batch_sizes = c.flag;
    auto parsed = ParseModelConfigText(c.text, "m/config.pbtxt");
    ASSERT_TRUE(parsed.ok()) << parsed.status();
    ASSERT_TRUE(NormalizeModelConfig(registry_, defaults_, dir_.path() + "/m", "c", &*parsed).ok());
    EXPECT_THAT(parsed->cuda_graph_batch_sizes(), ElementsAreArray(c.expected)) << c.text;
    EXPECT_TRUE(ValidateModelConfig(*parsed, "c").ok()) << c.text;
  }
}

// device_preprocessing is `optional`: unset takes --device-preprocessing for models on CUDA and
// is off on CPU; an explicit value wins either way.
TEST_F(ModelConfigTest, DevicePreprocessingFollowsTheFlagOnCudaUnlessTheConfigSaysOtherwise) {
  ExpectFieldFollows(
      &ServerDefaults::device_preprocessing, &v1::ModelConfig::device_preprocessing,
      {
          {R"pb(architecture: "shvit_s1" device: "cuda")pb", true, true},
          {R"pb(architecture: "shvit_s1" device: "cuda:0")pb", false, false},
          {R"pb(architecture: "shvit_s1" device: "cpu")pb", true, false},
          {R"pb(architecture: "shvit_s1" device: "cuda" device_preprocessing: false)pb", true,
           false},
          {R"pb(architecture: "shvit_s1" device: "cpu" device_preprocessing: true)pb", false, true},
      });
}

// gpu_jpeg_decoding: unset takes --gpu-jpeg-decoding for CUDA models with device
// preprocessing; set, it needs both (a field error names it otherwise).
TEST_F(ModelConfigTest, GpuJpegDecodingFollowsTheFlagAndNeedsCudaAndDevicePreprocessing) {
  ExpectFieldFollows(
      &ServerDefaults::gpu_jpeg_decoding, &v1::ModelConfig::gpu_jpeg_decoding,
      {
          {R"pb(architecture: "shvit_s1" device: "cuda")pb", true, true},
          {R"pb(architecture: "shvit_s1" device: "cuda")pb", false, false},
          {R"pb(architecture: "shvit_s1" device: "cpu")pb", true, false},
          {R"pb(architecture: "shvit_s1" device: "cuda" device_preprocessing: false)pb", true,
           false},
          {R"pb(architecture: "shvit_s1" device: "cuda" gpu_jpeg_decoding: false)pb", true, false},
          {R"pb(architecture: "shvit_s1" device: "cuda" gpu_jpeg_decoding: true)pb", false, true},
      });
  defaults_.gpu_jpeg_decoding = false;
  for (const char* text :
       {R"pb(architecture: "shvit_s1" device: "cpu" gpu_jpeg_decoding: true)pb",
        R"pb(architecture: "shvit_s1" device: "cuda" device_preprocessing: false
             gpu_jpeg_decoding: true)pb"}) {
    SCOPED_TRACE(text);
    absl::StatusOr<v1::ModelConfig> config = Normalized(text);
    EXPECT_EQ(config.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(config.status().message(), HasSubstr("'gpu_jpeg_decoding'"));
  }
}

// channels_last, likewise: unset takes --channels-last for models on CUDA and is off on CPU.
TEST_F(ModelConfigTest, ChannelsLastFollowsTheFlagOnCudaUnlessTheConfigSaysOtherwise) {
  ExpectFieldFollows(
      &ServerDefaults::channels_last, &v1::ModelConfig::channels_last,
      {
          {R"pb(architecture: "shvit_s1" device: "cuda")pb", true, true},
          {R"pb(architecture: "shvit_s1" device: "cuda")pb", false, false},
          {R"pb(architecture: "shvit_s1" device: "cpu")pb", true, false},
          {R"pb(architecture: "shvit_s1" device: "cuda" channels_last: false)pb", true, false},
          {R"pb(architecture: "shvit_s1" device: "cpu" channels_last: true)pb", false, true},
      });
}

// approximate_gelu: unset takes --approximate-gelu on any device (it only acts on CUDA in
// fp16/bf16, where the model decides); set, the config wins.
TEST_F(ModelConfigTest, ApproximateGeluFollowsTheFlagUnlessTheConfigSaysOtherwise) {
  ExpectFieldFollows(
      &ServerDefaults::approximate_gelu, &v1::ModelConfig::approximate_gelu,
      {
          {R"pb(architecture: "deit_tiny_patch16_224" device: "cuda")pb", true, true},
          {R"pb(architecture: "deit_tiny_patch16_224" device: "cuda")pb", false, false},
          {R"pb(architecture: "deit_tiny_patch16_224" device: "cpu")pb", true, true},
          {R"pb(architecture: "deit_tiny_patch16_224" device: "cuda" approximate_gelu: false)pb",
           true, false},
          {R"pb(architecture: "deit_tiny_patch16_224" device: "cuda" approximate_gelu: true)pb",
           false, true},
      });
}

TEST_F(ModelConfigTest, ValidConfigPasses) {
  EXPECT_TRUE(Check("architecture: \"shvit_s1\"").ok());
}

TEST_F(ModelConfigTest, MissingArchitecture) {
  absl::Status s = Check("device: \"cpu\"");
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), AllOf(HasSubstr("m/config.pbtxt"), HasSubstr("'architecture'")));
}

TEST_F(ModelConfigTest, UnknownArchitectureListsKnownNames) {
  absl::Status s = Check("architecture: \"resnet50\"");
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), AllOf(HasSubstr("'resnet50'"), HasSubstr("shvit_s1"),
                                 HasSubstr("deit_tiny_patch16_224")));
}

TEST_F(ModelConfigTest, NameMustMatchDirectory) {
  absl::Status s = Check("name: \"other\" architecture: \"shvit_s1\"", "m");
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), AllOf(HasSubstr("'name'"), HasSubstr("'other'"), HasSubstr("'m'")));
  EXPECT_TRUE(Check("name: \"m\" architecture: \"shvit_s1\"", "m").ok());
}

TEST_F(ModelConfigTest, TaskMustBeOneTheArchitectureSupports) {
  const absl::Status detection = Check("architecture: \"vim_tiny\" task: DETECTION");
  EXPECT_THAT(detection.message(), HasSubstr("'task'"));
  EXPECT_THAT(detection.message(), HasSubstr("can only be built for CLASSIFICATION"));
  EXPECT_THAT(Check("architecture: \"deit_small_fibottention\" task: SEGMENTATION").message(),
              HasSubstr("can only be built for CLASSIFICATION"));
  // Another task needs its class count.
  EXPECT_THAT(Check("architecture: \"shvit_s1\" task: SEGMENTATION").message(),
              HasSubstr("'num_classes'"));
}

// A detector's request defaults: filled when unset, checked when set, refused elsewhere.
TEST_F(ModelConfigTest, DetectionDefaults) {
  auto parsed = ParseModelConfigText(
      R"pb(architecture: "shvit_s1" task: DETECTION num_classes: 5)pb", "d/config.pbtxt");
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  ASSERT_TRUE(NormalizeModelConfig(registry_, defaults_, dir_.path() + "/d", "c", &*parsed).ok());
  EXPECT_FLOAT_EQ(parsed->detection().score_threshold(), kDefaultScoreThreshold);
  EXPECT_EQ(parsed->detection().max_detections(), kDefaultMaxDetections);
  EXPECT_TRUE(Check("architecture: \"shvit_s1\" task: DETECTION num_classes: 5 "
                    "detection { score_threshold: 0.5 max_detections: 7 }").ok());
  EXPECT_THAT(Check("architecture: \"shvit_s1\" task: DETECTION num_classes: 5 "
                    "detection { score_threshold: 2 }").message(),
              HasSubstr("'detection.score_threshold'"));
  EXPECT_THAT(Check("architecture: \"shvit_s1\" task: DETECTION num_classes: 5 "
                    "detection { max_detections: 20000 }").message(),
              HasSubstr("'detection.max_detections'"));
  EXPECT_THAT(Check("architecture: \"shvit_s1\" detection { max_detections: 5 }").message(),
              HasSubstr("detection models only"));
}

// shvit_s1 as a segmenter: its own task's class count is not taken, device preprocessing (a
// centre crop) stays off even on CUDA, and asking for it is an error.
TEST_F(ModelConfigTest, SegmentationOnABackboneFromTheConfig) {
  defaults_.device_preprocessing = true;
  auto parsed = ParseModelConfigText(
      R"pb(architecture: "shvit_s1" task: SEGMENTATION num_classes: 6 device: "cuda")pb",
      "s/config.pbtxt");
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  ASSERT_TRUE(NormalizeModelConfig(registry_, defaults_, dir_.path() + "/s", "c", &*parsed).ok());
  EXPECT_EQ(parsed->task(), v1::SEGMENTATION);
  EXPECT_EQ(parsed->num_classes(), 6u);
  EXPECT_FALSE(parsed->device_preprocessing());

  auto classifier = ParseModelConfigText(R"pb(architecture: "shvit_s1")pb", "c/config.pbtxt");
  ASSERT_TRUE(classifier.ok());
  ASSERT_TRUE(
      NormalizeModelConfig(registry_, defaults_, dir_.path() + "/c", "c", &*classifier).ok());
  EXPECT_EQ(classifier->num_classes(), 1000u);  // The architecture's own.

  auto asked = ParseModelConfigText(
      R"pb(architecture: "shvit_s1" task: SEGMENTATION num_classes: 6 device_preprocessing: true)pb",
      "s/config.pbtxt");
  ASSERT_TRUE(asked.ok());
  const absl::Status status =
      NormalizeModelConfig(registry_, defaults_, dir_.path() + "/s", "c", &*asked);
  EXPECT_THAT(status.message(), HasSubstr("'device_preprocessing'"));
  EXPECT_THAT(status.message(), HasSubstr("classification models only"));
}

struct BadField {
  std::string text;
  std::string field;
};

class ModelConfigFieldTest : public ModelConfigTest,
                             public ::testing::WithParamInterface<BadField> {};

TEST_P(ModelConfigFieldTest, RejectedWithFieldAndFileNamed) {
  absl::Status s = Check("architecture: \"shvit_s1\" " + GetParam().text);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << GetParam().text;
  EXPECT_THAT(s.message(), AllOf(HasSubstr("m/config.pbtxt"), HasSubstr(GetParam().field)));
}

INSTANTIATE_TEST_SUITE_P(
    Validation, ModelConfigFieldTest,
    ::testing::Values(BadField{"input { mean: [0.5, 0.5] }", "'input.mean'"},
                      BadField{"input { std: [0.5, 0.5, 0.5, 0.5] }", "'input.std'"},
                      BadField{"input { std: [0.5, 0, 0.5] }", "'input.std'"},
                      BadField{"input { crop_pct: 1.5 }", "'input.crop_pct'"},
                      BadField{"input { crop_pct: -0.5 }", "'input.crop_pct'"},
                      BadField{"input { interpolation: \"nearest\" }", "'input.interpolation'"},
                      BadField{"input { size: 5000 }", "'input.size'"},
                      BadField{"device: \"gpu\"", "'device'"},
                      BadField{"device: \"cuda:x\"", "'device'"},
                      BadField{"device: \"cuda:\"", "'device'"},
                      BadField{"batching { max_batch_size: 2000 }", "'batching.max_batch_size'"},
                      BadField{"batching { max_batch_size: 4 preferred_batch_sizes: [2, 8] }",
                               "'batching.preferred_batch_sizes'"},
                      BadField{"batching { max_batch_size: 64 } cuda_graph_batch_sizes: [32, 96]",
                               "'cuda_graph_batch_sizes'"},
                      BadField{"cuda_graph_batch_sizes: [0]", "'cuda_graph_batch_sizes'"},
                      BadField{"instance_count: 100", "'instance_count'"}));

// A ViT's position embedding fixes its input size: another size is refused when the config is
// read (before, only the load's warm-up found it). Architectures that adapt take any size.
TEST_F(ModelConfigTest, FixedSizeArchitecturesRefuseAnotherInputSize) {
  for (const char* architecture : {"vit_base_patch16_224", "deit_tiny_patch16_224",
                                   "vittm_small", "vit_small_tokenlearner",
                                   "deit_small_fibottention"}) {
    SCOPED_TRACE(architecture);
    const std::string arch = absl::StrCat("architecture: \"", architecture, "\" ");
    const absl::Status other = Check(arch + "input { size: 1024 }");
    EXPECT_EQ(other.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(other.message(),
                AllOf(HasSubstr("m/config.pbtxt"), HasSubstr("'input.size'"),
                      HasSubstr("is 1024"), HasSubstr("takes only 224 px images")));
    EXPECT_TRUE(Check(arch + "input { size: 224 }").ok());
    EXPECT_TRUE(Check(arch).ok());
  }
  for (const char* architecture : {"shvit_s1", "vim_tiny"}) {
    SCOPED_TRACE(architecture);
    EXPECT_TRUE(
        Check(absl::StrCat("architecture: \"", architecture, "\" input { size: 96 }")).ok());
  }
}

TEST_F(ModelConfigTest, DeviceSyntax) {
  EXPECT_TRUE(ValidateDeviceString("cpu").ok());
  EXPECT_TRUE(ValidateDeviceString("cuda").ok());
  EXPECT_TRUE(ValidateDeviceString("cuda:3").ok());
  EXPECT_FALSE(ValidateDeviceString("cuda:-1").ok());
  EXPECT_FALSE(ValidateDeviceString("CPU").ok());
}

TEST_F(ModelConfigTest, KserveInputDatatypes) {
  EXPECT_TRUE(ValidateKserveInputDatatype("FP32").ok());
  EXPECT_TRUE(ValidateKserveInputDatatype("UINT8").ok());
  for (const char* bad : {"", "fp32", "FP16", "INT8"}) {
    const absl::Status status = ValidateKserveInputDatatype(bad);
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_THAT(status.message(), HasSubstr("use FP32 or UINT8")) << bad;
  }
}

TEST_F(ModelConfigTest, RepositoryListsModelDirectoriesWithConfig) {
  dir_.Write("b/config.pbtxt", "architecture: \"shvit_s1\"");
  dir_.Write("a/config.pbtxt", "architecture: \"deit_tiny_patch16_224\"");
  dir_.Write("no_config/readme.txt", "x");
  dir_.Write("stray.pbtxt", "x");
  absl::StatusOr<ModelRepository> repo = ModelRepository::Open(dir_.path());
  ASSERT_TRUE(repo.ok()) << repo.status();
  EXPECT_THAT(repo->ModelNames(), ElementsAre("a", "b"));
  EXPECT_EQ(repo->ModelDir("a"), dir_.path() + "/a");

  absl::StatusOr<v1::ModelConfig> config = repo->LoadConfig("b", registry_, defaults_);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->name(), "b");
  EXPECT_EQ(config->input().size(), 224u);

  absl::StatusOr<v1::ModelConfig> missing = repo->LoadConfig("zz", registry_, defaults_);
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(missing.status().message(), HasSubstr("a, b"));
  dir_.Write("config.pbtxt", "architecture: \"shvit_s1\"");  // The root is not a model.
  EXPECT_EQ(repo->LoadConfig(".", registry_, defaults_).status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(repo->LoadConfig("a/../b", registry_, defaults_).status().code(),
            absl::StatusCode::kNotFound);

  EXPECT_EQ(ModelRepository::Open(dir_.path() + "/none").status().code(),
            absl::StatusCode::kNotFound);
}

TEST_F(ModelConfigTest, QuickModeNamesModelAfterArchitecture) {
  absl::StatusOr<v1::ModelConfig> config =
      QuickModeConfig(registry_, defaults_, "shvit_s1", "");
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->name(), "shvit_s1");
  EXPECT_TRUE(config->allow_random_weights());
  EXPECT_EQ(config->weights(), "");
  EXPECT_EQ(QuickModeConfig(registry_, defaults_, "nope", "").status().code(),
            absl::StatusCode::kInvalidArgument);
  absl::StatusOr<v1::ModelConfig> with_weights =
      QuickModeConfig(registry_, defaults_, "shvit_s1", "/w/model.safetensors");
  ASSERT_TRUE(with_weights.ok());
  EXPECT_FALSE(with_weights->allow_random_weights());
  EXPECT_EQ(with_weights->weights(), "/w/model.safetensors");
}

TEST_F(ModelConfigTest, ReadsLabelsAndChecksCount) {
  const std::string path = dir_.Write("labels.txt", "cat\r\ndog\r\nbird\n\n");
  absl::StatusOr<std::vector<std::string>> labels = ReadLabels(path, 3);
  ASSERT_TRUE(labels.ok()) << labels.status();
  EXPECT_THAT(*labels, ElementsAre("cat", "dog", "bird"));

  absl::StatusOr<std::vector<std::string>> wrong = ReadLabels(path, 1000);
  EXPECT_EQ(wrong.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(wrong.status().message(), AllOf(HasSubstr("3"), HasSubstr("1000")));
  EXPECT_EQ(ReadLabels(dir_.path() + "/none.txt", 3).status().code(),
            absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace vitserve

namespace vitserve {
namespace {

// kserve_input_datatype: empty takes --kserve-input-datatype; FP32 and UINT8 are the choices.
TEST_F(ModelConfigTest, KServeInputDatatypeTakesTheDefaultAndRefusesOthers) {
  struct Case {
    const char* text;
    const char* flag;
    const char* expected;  // nullptr: refused.
  };
  const Case cases[] = {
      {R"pb(architecture: "shvit_s1")pb", "FP32", "FP32"},
      {R"pb(architecture: "shvit_s1")pb", "UINT8", "UINT8"},
      {R"pb(architecture: "shvit_s1" kserve_input_datatype: "UINT8")pb", "FP32", "UINT8"},
      {R"pb(architecture: "shvit_s1" kserve_input_datatype: "FP16")pb", "FP32", nullptr},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.text);
    defaults_.kserve_input_datatype = c.flag;
    absl::StatusOr<v1::ModelConfig> config = Normalized(c.text);
    if (c.expected == nullptr) {
      EXPECT_EQ(config.status().code(), absl::StatusCode::kInvalidArgument);
      EXPECT_THAT(config.status().message(), HasSubstr("kserve_input_datatype"));
    } else {
      ASSERT_TRUE(config.ok()) << config.status();
      EXPECT_EQ(config->kserve_input_datatype(), c.expected);
    }
  }
}

}  // namespace
}  // namespace vitserve
