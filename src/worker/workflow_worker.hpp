#pragma once
// The workflow service (docs/API.md#overview): takes chat requests from the
// work queue, runs each on its provider, numbers the output as chunks and
// routes them to the pods of the session. The same class runs inside chatd
// (embedded default, in-process bus) and in chat-worker (NATS).
//
// Admission: a request runs when a slot is free (WORKER_MAX_CONCURRENT), else
// waits in a bounded queue that serves users in turn. A request delivered
// again after a worker died is a new attempt, unless the log shows an earlier
// attempt finished; its last delivery ends the reply with an error instead of
// trying once more. A cancel stops a running reply or removes a waiting one.

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/steady_timer.hpp>

#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "bus/chunk_log.hpp"
#include "bus/message_bus.hpp"
#include "bus/work_queue.hpp"
#include "common/cancelled_replies.hpp"
#include "config/config.hpp"
#include "metrics/metrics.hpp"
#include "providers/provider.hpp"
#include "registry/session_registry.hpp"
#include "trace/tracer.hpp"
#include "worker/chunk_router.hpp"
#include "worker/fair_queue.hpp"
#include "worker/replay_log.hpp"

namespace chat::worker {

class GenerationRun;

// Per provider (label values: configured provider names, error codes).
struct ProviderMetrics {
  metrics::Labelled<metrics::Counter> requests{{"provider"}};
  metrics::Labelled<metrics::Counter> errors{{"provider", "code"}};
  metrics::Labelled<metrics::Counter> tokens{{"provider"}};
  metrics::Labelled<metrics::Histogram> first_token{{"provider"}};
  metrics::Labelled<metrics::Histogram> generation{{"provider"}};
};

class WorkflowWorker {
 public:
  // `log` may be null (core NATS): pods then ask this worker to replay chunks.
  WorkflowWorker(boost::asio::any_io_executor executor, bus::MessageBus& bus, bus::WorkQueue& work, bus::ChunkLog* log,
                 registry::SessionRegistry& registry, config::WorkerConfig config,
                 std::vector<std::shared_ptr<providers::Provider>> providers, trace::Tracer tracer = {});
  ~WorkflowWorker();

  void start();
  // Stops taking new requests and gives back the waiting ones another worker
  // can take. What the queue had already sent here is still taken (a queue
  // group would lose it: it delivers nothing twice). Those, the others and the
  // running generations go on to their end, then `on_idle` runs (once the
  // queue is drained, if nothing runs).
  void stop_intake(std::function<void()> on_idle = {});
  // Which requests cancel_running() ends: all of them (a queue that never
  // delivers a request again), or those on their last delivery (JetStream
  // gives the others to another worker once this one is gone).
  enum class Ending { all, last_deliveries };
  // After stop_intake, when shutdown ran out of time: every running
  // generation is cancelled (its provider call ends, its reply ends as
  // cancelled), and every request still waiting for a slot ends as cancelled
  // without starting, so none outlives the process's event loop and every
  // reply gets its end. `on_idle` runs once nothing runs any more (with
  // last_deliveries: at once if nothing was on its last delivery).
  void cancel_running(std::function<void()> on_idle, Ending ending = Ending::all);
  std::size_t active() const { return active_.load(); }
  std::uint64_t completed() const { return completed_.load(); }
  // Slots, queue, attempts and the providers' figures (any thread).
  void collect(metrics::Exposition& out) const;

 private:
  friend class GenerationRun;
  void on_work(std::unique_ptr<bus::WorkItem> item);
  void on_cancel(const bus::Message& m);
  void on_replay(const bus::Message& m);
  void admit(WaitingRequest w);
  // A delivery again: acked if the log holds its reply's end, else admitted.
  void read_log_then_admit(std::shared_ptr<WaitingRequest> shared, std::chrono::milliseconds retry);
  void read_log_again(std::shared_ptr<WaitingRequest> shared, std::chrono::milliseconds retry,
                      boost::system::error_code ec);
  // A delivery again, about to be looked for in the log: handed to the same
  // request held here already, else registered in reading_log_ (one hold).
  bool take_newer_delivery(WaitingRequest& w, std::shared_ptr<WaitingRequest> reading_log);
  // What holds a request delivered again: its run (null when it waits, starts
  // or is read for in the log; that one takes the delivery), and whether the
  // run must end now.
  struct Holder {
    std::shared_ptr<GenerationRun> run;
    bool end_now = false;
  };
  std::optional<Holder> hand_to_holder(WaitingRequest& w);  // with mutex_ held
  void taken_over(WaitingRequest& w, Holder holder, unsigned attempt);
  bool take_while_reading_log(WaitingRequest& w);    // with mutex_ held
  bool take_while_starting(WaitingRequest& w);       // with mutex_ held
  bool cancelled_before_start(const protocol::WorkflowRequest& request);  // with mutex_ held
  // Cancelled, or ended by cancel_running(), before it ran (mutex_ held).
  bool ends_unstarted(const WaitingRequest& w);
  void enter_starting(const WaitingRequest& w);       // with mutex_ held
  void adopt_newer_delivery(WaitingRequest& w);       // with mutex_ held
  // Who sent a request a cancel names: copied out of mutex_'s hold.
  struct Requester {
    std::string user_id;
    std::string session_id;
    std::string correlation_id;
  };
  static Requester requester_of(const protocol::WorkflowRequest& r) {
    return {r.user_id, r.session_id, r.correlation_id};
  }
  // A run's place in active_: `held` is one of the WORKER_MAX_CONCURRENT slots
  // and passes to a waiting request when the run ends; `extra` (a request
  // refused or cancelled before it started, ended at once) passes to nobody.
  enum class Slot { held, extra };
  // `read_for`: the request comes from reading_log_ (w holds no item yet).
  void start_or_wait(WaitingRequest w, std::shared_ptr<WaitingRequest> read_for = nullptr);
  void intake_drained();
  void stop_reading_log(const std::shared_ptr<WaitingRequest>& read_for);  // with mutex_ held
  void run(WaitingRequest w, Slot slot, std::string_view fail_code = {}, std::string_view fail_message = {});
  void finished(const std::string& message_id);
  std::shared_ptr<GenerationRun> track_unstarted(WaitingRequest w);  // mutex_ held
  void keep_alive();
  std::shared_ptr<GenerationRun> track_new_run(WaitingRequest w, std::string model, std::string provider,
                                               Slot slot);  // mutex_ held
  // Answers a cancel request (no reply subject: nobody waits for one).
  void answer_cancel(std::string_view reply_to, bool owner, const std::string& message_id,
                     const std::string& session_id);
  std::size_t free_slots();

