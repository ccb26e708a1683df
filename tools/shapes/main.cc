// vitserve-shapes: writes a set of synthetic scenes (tools/shapes/scene.h) with COCO instances,
// semantic label maps and a labels.txt, for training and scoring the detection, segmentation
// and classification demo models. Flags are parsed here and nowhere else.
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "common/flag_names.h"
#include "common/status_macros.h"
#include "tools/shapes/coco.h"
#include "tools/shapes/scene.h"

ABSL_FLAG(std::string, out, "", "Output folder (created; existing files of the set are replaced).");
ABSL_FLAG(int64_t, count, 100, "Number of scenes.");
ABSL_FLAG(uint64_t, seed, 0,
          "Seed. Scene i depends only on (seed, i): --count 10 makes the first 10 scenes of "
          "--count 1000. Use a seed never used for training for a held-out set.");
ABSL_FLAG(std::string, size, "",
          "Image size WxH for every scene (e.g. 320x240). Empty: a random size per scene, "
          "width 256..640 and height 192..480.");
ABSL_FLAG(int, max_shapes, 6, "At most this many shapes per scene (1..64; at least one).");
ABSL_FLAG(int, quality, 90, "JPEG quality of the images (1..100).");

namespace vitserve::shapes {
namespace {

namespace fs = std::filesystem;

struct Options {
  std::string out;
  int64_t count = 0;
  uint64_t seed = 0;
  SceneOptions scene;
  int quality = 90;
};

absl::StatusOr<Options> OptionsFromFlags() {
  Options options;
  options.out = absl::GetFlag(FLAGS_out);
  if (options.out.empty()) return absl::InvalidArgumentError("--out is required");
  options.count = absl::GetFlag(FLAGS_count);
  if (options.count < 1 || options.count > 10'000'000) {
    return absl::InvalidArgumentError(
        absl::StrCat("--count must be 1..10000000, got ", options.count));
  }
  options.seed = absl::GetFlag(FLAGS_seed);
  const std::string size = absl::GetFlag(FLAGS_size);
  if (!size.empty()) {
    const std::vector<std::string> parts = absl::StrSplit(size, 'x');
    if (parts.size() != 2 || !absl::SimpleAtoi(parts[0], &options.scene.width) ||
        !absl::SimpleAtoi(parts[1], &options.scene.height) || options.scene.width < 32 ||
        options.scene.height < 32 || options.scene.width > 8192 || options.scene.height > 8192) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--size must be WxH with each side 32..8192 (e.g. 320x240), got '", size, "'"));
    }
  }
  options.scene.max_shapes = absl::GetFlag(FLAGS_max_shapes);
  if (options.scene.max_shapes < 1 || options.scene.max_shapes > 64) {
    return absl::InvalidArgumentError(
        absl::StrCat("--max-shapes must be 1..64, got ", options.scene.max_shapes));
  }
  options.quality = absl::GetFlag(FLAGS_quality);
  if (options.quality < 1 || options.quality > 100) {
    return absl::InvalidArgumentError(
        absl::StrCat("--quality must be 1..100, got ", options.quality));
  }
  return options;
}

absl::Status WriteImage(const fs::path& path, const cv::Mat& image,
                        const std::vector<int>& params) {
  if (!cv::imwrite(path.string(), image, params)) {
    return absl::InternalError(absl::StrCat("could not write ", path.string()));
  }
  return absl::OkStatus();
}

absl::Status WriteText(const fs::path& path, const std::string& text) {
  std::ofstream file(path, std::ios::binary | std::ios::trunc);
  file << text;
  file.close();
  if (!file) return absl::InternalError(absl::StrCat("could not write ", path.string()));
  return absl::OkStatus();
}

absl::Status Run(const Options& options) {
  const fs::path out(options.out);
  std::error_code error;
  for (const char* sub : {"images", "semantic"}) {
    fs::create_directories(out / sub, error);
    if (error) {
      return absl::FailedPreconditionError(
          absl::StrCat("could not create ", (out / sub).string(), ": ", error.message()));
    }
  }
  const std::vector<int> jpeg = {cv::IMWRITE_JPEG_QUALITY, options.quality};
  const std::vector<int> png = {cv::IMWRITE_PNG_COMPRESSION, 6};
  std::vector<AnnotatedImage> annotated;
  annotated.reserve(static_cast<size_t>(options.count));
  using Clock = std::chrono::steady_clock;
  const Clock::time_point start = Clock::now();
  Clock::time_point next_report = start + std::chrono::seconds(2);
  int64_t shapes = 0;
  for (int64_t i = 0; i < options.count; ++i) {
    VITSERVE_ASSIGN_OR_RETURN(Scene scene, GenerateScene(options.scene, options.seed, i));
    const std::string stem = absl::StrFormat("%06d", i + 1);
    cv::Mat bgr;
    cv::cvtColor(scene.image, bgr, cv::COLOR_RGB2BGR);
    VITSERVE_RETURN_IF_ERROR(WriteImage(out / "images" / (stem + ".jpg"), bgr, jpeg));
    VITSERVE_RETURN_IF_ERROR(WriteImage(out / "semantic" / (stem + ".png"), scene.class_map, png));
    shapes += static_cast<int64_t>(scene.shapes.size());
    annotated.push_back(AnnotatedImage{i + 1, stem + ".jpg", scene.image.cols, scene.image.rows,
                                       std::move(scene.shapes)});
    const Clock::time_point now = Clock::now();
    if (now >= next_report || i + 1 == options.count) {
      const double seconds = std::chrono::duration<double>(now - start).count();
      const double rate = seconds > 0 ? static_cast<double>(i + 1) / seconds : 0.0;
      std::fprintf(stderr, "[shapes] %lld/%lld scenes, %lld shapes, %.0f scenes/s, ETA %.0f s\n",
                   static_cast<long long>(i + 1), static_cast<long long>(options.count),
                   static_cast<long long>(shapes), rate,
                   rate > 0 ? static_cast<double>(options.count - i - 1) / rate : 0.0);
      next_report = now + std::chrono::seconds(2);
    }
  }
  VITSERVE_RETURN_IF_ERROR(
      WriteText(out / "instances.json", CocoDataset(annotated).dump() + "\n"));
  std::string labels;
  for (std::string_view name : kClassNames) labels.append(name).append("\n");
  VITSERVE_RETURN_IF_ERROR(WriteText(out / "labels.txt", labels));
  std::fprintf(stderr, "[shapes] wrote %s/{images,semantic,instances.json,labels.txt}\n",
               options.out.c_str());
  return absl::OkStatus();
}

}  // namespace
}  // namespace vitserve::shapes

