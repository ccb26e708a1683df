#include "server/api/deferred_infer.h"

#include <cstdint>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "google/protobuf/io/coded_stream.h"
#include "google/protobuf/io/zero_copy_stream_impl_lite.h"
#include "google/protobuf/util/message_differencer.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "tests/test_util/wire_bytes_testing.h"

namespace vitserve {
namespace {

using google::protobuf::util::MessageDifferencer;
using testing::BufferOf;
using testing::MutatedBytes;

std::string Pattern(size_t size, int seed) {
  std::string bytes(size, '\0');
  for (size_t i = 0; i < size; ++i) bytes[i] = static_cast<char>(i * 13 + seed * 101);
  return bytes;
}

// A request with every kind of field tritonclient and perf_analyzer send.
inference::ModelInferRequest FullRequest() {
  inference::ModelInferRequest request;
  request.set_model_name("shvit_s1");
  request.set_model_version("1");
  request.set_id("req-7");
  (*request.mutable_parameters())["priority"].set_int64_param(3);
  (*request.mutable_parameters())["note"].set_string_param("caf\xc3\xa9");  // UTF-8
  auto* input = request.add_inputs();
  input->set_name("input");
  input->set_datatype("FP32");
  for (int64_t dim : {2, 3, 32, 32}) input->add_shape(dim);
  (*input->mutable_parameters())["binary_data_size"].set_int64_param(24576);
  request.add_outputs()->set_name("logits");
  request.add_raw_input_contents(Pattern(24576, 1));
  request.add_raw_input_contents(Pattern(300, 2));  // A second entry, kept in order.
  return request;
}

// What `deferred` stands for: its fields with the raw contents copied back from the buffer.
inference::ModelInferRequest Rebuilt(const DeferredInferRequest& deferred,
                                     const grpc::ByteBuffer& buffer) {
  inference::ModelInferRequest request = deferred.request;
  for (const ByteRange& range : deferred.raw_inputs) {
    std::string bytes(range.size, '\0');
    EXPECT_TRUE(
        CopyByteRanges(buffer, {range}, reinterpret_cast<uint8_t*>(bytes.data())).ok());
    request.add_raw_input_contents(std::move(bytes));
  }
  return request;
}

std::optional<inference::ModelInferRequest> ParsedWhole(const std::string& bytes) {
  inference::ModelInferRequest request;
  if (!request.ParseFromString(bytes)) return std::nullopt;
  return request;
}

TEST(DeferredInferTest, ReadsTheFieldsAndLeavesTheRawContentsInTheBuffer) {
  const inference::ModelInferRequest request = FullRequest();
  const std::string bytes = request.SerializeAsString();
  for (size_t slice_size : {size_t{7}, size_t{1000}, bytes.size()}) {
    const grpc::ByteBuffer buffer = BufferOf(bytes, slice_size);
    std::optional<DeferredInferRequest> deferred = ReadDeferredInferRequest(buffer);
    ASSERT_TRUE(deferred.has_value()) << slice_size;
    EXPECT_EQ(deferred->request.raw_input_contents_size(), 0);
    ASSERT_EQ(deferred->raw_inputs.size(), 2u);
    EXPECT_EQ(deferred->raw_inputs[0].size, 24576u);
    EXPECT_EQ(deferred->raw_inputs[1].size, 300u);
    // The ranges are the tensors' bytes in the buffer, not copies of them.
    EXPECT_EQ(bytes.substr(deferred->raw_inputs[0].offset, 24576), Pattern(24576, 1));
    EXPECT_TRUE(MessageDifferencer::Equals(Rebuilt(*deferred, buffer), request)) << slice_size;
  }
}

// Hand-written wire bytes in an order no serialiser writes: raw contents first, a singular
// field twice (the last wins), an unknown field, the input after the tensor bytes. The reader
// must give what protobuf gives.
TEST(DeferredInferTest, WhatItReadsIsWhatProtobufParses) {
  std::string bytes;
  {
    google::protobuf::io::StringOutputStream sink(&bytes);
    google::protobuf::io::CodedOutputStream out(&sink);
    const std::string raw = Pattern(5000, 3);
    out.WriteTag(7 << 3 | 2);  // raw_input_contents
    out.WriteVarint32(static_cast<uint32_t>(raw.size()));
    out.WriteString(raw);
    out.WriteTag(1 << 3 | 2);  // model_name
    out.WriteVarint32(5);
    out.WriteString("first");
    out.WriteTag(99 << 3 | 0);  // unknown varint field
    out.WriteVarint64(123456789);
    inference::ModelInferRequest::InferInputTensor input;
    input.set_name("input");
    input.set_datatype("UINT8");
    const std::string input_bytes = input.SerializeAsString();
    out.WriteTag(5 << 3 | 2);  // inputs
    out.WriteVarint32(static_cast<uint32_t>(input_bytes.size()));
    out.WriteString(input_bytes);
    out.WriteTag(1 << 3 | 2);  // model_name again
    out.WriteVarint32(6);
    out.WriteString("second");
    out.WriteTag(7 << 3 | 2);  // an empty second raw entry
    out.WriteVarint32(0);
  }
  std::optional<inference::ModelInferRequest> whole = ParsedWhole(bytes);
  ASSERT_TRUE(whole.has_value());
  ASSERT_EQ(whole->model_name(), "second");
  const grpc::ByteBuffer buffer = BufferOf(bytes, 64);
  std::optional<DeferredInferRequest> deferred = ReadDeferredInferRequest(buffer);
  ASSERT_TRUE(deferred.has_value());
  EXPECT_EQ(deferred->raw_inputs.size(), 2u);
  auto unknown = [](const inference::ModelInferRequest& request) {
    return request.GetReflection()->GetUnknownFields(request).field_count();
  };
  EXPECT_EQ(unknown(deferred->request), 1);
  EXPECT_EQ(unknown(*whole), 1);
  EXPECT_TRUE(MessageDifferencer::Equals(Rebuilt(*deferred, buffer), *whole));
}

// Differential: for every mutation of a request that the reader accepts, protobuf parses the
// same bytes to the same message (raw contents included). Mutations: random bytes overwritten,
// inserted or removed, and cuts.
TEST(DeferredInferTest, WhatItReadsOfMutatedBytesIsWhatProtobufParses) {
  inference::ModelInferRequest request = FullRequest();
  request.set_raw_input_contents(0, Pattern(40, 1));  // Small, so that edits hit the header.
  const std::string original = request.SerializeAsString();
  std::mt19937 rng(20261205);
  int accepted = 0;
  int refused = 0;
  for (int trial = 0; trial < 20000; ++trial) {
    const std::string bytes = MutatedBytes(original, rng);
    const grpc::ByteBuffer buffer = BufferOf(bytes, 1 + rng() % 20);
    std::optional<DeferredInferRequest> deferred = ReadDeferredInferRequest(buffer);
    if (!deferred.has_value()) {
      ++refused;
      continue;
    }
    ++accepted;
    std::optional<inference::ModelInferRequest> whole = ParsedWhole(bytes);
    ASSERT_TRUE(whole.has_value()) << "trial " << trial;
    ASSERT_TRUE(MessageDifferencer::Equals(Rebuilt(*deferred, buffer), *whole))
        << "trial " << trial;
  }
  // Both outcomes were exercised.
  EXPECT_GT(accepted, 1000);
  EXPECT_GT(refused, 1000);
}

// Bytes protobuf refuses are refused here too (the service then parses them whole, for the
// error); each case is first checked to be refused by protobuf.
TEST(DeferredInferTest, LeavesToProtobufWhatItRefusesAndRequestsWithoutRawContents) {
  const std::string good = FullRequest().SerializeAsString();
  const std::vector<std::string> bad = {
      good.substr(0, good.size() - 10),           // The last raw entry cut short.
      good.substr(0, 20) + std::string("\x00", 1),  // A zero tag.
      good + std::string("\x3a\xff\xff\xff\xff\x7f", 6),  // raw entry longer than 2 GB.
      good + std::string("\x0c", 1),                 // An end-group tag with no group.
      good + std::string("\x08", 1),                 // A varint field with no value.
      // raw_input_contents' tag (0x3a) spelt in six bytes: CodedInputStream reads tags of up to
      // ten bytes, protobuf's parser of five at most.
      good + std::string("\xba\x80\x80\x80\x80\x00\x01\x2a", 8),
      // model_name's tag the same way (the fuzzer's first find had an eight-byte tag).
      good + std::string("\x8a\x80\x80\x80\x80\x00\x01\x2a", 8),
  };
  for (size_t i = 0; i < bad.size(); ++i) {
    ASSERT_FALSE(ParsedWhole(bad[i]).has_value()) << i;
    EXPECT_FALSE(ReadDeferredInferRequest(BufferOf(bad[i], 100)).has_value()) << i;
  }
  // A request with no raw contents (typed contents, or none) is left to protobuf whole.
  inference::ModelInferRequest typed = FullRequest();
  typed.clear_raw_input_contents();
  typed.mutable_inputs(0)->mutable_contents()->add_fp32_contents(1.5f);
  ASSERT_TRUE(ParsedWhole(typed.SerializeAsString()).has_value());
  EXPECT_FALSE(ReadDeferredInferRequest(BufferOf(typed.SerializeAsString(), 100)).has_value());
  // A field of the wrong wire type for raw_input_contents is an unknown field, as in protobuf;
  // a raw entry whose tag is spelt in five bytes (protobuf's longest) is an entry.
  const std::string odd = good + std::string("\x38\x05", 2) +  // field 7 as a varint
                          std::string("\xba\x80\x80\x80\x00\x01\x2a", 7);
  std::optional<inference::ModelInferRequest> whole = ParsedWhole(odd);
  ASSERT_TRUE(whole.has_value());
  const grpc::ByteBuffer buffer = BufferOf(odd, 100);
  std::optional<DeferredInferRequest> deferred = ReadDeferredInferRequest(buffer);
  ASSERT_TRUE(deferred.has_value());
  EXPECT_EQ(deferred->raw_inputs.size(), 3u);
  EXPECT_TRUE(MessageDifferencer::Equals(Rebuilt(*deferred, buffer), *whole));
}

}  // namespace
}  // namespace vitserve
