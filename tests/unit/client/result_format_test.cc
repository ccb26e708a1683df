#include "client/result_format.h"

#include "gtest/gtest.h"

namespace vitserve::client {
namespace {

TEST(ResultFormatTest, ClassificationJsonLine) {
  v1::Classification result;
  auto* c = result.add_classes();
  c->set_index(281);
  c->set_label("tabby, \"tabby cat\"");
  c->set_score(0.91f);
  EXPECT_EQ(ClassificationJson("dir/cat\".jpg", "shvit_s1", result),
            R"({"image":"dir/cat\".jpg","model":"shvit_s1","classes":)"
            R"([{"index":281,"label":"tabby, \"tabby cat\"","score":0.91}]})");
}

TEST(ResultFormatTest, DetectionsJsonLine) {
  v1::Detections result;
  auto* b = result.add_boxes();
  b->set_x1(1.5f);
  b->set_y1(2);
  b->set_x2(100);
  b->set_y2(200.25f);
  b->set_score(0.5f);
  b->set_index(17);
  b->set_label("cat");
  EXPECT_EQ(DetectionsJson("a.jpg", "det", result),
            R"({"image":"a.jpg","model":"det","boxes":[{"x1":1.5,"y1":2,"x2":100,)"
            R"("y2":200.25,"score":0.5,"index":17,"label":"cat"}]})");
}

TEST(ResultFormatTest, SegmentationJsonLine) {
  v1::SegmentationMap map;
  map.set_width(640);
  map.set_height(480);
  map.set_mask(std::string(123, 'x'));
  EXPECT_EQ(SegmentationJson("s.png", "seg", map, ""),
            R"({"image":"s.png","model":"seg","width":640,"height":480,"mask_png_bytes":123})");
  EXPECT_EQ(SegmentationJson("s.png", "seg", map, "out/s.mask.png"),
            R"({"image":"s.png","model":"seg","width":640,"height":480,"mask_png_bytes":123,)"
            R"("mask_file":"out/s.mask.png"})");
}

TEST(ResultFormatTest, ModelsTableAlignsColumns) {
  v1::ListModelsResponse models;
  auto* m = models.add_models();
  m->set_name("shvit_s1");
  m->set_task(v1::CLASSIFICATION);
  m->set_input_size(224);
  m->set_ready(true);
  m->set_parameter_count(6300000);
  std::string table = ModelsTable(models);
  EXPECT_EQ(table.substr(0, table.find('\n')).find("TASK"), table.find("classification") -
                                                                table.find('\n') - 1);
  EXPECT_NE(table.find("6.3M"), std::string::npos);
  EXPECT_NE(table.find("yes"), std::string::npos);
}

TEST(ResultFormatTest, BenchJsonHasStableFields) {
  BenchDescription d{"m", "Classify", "raw", {}};
  BenchResult r;
  r.requests = 10;
  r.ok_requests = 9;
  r.errors = 1;
  r.errors_by_code["UNAVAILABLE"] = 1;
  std::string json = BenchJson(d, r);
  for (const char* field : {"\"throughput_img_s\":", "\"throughput_req_s\":", "\"p50_ms\":",
                            "\"p90_ms\":", "\"p95_ms\":", "\"p99_ms\":", "\"max_ms\":",
                            "\"requests\":10", "\"errors\":1",
                            "\"errors_by_code\":{\"UNAVAILABLE\":1}", "\"mode\":\"closed\""}) {
    EXPECT_NE(json.find(field), std::string::npos) << field << " in " << json;
  }
}

}  // namespace
}  // namespace vitserve::client
