#include "server/api/shared_memory.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace vitserve {
namespace {

// A POSIX shared memory object of `bytes` bytes holding 0, 1, 2, ... (mod 256), unlinked and
// unmapped at the end of the test.
class SharedObject {
 public:
  explicit SharedObject(size_t bytes)
      : key_("/vitserve_shm_test_" + std::to_string(getpid()) + "_" +
             ::testing::UnitTest::GetInstance()->current_test_info()->name()),
        bytes_(bytes) {
    const int fd = shm_open(key_.c_str(), O_CREAT | O_EXCL | O_RDWR, 0600);
    EXPECT_GE(fd, 0) << std::strerror(errno);
    EXPECT_EQ(ftruncate(fd, static_cast<off_t>(bytes)), 0);
    data_ = static_cast<uint8_t*>(
        mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0));
    close(fd);
    EXPECT_NE(data_, MAP_FAILED);
    for (size_t i = 0; i < bytes; ++i) data_[i] = static_cast<uint8_t>(i);
  }
  ~SharedObject() {
    munmap(data_, bytes_);
    shm_unlink(key_.c_str());
  }
  const std::string& key() const { return key_; }
  uint8_t* data() const { return data_; }

 private:
  const std::string key_;
  const size_t bytes_;
  uint8_t* data_ = nullptr;
};

void Place(const std::string& region, int64_t offset, int64_t bytes,
           google::protobuf::Map<std::string, inference::InferParameter>* parameters) {
  (*parameters)["shared_memory_region"].set_string_param(region);
  if (offset >= 0) (*parameters)["shared_memory_offset"].set_int64_param(offset);
  if (bytes >= 0) (*parameters)["shared_memory_byte_size"].set_int64_param(bytes);
}

inference::ModelInferRequest RequestWithInputIn(const std::string& region, int64_t offset,
                                                int64_t bytes) {
  inference::ModelInferRequest request;
  auto* input = request.add_inputs();
  input->set_name("input");
  input->set_datatype("UINT8");
  Place(region, offset, bytes, input->mutable_parameters());
  return request;
}

TEST(SharedMemoryRegistryTest, RegistersReportsAndUnregistersRegions) {
  SharedObject object(10000);
  SharedMemoryRegistry registry(/*enabled=*/true);
  ASSERT_TRUE(registry.Register("a", object.key(), 4096 + 7, 100).ok());
  ASSERT_TRUE(registry.Register("b", object.key(), 0, 10000).ok());

  inference::SystemSharedMemoryStatusResponse all;
  ASSERT_TRUE(registry.Status("", &all).ok());
  ASSERT_EQ(all.regions_size(), 2);
  EXPECT_EQ(all.regions().at("a").key(), object.key());
  EXPECT_EQ(all.regions().at("a").offset(), 4096u + 7);
  EXPECT_EQ(all.regions().at("a").byte_size(), 100u);

  registry.Unregister("a");
  inference::SystemSharedMemoryStatusResponse one;
  EXPECT_EQ(registry.Status("a", &one).code(), absl::StatusCode::kNotFound);
  ASSERT_TRUE(registry.Status("b", &one).ok());
  EXPECT_EQ(one.regions_size(), 1);
  registry.Unregister("never-registered");  // Not an error, as in Triton.
  registry.Unregister("");
  inference::SystemSharedMemoryStatusResponse none;
  ASSERT_TRUE(registry.Status("", &none).ok());
  EXPECT_EQ(none.regions_size(), 0);
}

TEST(SharedMemoryRegistryTest, ASliceSeesTheObjectAtTheRegionsOffset) {
  SharedObject object(10000);
  SharedMemoryRegistry registry(true);
  // An offset that is not page-aligned: the mapping starts on the page before it.
  ASSERT_TRUE(registry.Register("r", object.key(), 5000, 300).ok());
  absl::StatusOr<SharedMemorySlice> slice = registry.Slice("r", 10, 20);
  ASSERT_TRUE(slice.ok()) << slice.status();
  EXPECT_EQ(slice->byte_size, 20u);
  EXPECT_EQ(slice->data[0], static_cast<uint8_t>(5010));
  EXPECT_EQ(slice->data[19], static_cast<uint8_t>(5029));
  slice->data[0] = 0xAB;  // Writable, and the client sees it.
  EXPECT_EQ(object.data()[5010], 0xAB);
}

