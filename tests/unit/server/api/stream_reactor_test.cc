// StreamReactor against a stand-in for gRPC's side of the stream (FakeStream, bound the way
// gRPC binds its own): what the reactor asks gRPC for (reads, writes, the final status) after
// each reaction, and the lifetime rule gRPC imposes (OnDone deletes the reactor, and may run as
// soon as Finish is called).
#include "server/api/stream_reactor.h"

#include <atomic>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

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

// gRPC's side, bound to the reactor as gRPC binds its own stream (BindReactor). With
// on_done_at_finish, Finish runs the reactor's OnDone at once, which deletes it: the earliest
// moment gRPC may, and so the strictest test of who touches the reactor afterwards.
class FakeStream final : public grpc::ServerCallbackReaderWriter<Message, Message> {
 public:
  FakeStream(TestReactor* reactor, StreamLog* log, bool on_done_at_finish)
      : reactor_(reactor), log_(log), on_done_at_finish_(on_done_at_finish) {
    BindReactor(reactor);
  }

  void Finish(grpc::Status status) override {
    {
      absl::MutexLock lock(&log_->mu);
      ++log_->finishes;
      log_->status = std::move(status);
    }
    if (on_done_at_finish_) reactor_->OnDone();
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

  // Completes the read the reactor asked for with `request` (gRPC's OnReadDone(true)).
  void Deliver(const std::string& request) {
    Message* into = nullptr;
    {
      absl::MutexLock lock(&log_->mu);
      into = read_into_;
    }
    ASSERT_NE(into, nullptr) << "no read was asked for";
    into->set_value(request);
    reactor_->OnReadDone(true);
  }

 private:
  grpc::internal::ServerReactor* reactor() override { return reactor_; }
  void CallOnDone() override {}

  TestReactor* const reactor_;
  StreamLog* const log_;
  const bool on_done_at_finish_;
  Message* read_into_ = nullptr;  // Guarded by log_->mu.
};

TEST(StreamReactorTest, FinishesOkAfterTheHalfCloseAndTheLastWrite) {
  StreamLog log;
  TestReactor reactor(/*max_pending=*/4, nullptr);
  FakeStream stream(&reactor, &log, /*on_done_at_finish=*/false);
  stream.Deliver("a");
  EXPECT_EQ(reactor.processed(), std::vector<std::string>{"a"});
  Message response;
  response.set_value("response a");
  reactor.CompleteWith(response);
  reactor.OnReadDone(false);  // The client half-closed; a write is still in flight.
  {
    absl::MutexLock lock(&log.mu);
    EXPECT_EQ(log.reads, 2);  // The first request's and the one the half-close answered.
    EXPECT_EQ(log.writes, std::vector<std::string>{"response a"});
    EXPECT_EQ(log.finishes, 0);
  }
  reactor.OnWriteDone(true);
  absl::MutexLock lock(&log.mu);
  EXPECT_EQ(log.finishes, 1);
  EXPECT_TRUE(log.status.ok()) << log.status.error_message();
}

TEST(StreamReactorTest, AnErrorEndsTheStreamWithItsStatusAfterTheWriteInFlight) {
  StreamLog log;
  TestReactor reactor(/*max_pending=*/4, nullptr);
  FakeStream stream(&reactor, &log, /*on_done_at_finish=*/false);
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
  reactor.OnWriteDone(true);
  absl::MutexLock lock(&log.mu);
  EXPECT_EQ(log.finishes, 1);
  EXPECT_EQ(log.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(log.status.error_message(), "b is bad");
}

TEST(StreamReactorTest, ReadsPauseAtMaxPendingAndResumeOnCompletion) {
  StreamLog log;
  TestReactor reactor(/*max_pending=*/2, nullptr);
  FakeStream stream(&reactor, &log, /*on_done_at_finish=*/false);
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
    FakeStream stream(reactor, &log, /*on_done_at_finish=*/true);
    stream.Deliver("a");
    stream.Deliver("b");
    Message response;
    response.set_value("response a");
    reactor->CompleteWith(response);  // Its write is now in flight.
    reactor->OnReadDone(false);       // The client half-closed.
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
      reactor->OnWriteDone(true);
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
