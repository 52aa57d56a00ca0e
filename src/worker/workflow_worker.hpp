#pragma once
// The workflow service (SPEC sections 2 and 4): takes WorkflowRequests from the
// `workflow-workers` queue group, runs each on its provider, numbers the output
// as ResponseChunks and routes them to the pods of the session. The same class
// runs inside chatd (embedded default, in-process bus) and in chat-worker (NATS).

#include <boost/asio/any_io_executor.hpp>

#include <atomic>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "bus/message_bus.hpp"
#include "config/config.hpp"
#include "providers/provider.hpp"
#include "registry/session_registry.hpp"
#include "worker/chunk_router.hpp"
#include "worker/replay_log.hpp"

namespace chat::worker {

// The provider interface the worker drives (src/providers).
using providers::Finish;
using providers::Generation;
using providers::GenerationSink;
using providers::Provider;

class GenerationRun;

class WorkflowWorker {
 public:
  WorkflowWorker(boost::asio::any_io_executor executor, bus::MessageBus& bus, registry::SessionRegistry& registry,
                 config::WorkerConfig config, std::vector<std::shared_ptr<Provider>> providers);
  ~WorkflowWorker();

  void start();
  // Stops taking new requests; running generations (and those already waiting
  // for a slot) go on to their end, then `on_idle` runs (at once if none).
  void stop_intake(std::function<void()> on_idle = {});
  std::size_t active() const { return active_.load(); }
  std::uint64_t completed() const { return completed_.load(); }

 private:
  friend class GenerationRun;
  void on_request(const bus::Message& m);
  void on_cancel(const bus::Message& m);
  void on_replay(const bus::Message& m);
  void admit(protocol::WorkflowRequest request);
  void run(protocol::WorkflowRequest request, bool overloaded);
  void finished(const std::string& message_id);

  boost::asio::any_io_executor executor_;
  bus::MessageBus& bus_;
  config::WorkerConfig config_;
  std::map<std::string, std::shared_ptr<Provider>, std::less<>> providers_;
  ChunkRouter router_;
  std::unique_ptr<bus::Subscription> requests_;
  std::unique_ptr<bus::Subscription> cancels_;
  std::unique_ptr<bus::Subscription> replays_;
  // Long enough for a page that posts first and subscribes a moment later.
  ReplayLog replay_log_{std::chrono::seconds{30}, 64 * 1024 * 1024};
  std::atomic<std::size_t> active_{0};
  std::atomic<std::uint64_t> completed_{0};
  std::mutex runs_mutex_;  // guards runs_ and waiting_: cancels arrive on bus threads
  std::map<std::string, std::weak_ptr<GenerationRun>> runs_;
  // Requests past WORKER_MAX_CONCURRENT wait here (bounded) for a free slot.
  std::deque<protocol::WorkflowRequest> waiting_;
  std::function<void()> on_idle_;  // set by stop_intake, guarded by runs_mutex_
};

}  // namespace chat::worker
