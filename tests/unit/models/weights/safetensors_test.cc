#include "models/weights/safetensors.h"

#include <ATen/ATen.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdint>
#include <fstream>
#include <map>
#include <string>

#include "tests/test_util/scoped_temp_dir.h"

namespace vitserve {
namespace {

using ::testing::HasSubstr;

// Writes a file by hand: 8-byte little-endian header length, header, data.
void WriteRaw(const std::string& path, const std::string& header, const std::string& data,
              uint64_t declared_header_size) {
  std::ofstream out(path, std::ios::binary);
  for (int i = 0; i < 8; ++i) out.put(static_cast<char>(declared_header_size >> (8 * i)));
  out << header << data;
}

void WriteRaw(const std::string& path, const std::string& header, const std::string& data) {
  WriteRaw(path, header, data, header.size());
}

TEST(SafetensorsTest, RoundTripsF32F16Bf16AndMetadata) {
  const ScopedTempDir temp;
  const std::string path = temp.File("roundtrip.safetensors");
  const std::map<std::string, at::Tensor> tensors = {
      {"a.weight", at::randn({2, 3})},
      {"b.half", at::randn({4}).to(at::kHalf)},
      {"c.bf16", at::randn({2, 2, 2}).to(at::kBFloat16)},
      {"empty", at::zeros({0, 5})},
      {"scalar", at::full({}, 3.5f)},
      {"strided", at::randn({4, 6}).t()},  // Non-contiguous input is written contiguously.
  };
  ASSERT_TRUE(WriteSafetensors(path, tensors, {{"format", "pt"}}).ok());

  absl::StatusOr<SafetensorsFile> file = SafetensorsFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ(file->Names(), (std::vector<std::string>{"a.weight", "b.half", "c.bf16", "empty",
                                                     "scalar", "strided"}));
  EXPECT_EQ(file->metadata().at("format"), "pt");
  for (const auto& [name, expected] : tensors) {
    absl::StatusOr<at::Tensor> actual = file->Tensor(name);
    ASSERT_TRUE(actual.ok()) << actual.status();
    EXPECT_EQ(actual->scalar_type(), expected.scalar_type()) << name;
    EXPECT_EQ(actual->sizes(), expected.sizes()) << name;
    EXPECT_TRUE(at::equal(*actual, expected)) << name;
  }
}

TEST(SafetensorsTest, ViewOutlivesTheFileObject) {
  const ScopedTempDir temp;
  const std::string path = temp.File("view.safetensors");
  const at::Tensor expected = at::arange(10, at::kFloat);
  ASSERT_TRUE(WriteSafetensors(path, {{"x", expected}}).ok());
  at::Tensor view;
  {
    absl::StatusOr<SafetensorsFile> file = SafetensorsFile::Open(path);
    ASSERT_TRUE(file.ok());
    view = file->Tensor("x").value();
  }
  EXPECT_TRUE(at::equal(view, expected));
}

TEST(SafetensorsTest, ReadsUnalignedData) {
  const ScopedTempDir temp;
  // An unpadded header puts F32 data at an odd address; the reader copies instead of viewing.
  const std::string path = temp.File("unaligned.safetensors");
  const std::string header = R"({"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
  ASSERT_NE((8 + header.size()) % 4, 0u);
  const float values[2] = {1.5f, -2.0f};
  WriteRaw(path, header, std::string(reinterpret_cast<const char*>(values), sizeof(values)));
  absl::StatusOr<SafetensorsFile> file = SafetensorsFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_TRUE(at::equal(file->Tensor("x").value(), at::tensor({1.5f, -2.0f})));
}

TEST(SafetensorsTest, MissingFileIsNotFound) {
  const ScopedTempDir temp;
  absl::StatusOr<SafetensorsFile> file = SafetensorsFile::Open(temp.File("does_not_exist"));
  EXPECT_EQ(file.status().code(), absl::StatusCode::kNotFound);
}

TEST(SafetensorsTest, UnknownTensorIsNotFound) {
  const ScopedTempDir temp;
  const std::string path = temp.File("unknown.safetensors");
  ASSERT_TRUE(WriteSafetensors(path, {{"x", at::ones({1})}}).ok());
  EXPECT_EQ(SafetensorsFile::Open(path)->Tensor("y").status().code(), absl::StatusCode::kNotFound);
}

TEST(SafetensorsTest, TruncatedFileNamesFileAndTensor) {
  const ScopedTempDir temp;
  const std::string path = temp.File("truncated.safetensors");
  ASSERT_TRUE(WriteSafetensors(path, {{"first", at::ones({4})}, {"second", at::ones({64})}}).ok());
  // POSIX, not std::filesystem: see server/config/file_util.h.
  struct stat info {};
  ASSERT_EQ(::stat(path.c_str(), &info), 0);
  ASSERT_EQ(::truncate(path.c_str(), info.st_size - 10), 0);
  absl::StatusOr<SafetensorsFile> file = SafetensorsFile::Open(path);
  ASSERT_EQ(file.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(file.status().message(), HasSubstr(path));
  EXPECT_THAT(file.status().message(), HasSubstr("'second'"));
  EXPECT_THAT(file.status().message(), HasSubstr("truncated"));
}

TEST(SafetensorsTest, FileShorterThanLengthField) {
  const ScopedTempDir temp;
  const std::string path = temp.File("tiny.safetensors");
  std::ofstream(path, std::ios::binary) << "abc";
  absl::StatusOr<SafetensorsFile> file = SafetensorsFile::Open(path);
  EXPECT_EQ(file.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(file.status().message(), HasSubstr(path));
}

TEST(SafetensorsTest, HeaderLengthBeyondFile) {
  const ScopedTempDir temp;
  const std::string path = temp.File("long_header.safetensors");
  WriteRaw(path, "{}", "", /*declared_header_size=*/1000);
  absl::StatusOr<SafetensorsFile> file = SafetensorsFile::Open(path);
  EXPECT_EQ(file.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(file.status().message(), HasSubstr("past the end"));
}

TEST(SafetensorsTest, AbsurdHeaderLength) {
  const ScopedTempDir temp;
  const std::string path = temp.File("absurd_header.safetensors");
  WriteRaw(path, "{}", "", /*declared_header_size=*/~uint64_t{0});
  EXPECT_EQ(SafetensorsFile::Open(path).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(SafetensorsTest, BadJson) {
  const ScopedTempDir temp;
  const std::string path = temp.File("bad_json.safetensors");
  for (const std::string header :
       {"{not json}", R"({"x":{"dtype":"F32","shape":[1],"data_offsets":[0,4]})",
        R"({"x":1,"x":2})", "[]", R"({"x":{"dtype":"F32","shape":[1.5],"data_offsets":[0,4]}})",
        R"({"x":{"dtype":"F32","shape":[1],"data_offsets":[0]}})"}) {
    WriteRaw(path, header, std::string(4, '\0'));
    absl::StatusOr<SafetensorsFile> file = SafetensorsFile::Open(path);
    EXPECT_EQ(file.status().code(), absl::StatusCode::kInvalidArgument) << header;
    EXPECT_THAT(file.status().message(), HasSubstr(path)) << header;
  }
}

TEST(SafetensorsTest, NonFloatDtypeIsListedButNotReadable) {
  const ScopedTempDir temp;
  // timm state dicts carry I64 num_batches_tracked counters: the file must open.
  const std::string path = temp.File("i64.safetensors");
  WriteRaw(path, R"({"step":{"dtype":"I64","shape":[1],"data_offsets":[0,8]}})",
           std::string(8, '\0'));
  absl::StatusOr<SafetensorsFile> file = SafetensorsFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ(file->tensors().at("step").dtype_name, "I64");
  absl::Status status = file->Tensor("step").status();
  ASSERT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(), HasSubstr("'step'"));
  EXPECT_THAT(status.message(), HasSubstr("I64"));
}

TEST(SafetensorsTest, UnknownDtypeNamesTensorAndDtype) {
  const ScopedTempDir temp;
  const std::string path = temp.File("q7.safetensors");
  WriteRaw(path, R"({"w":{"dtype":"Q7","shape":[1],"data_offsets":[0,1]}})", std::string(1, '\0'));
  absl::StatusOr<SafetensorsFile> file = SafetensorsFile::Open(path);
  ASSERT_EQ(file.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(file.status().message(), HasSubstr("'w'"));
  EXPECT_THAT(file.status().message(), HasSubstr("Q7"));
}

TEST(SafetensorsTest, ByteSizeMustMatchShape) {
  const ScopedTempDir temp;
  const std::string path = temp.File("size_mismatch.safetensors");
  WriteRaw(path, R"({"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", std::string(8, '\0'));
  absl::StatusOr<SafetensorsFile> file = SafetensorsFile::Open(path);
  ASSERT_EQ(file.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(file.status().message(), HasSubstr("'w'"));
}

TEST(SafetensorsTest, HugeShapeDoesNotOverflow) {
  const ScopedTempDir temp;
  const std::string path = temp.File("huge_shape.safetensors");
  WriteRaw(path, R"({"w":{"dtype":"F32","shape":[4611686018427387904,4],"data_offsets":[0,0]}})",
           "");
  EXPECT_EQ(SafetensorsFile::Open(path).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(SafetensorsTest, WriterRejectsUnsupportedDtype) {
  const ScopedTempDir temp;
  absl::Status status =
      WriteSafetensors(temp.File("int.safetensors"), {{"ids", at::arange(3, at::kLong)}});
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(), HasSubstr("ids"));
}

}  // namespace
}  // namespace vitserve
