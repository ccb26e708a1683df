// StreamReactor against a stand-in for gRPC's side of the stream (FakeStream, bound the way
// gRPC binds its own): what the reactor asks gRPC for (reads, writes, the final status) after
// each reaction, and gRPC's lifetime rule: OnDone (which deletes the reactor) runs once Finish
// was called and no reaction (OnReadDone, OnWriteDone) is running, and no later.
#include "server/api/stream_reactor.h"

#include <atomic>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "google/protobuf/wrappers.pb.h"
#include "grpcpp/support/server_callback.h"
#include "gtest/gtest.h"

namespace vitserve {
namespace {

using Message = google::protobuf::StringValue;

// What gRPC's side of one stream was asked to do.
struct StreamLog {
  absl::Mutex mu;
  int reads ABSL_GUARDED_BY(mu) = 0;
  std::vector<std::string> writes ABSL_GUARDED_BY(mu);
  int finishes ABSL_GUARDED_BY(mu) = 0;
  grpc::Status status ABSL_GUARDED_BY(mu);
};

// The reactor under test: Process() only records the request; the test completes it.
class TestReactor final : public StreamReactor<Message, Message> {
 public:
  TestReactor(int max_pending, std::atomic<int>* destroyed)
      : StreamReactor(max_pending), destroyed_(destroyed) {
    StartReading();
  }
  ~TestReactor() override {
    if (destroyed_ != nullptr) destroyed_->fetch_add(1);
  }

  // Ends a request as an executor thread would.
  void CompleteWith(absl::StatusOr<Message> result) { Complete(nullptr, std::move(result)); }

  std::vector<std::string> processed() {
    absl::MutexLock lock(&mu_);
    return processed_;
  }

 private:
  void Process(Message request) override {
    absl::MutexLock lock(&mu_);
    processed_.push_back(request.value());
  }

  std::atomic<int>* const destroyed_;
  absl::Mutex mu_;
  std::vector<std::string> processed_ ABSL_GUARDED_BY(mu_);
};

// gRPC's side, bound to the reactor as gRPC binds its own stream (BindReactor). Reactions go
// through React(), which counts them as gRPC does. With call_on_done, the reactor's OnDone runs
// (and deletes it) at the first moment gRPC may: at Finish when no reaction is running, else
// when the last running reaction returns. A thread that is not a reaction (an executor calling
// Complete) gets no such protection, which is what the race test is about.
class FakeStream final : public grpc::ServerCallbackReaderWriter<Message, Message> {
 public:
  FakeStream(TestReactor* reactor, StreamLog* log, bool call_on_done)
      : reactor_(reactor), log_(log), call_on_done_(call_on_done) {
    BindReactor(reactor);
  }

  void Finish(grpc::Status status) override {
    bool on_done_now = false;
    {
      absl::MutexLock lock(&log_->mu);
      ++log_->finishes;
      log_->status = std::move(status);
      finish_called_ = true;
      on_done_now = OnDoneDueLocked();
    }
    if (on_done_now) reactor_->OnDone();
  }
  void SendInitialMetadata() override {}
  void Read(Message* message) override {
    absl::MutexLock lock(&log_->mu);
    ++log_->reads;
    read_into_ = message;
  }
  void Write(const Message* message, grpc::WriteOptions) override {
    absl::MutexLock lock(&log_->mu);
    log_->writes.push_back(message->value());
  }
  void WriteAndFinish(const Message*, grpc::WriteOptions, grpc::Status) override {
    ADD_FAILURE() << "StreamReactor never writes and finishes in one step";
  }

  // Runs one reaction of the reactor, as a gRPC thread would.
  template <typename Reaction>
  void React(Reaction&& reaction) {
    {
      absl::MutexLock lock(&log_->mu);
      ++reactions_running_;
    }
    reaction();
    bool on_done_now = false;
    {
      absl::MutexLock lock(&log_->mu);
      --reactions_running_;
      on_done_now = OnDoneDueLocked();
    }
    if (on_done_now) reactor_->OnDone();
  }

  // Completes the read the reactor asked for with `request` (gRPC's OnReadDone(true)).
  void Deliver(const std::string& request) {
    Message* into = nullptr;
    {
      absl::MutexLock lock(&log_->mu);
      into = read_into_;
    }
    ASSERT_NE(into, nullptr) << "no read was asked for";
    into->set_value(request);
    React([this] { reactor_->OnReadDone(true); });
  }
  void HalfClose() {
    React([this] { reactor_->OnReadDone(false); });
  }
  void WriteDone() {
    React([this] { reactor_->OnWriteDone(true); });
  }

 private:
  // Whether OnDone is due now; marks it called.
  bool OnDoneDueLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(log_->mu) {
    if (!call_on_done_ || !finish_called_ || reactions_running_ > 0 || on_done_called_) {
      return false;
    }
    on_done_called_ = true;
    return true;
  }

  grpc::internal::ServerReactor* reactor() override { return reactor_; }
  void CallOnDone() override {}

