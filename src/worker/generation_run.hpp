#pragma once
// One generation of one reply: numbers the provider's output as chunks of the
// request's attempt, publishes them in order to the pods the router names (and
// to the accepting pod), appends them to the chunk log (again and again until
// the log took each), keeps the work item alive while it runs, and acks it
// once every chunk, the final one included, is in the log. All state lives on
// the run's strand; the provider's calls are posted onto it.

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/strand.hpp>

#include <chrono>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "bus/work_queue.hpp"
#include "protocol/messages.hpp"
#include "providers/provider.hpp"
#include "trace/span.hpp"
#include "worker/chunk_router.hpp"

namespace chat::worker {

class WorkflowWorker;

class GenerationRun final : public providers::GenerationSink, public std::enable_shared_from_this<GenerationRun> {
 public:
  // `provider` labels the run's metrics ("unknown", "none" when no provider runs).
  GenerationRun(boost::asio::any_io_executor ex, WorkflowWorker& worker, protocol::WorkflowRequest request,
                std::string model, std::unique_ptr<bus::WorkItem> item, std::string provider);

  void start(providers::Provider& provider);
  // Any thread.
  void cancel();
  // Ends the reply at once with an error chunk (unknown provider, overload, out of retries).
  void fail(std::string_view code, std::string_view message) { on_error(code, message); }
  // Ends the reply at once as cancelled (cancelled before it started).
  void end_cancelled();
  // Tells the work queue the request is still being worked on. Any thread.
  void keep_alive();
  // The queue delivered the request again while this run holds it (its
  // keep-alives did not reach the queue): the run goes on, and acks the newer
  // delivery when done. Any thread.
  void take_newer_delivery(std::unique_ptr<bus::WorkItem> item);

  const protocol::WorkflowRequest& request() const { return request_; }
  std::uint32_t attempt() const { return attempt_; }  // of the delivery it started with

  void on_text(std::string_view text) override;
  void on_finish(const providers::Finish& finish) override;
  void on_error(std::string_view code, std::string_view message) override;

 private:
  void emit_content(std::string text);
  protocol::ResponseChunk& emit_final(protocol::ChunkType type);
  protocol::ResponseChunk next_chunk(protocol::ChunkType type, std::string text, bool is_final);
  void pump();
  void publish_front(const ChunkRouter::Subjects& targets);
  // Consecutive chunks of the attempt, appended to the log as one entry.
  struct LogEntry {
    std::uint32_t first_chunk = 0;
    std::uint32_t last_chunk = 0;
    std::vector<std::string> payloads;
    std::size_t bytes = 0;
    bool final = false;
  };
  void queue_for_log(std::uint32_t chunk_id, std::string payload, bool final);
  void append_front_to_log(std::chrono::milliseconds retry);
  void on_logged(std::chrono::milliseconds retry, boost::system::error_code ec);
  std::string log_entry_id(const LogEntry& e) const;
  void done();
  void record_end(const protocol::ResponseChunk& final);

  boost::asio::strand<boost::asio::any_io_executor> strand_;
  WorkflowWorker& worker_;
  protocol::WorkflowRequest request_;
  std::string model_;
  std::uint32_t attempt_;
  std::unique_ptr<bus::WorkItem> item_;  // strand only
  std::string accepting_subject_;  // empty when the request did not name its pod
  std::string provider_;
  std::chrono::steady_clock::time_point started_ = std::chrono::steady_clock::now();
  bool first_text_seen_ = false;
  std::optional<std::int64_t> reported_tokens_;  // the provider's usage, when it gave one
  std::uint32_t next_chunk_id_ = 0;
  std::deque<protocol::ResponseChunk> outbox_;
  bool resolving_ = false;
  // Not yet confirmed by the log, oldest first; the front is in flight while
  // log_in_flight_, the back gathers chunks until it is sent.
  std::deque<LogEntry> unlogged_;
  bool log_in_flight_ = false;
  bool log_failing_ = false;  // logged once per run of failures
  std::chrono::steady_clock::time_point log_failing_since_{};  // the first failure since the last success
  bool log_abandoned_ = false;  // an entry was given up (logged once per run)
  std::mutex generation_mutex_;  // guards generation_ and cancel_requested_: cancel comes from bus threads
  std::shared_ptr<providers::Generation> generation_;
  bool cancel_requested_ = false;
  // A child of the pod's publish span (the request's traceparent header), and
  // the provider call under it; strand only once started.
  trace::Span generation_span_;
  trace::Span provider_span_;
};

}  // namespace chat::worker