  boost::asio::any_io_executor executor_;
  bus::MessageBus& bus_;
  bus::WorkQueue& work_;
  bus::ChunkLog* log_;
  config::WorkerConfig config_;
  trace::Tracer tracer_;
  std::map<std::string, std::shared_ptr<providers::Provider>, std::less<>> providers_;
  ChunkRouter router_;
  std::unique_ptr<bus::Subscription> requests_;
  std::unique_ptr<bus::Subscription> cancels_;
  std::unique_ptr<bus::Subscription> replays_;
  // Without a chunk log: what pods may ask to be sent again. Long enough for a
  // page that posts first and subscribes a moment later.
  ReplayLog replay_log_{std::chrono::seconds{30}, 64 * 1024 * 1024};
  boost::asio::steady_timer keep_alive_timer_;
  std::atomic<std::size_t> active_{0};
  std::atomic<std::uint64_t> completed_{0};
  metrics::Counter redeliveries_;        // requests taken on a later attempt
  metrics::Counter already_finished_;    // redeliveries whose earlier attempt had finished
  metrics::Counter kept_running_;        // redeliveries of requests still running or waiting here
  metrics::Counter overloaded_;          // refused: the waiting queue was full
  ProviderMetrics provider_metrics_;
  // Guards the fields below: requests, cancels and completions come on many threads.
  mutable std::mutex mutex_;
  struct Running {
    std::weak_ptr<GenerationRun> run;
    std::string user_id;
    Slot slot = Slot::held;
    bool last_delivery = false;  // of the delivery it holds: the queue sends it no more
  };
  std::map<std::string, Running> runs_;
  std::map<std::string, std::size_t> running_per_user_;
  // A cancel sent again after the reply ended gets the first answer, not a 404.
  CancelledReplies cancelled_{std::chrono::minutes{10}, 10'000};
  // Cancels of requests this worker did not hold (still in the work queue,
  // another worker's, or being looked for in the log): one that starts here
  // later, the canceller's own, ends cancelled instead of running. A pod that
  // gives up on a reply no worker took sends such a cancel.
  CancelledReplies unheld_cancels_{std::chrono::hours{1}, 10'000};
  FairQueue waiting_;
  // Runs in one of the WORKER_MAX_CONCURRENT slots (Slot::held); active_ also
  // counts the extra ones. A request waits while every slot is held.
  std::size_t held_ = 0;
  // Taken off the queue, not yet running or waiting; and 1 for the queue's
  // drain while it still hands over what was sent here (stop_intake).
  std::size_t admitting_ = 0;
  // Deliveries again waiting for the chunk log's word on an earlier attempt
  // (admit), by message id: kept alive like waiting ones, and a later delivery
  // of one takes its place instead of starting the reply a second time.
  std::map<std::string, std::shared_ptr<WaitingRequest>> reading_log_;
  // Requests given a slot (by start_or_wait, or passed one by finished()), by
  // message id, until their run is tracked: on their way they are in no other
  // map. A delivery of one meanwhile is kept here, the newest, instead of
  // being taken as a request not seen before; a cancel of one is answered and
  // ends it as it is tracked.
  struct Starting {
    Requester requester;
    bool last_delivery = false;            // of the newest delivery
    std::unique_ptr<bus::WorkItem> newer;  // delivered again on its way
  };
  std::map<std::string, Starting> starting_;
  bool stopping_ = false;
  // cancel_running() ran: a request on its way to a slot (passed on by
  // finished(), or still being admitted) ends cancelled instead of starting;
  // with Ending::last_deliveries, only one on its last delivery does.
  bool cancelling_ = false;
  bool ending_last_deliveries_ = false;
  std::function<void()> on_idle_;
  // Log reads answer on the log's thread (JetStream's: the bus thread), also
  // after chat-worker destroyed this worker because its drain ran out of time:
  // they reach it only through this gate, which the destructor closes first.
  struct Gate {
    std::mutex mutex;  // held while an answer is handed on, and while closing
    bool open = true;
  };
  std::shared_ptr<Gate> gate_ = std::make_shared<Gate>();
};

}  // namespace chat::worker