  TestReactor* const reactor_;
  StreamLog* const log_;
  const bool call_on_done_;
  // Guarded by log_->mu.
  Message* read_into_ = nullptr;
  int reactions_running_ = 0;
  bool finish_called_ = false;
  bool on_done_called_ = false;
};

TEST(StreamReactorTest, FinishesOkAfterTheHalfCloseAndTheLastWrite) {
  StreamLog log;
  TestReactor reactor(/*max_pending=*/4, nullptr);
  FakeStream stream(&reactor, &log, /*call_on_done=*/false);
  stream.Deliver("a");
  EXPECT_EQ(reactor.processed(), std::vector<std::string>{"a"});
  Message response;
  response.set_value("response a");
  reactor.CompleteWith(response);
  stream.HalfClose();  // A write is still in flight.
  {
    absl::MutexLock lock(&log.mu);
    EXPECT_EQ(log.reads, 2);  // The first request's and the one the half-close answered.
    EXPECT_EQ(log.writes, std::vector<std::string>{"response a"});
    EXPECT_EQ(log.finishes, 0);
  }
  stream.WriteDone();
  absl::MutexLock lock(&log.mu);
  EXPECT_EQ(log.finishes, 1);
  EXPECT_TRUE(log.status.ok()) << log.status.error_message();
}

TEST(StreamReactorTest, AnErrorEndsTheStreamWithItsStatusAfterTheWriteInFlight) {
  StreamLog log;
  TestReactor reactor(/*max_pending=*/4, nullptr);
  FakeStream stream(&reactor, &log, /*call_on_done=*/false);
  stream.Deliver("a");
  stream.Deliver("b");
  Message response;
  response.set_value("response a");
  reactor.CompleteWith(response);
  reactor.CompleteWith(absl::InvalidArgumentError("b is bad"));
  stream.Deliver("c");  // The read outstanding at the error: ignored, and no read follows.
  EXPECT_EQ(reactor.processed(), (std::vector<std::string>{"a", "b"}));
  {
    absl::MutexLock lock(&log.mu);
    EXPECT_EQ(log.finishes, 0);  // "response a" is still being written.
    EXPECT_EQ(log.reads, 3);
  }
  stream.WriteDone();
  absl::MutexLock lock(&log.mu);
  EXPECT_EQ(log.finishes, 1);
  EXPECT_EQ(log.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(log.status.error_message(), "b is bad");
}

TEST(StreamReactorTest, ReadsPauseAtMaxPendingAndResumeOnCompletion) {
  StreamLog log;
  TestReactor reactor(/*max_pending=*/2, nullptr);
  FakeStream stream(&reactor, &log, /*call_on_done=*/false);
  stream.Deliver("a");
  stream.Deliver("b");
  {
    absl::MutexLock lock(&log.mu);
    EXPECT_EQ(log.reads, 2);  // The first read and the one after "a"; none after "b".
  }
  reactor.CompleteWith(absl::StatusOr<Message>(Message()));
  absl::MutexLock lock(&log.mu);
  EXPECT_EQ(log.reads, 3);
}

// The race the mixed-load soak found (heap-use-after-free under AddressSanitizer, 2026-12-05):
// an executor thread completes a stream's last request with an error while gRPC reports the
// previous response written. Whichever thread sees the stream idle finishes it, and gRPC may
// delete the reactor at once; the other thread must not touch the reactor after that. Before
// the fix, Complete() released the lock between counting the request done and deciding what to
// do next, so gRPC's thread could finish the stream (and delete the reactor) in between. Every
// round deletes its reactor through OnDone as gRPC would; AddressSanitizer reports a thread
// that touches it afterwards (scripts/sanitizers.sh runs this suite, also in CI's short form).
TEST(StreamReactorTest, AnExecutorCompletingTheLastRequestNeverOutlivesTheReactor) {
  constexpr int kRounds = 3000;
  std::atomic<int> destroyed{0};
  for (int round = 0; round < kRounds; ++round) {
    StreamLog log;
    auto* reactor = new TestReactor(/*max_pending=*/4, &destroyed);  // Deleted by OnDone.
    FakeStream stream(reactor, &log, /*call_on_done=*/true);
    stream.Deliver("a");
    stream.Deliver("b");
    Message response;
    response.set_value("response a");
    reactor->CompleteWith(response);  // Its write is now in flight.
    stream.HalfClose();
    std::atomic<int> ready{0};
    auto start_together = [&ready] {
      ready.fetch_add(1);
      while (ready.load() < 2) {
      }
    };
    std::thread executor([&] {
      start_together();
      reactor->CompleteWith(absl::InvalidArgumentError("b is bad"));
    });
    std::thread grpc_thread([&] {
      start_together();
      stream.WriteDone();
    });
    executor.join();
    grpc_thread.join();
    absl::MutexLock lock(&log.mu);
    ASSERT_EQ(log.finishes, 1) << "round " << round;
    ASSERT_EQ(log.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << "round " << round;
  }
  EXPECT_EQ(destroyed.load(), kRounds);
}

}  // namespace
}  // namespace vitserve