int main(int argc, char** argv) {
  constexpr char kUsage[] =
      "Writes synthetic scenes of shapes with exact ground truth, for training and scoring\n"
      "detection, segmentation and classification models.\n\n"
      "  vitserve-shapes --out DIR [--count N] [--seed S] [--size WxH] [--max-shapes K]\n\n"
      "Classes (index = COCO category id = model class): 1 circle, 2 square, 3 triangle,\n"
      "4 star, 5 hexagon; 0 is the background. Each scene has 1..K rotated, coloured, textured\n"
      "shapes on a varied background; a shape lies inside the image and at most 30% of it is\n"
      "covered by later shapes. Writes:\n"
      "  DIR/images/NNNNNN.jpg      the scenes (RGB JPEG)\n"
      "  DIR/semantic/NNNNNN.png    8-bit label maps: pixel = class index of what is visible\n"
      "  DIR/instances.json         COCO instances: bbox and polygon of each whole shape,\n"
      "                             area = its visible pixels (pycocotools reads it)\n"
      "  DIR/labels.txt             class names by index, background first\n"
      "Scene i depends only on (seed, i) and this build. Exit status 1 on any error.";
  absl::SetProgramUsageMessage(kUsage);
  if (vitserve::WantsHelp(argc, argv)) {
    std::printf("%s\n\nFlags (names take '-' or '_'):\n%s", kUsage,
                vitserve::DashedFlagHelp({"out", "count", "seed", "size", "max_shapes", "quality"})
                    .c_str());
    return 0;
  }
  std::vector<std::string> normalized = vitserve::NormalizeFlagNames(argc, argv);
  std::vector<char*> args = vitserve::ArgvPointers(normalized);
  const std::vector<char*> positional =
      absl::ParseCommandLine(static_cast<int>(args.size()), args.data());
  if (positional.size() > 1) {
    std::fprintf(stderr, "vitserve-shapes: unexpected argument '%s' (see --help)\n",
                 positional[1]);
    return 1;
  }
  absl::StatusOr<vitserve::shapes::Options> options = vitserve::shapes::OptionsFromFlags();
  absl::Status status = options.ok() ? vitserve::shapes::Run(*options) : options.status();
  if (!status.ok()) {
    std::fprintf(stderr, "vitserve-shapes: %s\n", std::string(status.message()).c_str());
    return 1;
  }
  return 0;
}