TEST(SharedMemoryRegistryTest, ASliceKeepsItsMappingAfterTheRegionIsUnregistered) {
  SharedObject object(4096);
  SharedMemoryRegistry registry(true);
  ASSERT_TRUE(registry.Register("r", object.key(), 0, 4096).ok());
  absl::StatusOr<SharedMemorySlice> slice = registry.Slice("r", 100, 1);
  ASSERT_TRUE(slice.ok());
  registry.Unregister("r");
  EXPECT_EQ(registry.Slice("r", 100, 1).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(slice->data[0], 100);  // Still mapped: the slice pins it.
}

TEST(SharedMemoryRegistryTest, RefusesBadRegistrations) {
  SharedObject object(1000);
  SharedMemoryRegistry registry(true);
  ASSERT_TRUE(registry.Register("r", object.key(), 0, 1000).ok());
  EXPECT_EQ(registry.Register("r", object.key(), 0, 10).code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(registry.Register("", object.key(), 0, 10).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(registry.Register("s", "/vitserve_no_such_object_x", 0, 10).code(),
            absl::StatusCode::kNotFound);
  for (const char* key : {"", "/", "/a/b", "no/slash"}) {
    EXPECT_EQ(registry.Register("s", key, 0, 10).code(), absl::StatusCode::kInvalidArgument)
        << key;
  }
  // Past the object's end (reading there would be SIGBUS), or empty.
  EXPECT_EQ(registry.Register("s", object.key(), 0, 1001).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(registry.Register("s", object.key(), 999, 2).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(registry.Register("s", object.key(), UINT64_MAX, 2).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(registry.Register("s", object.key(), 0, 0).code(), absl::StatusCode::kInvalidArgument);
  inference::SystemSharedMemoryStatusResponse status;
  ASSERT_TRUE(registry.Status("", &status).ok());
  EXPECT_EQ(status.regions_size(), 1);  // Only "r".
}

TEST(SharedMemoryRegistryTest, RefusesSlicesOutsideTheRegion) {
  SharedObject object(1000);
  SharedMemoryRegistry registry(true);
  ASSERT_TRUE(registry.Register("r", object.key(), 0, 100).ok());
  EXPECT_TRUE(registry.Slice("r", 0, 100).ok());
  EXPECT_TRUE(registry.Slice("r", 99, 1).ok());
  for (auto [offset, bytes] : std::vector<std::pair<int64_t, int64_t>>{
           {0, 101}, {100, 1}, {-1, 10}, {0, 0}, {0, -5}, {INT64_MAX, 2}}) {
    EXPECT_EQ(registry.Slice("r", offset, bytes).status().code(),
              absl::StatusCode::kInvalidArgument)
        << offset << " " << bytes;
  }
  EXPECT_EQ(registry.Slice("q", 0, 1).status().code(), absl::StatusCode::kNotFound);
}

TEST(SharedMemoryRegistryTest, ADisabledRegistryRefusesRegionsAndAnswersForNone) {
  SharedObject object(1000);
  SharedMemoryRegistry registry(/*enabled=*/false);
  absl::Status registered = registry.Register("r", object.key(), 0, 100);
  EXPECT_EQ(registered.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(registered.message().find("--allow-client-shm"), std::string::npos);
  EXPECT_EQ(registry.Slice("r", 0, 1).status().code(), absl::StatusCode::kFailedPrecondition);
  inference::SystemSharedMemoryStatusResponse status;
  EXPECT_TRUE(registry.Status("", &status).ok());
  EXPECT_EQ(status.regions_size(), 0);
  registry.Unregister("");
}

TEST(SharedMemoryPlacementTest, ReadsTheParametersTritonDefines) {
  inference::ModelInferRequest request = RequestWithInputIn("r", 16, 64);
  auto placement = SharedMemoryPlacementOf(request.inputs(0).parameters(), "input");
  ASSERT_TRUE(placement.ok());
  ASSERT_TRUE(placement->has_value());
  EXPECT_EQ((*placement)->region, "r");
  EXPECT_EQ((*placement)->offset, 16);
  EXPECT_EQ((*placement)->byte_size, 64);

  inference::ModelInferRequest no_offset = RequestWithInputIn("r", -1, 64);
  placement = SharedMemoryPlacementOf(no_offset.inputs(0).parameters(), "input");
  ASSERT_TRUE(placement.ok());
  EXPECT_EQ((*placement)->offset, 0);

  google::protobuf::Map<std::string, inference::InferParameter> none;
  none["binary_data_size"].set_int64_param(5);
  placement = SharedMemoryPlacementOf(none, "input");
  ASSERT_TRUE(placement.ok());
  EXPECT_FALSE(placement->has_value());
}

TEST(SharedMemoryPlacementTest, RefusesIncompleteOrMistypedParameters) {
  using Parameters = google::protobuf::Map<std::string, inference::InferParameter>;
  std::vector<Parameters> bad(5);
  Place("r", 0, -1, &bad[0]);  // No byte size.
  bad[1]["shared_memory_byte_size"].set_int64_param(8);  // No region.
  bad[2]["shared_memory_region"].set_int64_param(1);  // Region not a string.
  bad[2]["shared_memory_byte_size"].set_int64_param(8);
  Place("r", 0, 8, &bad[3]);
  bad[3]["shared_memory_byte_size"].set_string_param("8");
  Place("r", 0, 8, &bad[4]);
  bad[4]["shared_memory_offset"].set_double_param(1);
  for (size_t i = 0; i < bad.size(); ++i) {
    auto placement = SharedMemoryPlacementOf(bad[i], "input");
    EXPECT_EQ(placement.status().code(), absl::StatusCode::kInvalidArgument) << i;
    EXPECT_NE(placement.status().message().find("'input'"), std::string::npos) << i;
  }
}

TEST(BindSharedMemoryTest, TheInputIsCopiedFromItsWindow) {
  SharedObject object(1000);
  SharedMemoryRegistry registry(true);
  ASSERT_TRUE(registry.Register("r", object.key(), 100, 500).ok());
  absl::StatusOr<SharedMemoryBindings> bindings =
      BindSharedMemory(RequestWithInputIn("r", 10, 50), false, registry);
  ASSERT_TRUE(bindings.ok()) << bindings.status();
  ASSERT_TRUE(bindings->input.has_value());
  ASSERT_EQ(bindings->input->sizes, std::vector<size_t>{50});
  std::vector<uint8_t> copied(50);
  ASSERT_TRUE(bindings->input->copy(0, copied.data()).ok());
  for (size_t i = 0; i < copied.size(); ++i) EXPECT_EQ(copied[i], static_cast<uint8_t>(110 + i));
  EXPECT_TRUE(bindings->outputs.empty());
}

TEST(BindSharedMemoryTest, RefusesAnInputInSharedMemoryThatAlsoCarriesBytes) {
  SharedObject object(1000);
  SharedMemoryRegistry registry(true);
  ASSERT_TRUE(registry.Register("r", object.key(), 0, 1000).ok());
  inference::ModelInferRequest request = RequestWithInputIn("r", 0, 10);
  EXPECT_EQ(BindSharedMemory(request, /*has_raw_contents=*/true, registry).status().code(),
            absl::StatusCode::kInvalidArgument);
  request.mutable_inputs(0)->mutable_contents()->add_uint_contents(1);
  EXPECT_EQ(BindSharedMemory(request, false, registry).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(BindSharedMemoryTest, PassesOnTheRegistrysErrors) {
  SharedObject object(1000);
  SharedMemoryRegistry registry(true);
  ASSERT_TRUE(registry.Register("r", object.key(), 0, 100).ok());
  EXPECT_EQ(BindSharedMemory(RequestWithInputIn("missing", 0, 10), false, registry)
                .status()
                .code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(BindSharedMemory(RequestWithInputIn("r", 50, 51), false, registry).status().code(),
            absl::StatusCode::kInvalidArgument);
  const SharedMemoryRegistry disabled(false);
  EXPECT_EQ(BindSharedMemory(RequestWithInputIn("r", 0, 10), false, disabled).status().code(),
            absl::StatusCode::kFailedPrecondition);
  // A request without shared memory binds nothing, the extension on or off.
  inference::ModelInferRequest plain;
  plain.add_inputs()->set_name("input");
  plain.add_outputs()->set_name("logits");
  absl::StatusOr<SharedMemoryBindings> bindings = BindSharedMemory(plain, true, disabled);
  ASSERT_TRUE(bindings.ok());
  EXPECT_TRUE(bindings->empty());
}

TEST(BindSharedMemoryTest, OutputsArePlacedInTheirWindowsAndLeaveEmptyContents) {
  SharedObject object(1000);
  std::memset(object.data(), 0, 1000);
  SharedMemoryRegistry registry(true);
  ASSERT_TRUE(registry.Register("out", object.key(), 0, 1000).ok());
  inference::ModelInferRequest request;
  auto* boxes = request.add_outputs();
  boxes->set_name("boxes");
  Place("out", 200, 8, boxes->mutable_parameters());
  request.add_outputs()->set_name("scores");  // Stays in the reply.
  absl::StatusOr<SharedMemoryBindings> bindings = BindSharedMemory(request, false, registry);
  ASSERT_TRUE(bindings.ok());
  ASSERT_EQ(bindings->outputs.size(), 1u);

  inference::ModelInferResponse response;
  response.add_outputs()->set_name("scores");
  response.add_raw_output_contents("SCORES");
  response.add_outputs()->set_name("boxes");
  response.add_raw_output_contents("BOXES123");
  ASSERT_TRUE(PlaceOutputsInSharedMemory(*bindings, &response).ok());
  EXPECT_EQ(std::string(reinterpret_cast<char*>(object.data()) + 200, 8), "BOXES123");
  ASSERT_EQ(response.raw_output_contents_size(), 2);  // Entries kept, in step with outputs.
  EXPECT_EQ(response.raw_output_contents(0), "SCORES");
  EXPECT_EQ(response.raw_output_contents(1), "");
  EXPECT_EQ(response.outputs(1).name(), "boxes");

  inference::ModelInferResponse too_big;
  too_big.add_outputs()->set_name("boxes");
  too_big.add_raw_output_contents("NINE BYTE");
  absl::Status placed = PlaceOutputsInSharedMemory(*bindings, &too_big);
  EXPECT_EQ(placed.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(placed.message().find("'boxes' has 9 bytes"), std::string::npos) << placed;
}

}  // namespace
}  // namespace vitserve
