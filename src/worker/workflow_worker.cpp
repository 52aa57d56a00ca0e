#include "worker/workflow_worker.hpp"

#include <boost/asio/post.hpp>
#include <boost/asio/strand.hpp>

#include <algorithm>
#include <deque>

#include "common/time.hpp"
#include "log/log.hpp"
#include "protocol/subjects.hpp"

namespace asio = boost::asio;

namespace chat::worker {

// One generation: numbers the provider's output and publishes it in order.
// All state lives on the run's strand; the provider's calls are posted onto it.
class GenerationRun final : public GenerationSink, public std::enable_shared_from_this<GenerationRun> {
 public:
  GenerationRun(asio::any_io_executor ex, WorkflowWorker& worker, protocol::WorkflowRequest request, std::string model)
      : strand_(asio::make_strand(ex)),
        worker_(worker),
        request_(std::move(request)),
        model_(std::move(model)),
        accepting_subject_(request_.accepting_pod.empty() ? std::string() : subjects::pod_response(request_.accepting_pod)) {}

  void start(Provider& provider) {
    auto generation = provider.start(request_, model_, shared_from_this());
    std::lock_guard lock(generation_mutex_);
    generation_ = std::move(generation);
    if (cancel_requested_) generation_->cancel();
  }

  void cancel() {
    std::lock_guard lock(generation_mutex_);
    cancel_requested_ = true;
    if (generation_) generation_->cancel();
  }

  void fail(std::string_view code, std::string_view message) { on_error(code, message); }
  const protocol::WorkflowRequest& request() const { return request_; }

  void on_text(std::string_view text) override {
    asio::post(strand_, [self = shared_from_this(), text = std::string(text)]() mutable {
      self->emit(protocol::ChunkType::content, std::move(text), false);
    });
  }

  void on_finish(const Finish& finish) override {
    asio::post(strand_, [self = shared_from_this(), finish] {
      auto& c = self->emit(protocol::ChunkType::metadata, {}, true);
      c.metadata = protocol::ChunkMetadata{finish.model.empty() ? self->model_ : finish.model, finish.tokens_used,
                                           finish.finish_reason};
      self->pump();
    });
  }

  void on_error(std::string_view code, std::string_view message) override {
    asio::post(strand_, [self = shared_from_this(), code = std::string(code), message = std::string(message)] {
      log::warn("generation_failed", {{"message_id", self->request_.message_id}, {"code", code},
                                      {"correlation_id", self->request_.correlation_id}});
      auto& c = self->emit(protocol::ChunkType::error, {}, true);
      c.metadata = protocol::ChunkMetadata{self->model_, std::nullopt, "error"};
      c.error = protocol::ChunkError{code, message};
      self->pump();
    });
  }

 private:
  // Appends a chunk to the outbox; content chunks go out at once, final chunks
  // after the caller filled in their metadata.
  protocol::ResponseChunk& emit(protocol::ChunkType type, std::string text, bool is_final) {
    protocol::ResponseChunk c;
    c.session_id = request_.session_id;
    c.message_id = request_.message_id;
    c.chunk_id = next_chunk_id_++;
    c.chunk = std::move(text);
    c.chunk_type = type;
    c.is_final = is_final;
    c.timestamp = rfc3339_now();
    c.correlation_id = request_.correlation_id;
    outbox_.push_back(std::move(c));
    if (!is_final) pump();
    return outbox_.back();
  }

  // Publishes the outbox in chunk order: a cached route goes out at once; a
  // registry look-up holds the queue until it answers.
  void pump() {
    while (!outbox_.empty() && !resolving_) {
      auto subjects = worker_.router_.cached(request_.session_id);
      if (!subjects) {
        resolving_ = true;
        worker_.router_.resolve(request_.session_id, [self = shared_from_this()](ChunkRouter::SubjectsPtr s) {
          asio::post(self->strand_, [self, s = std::move(s)] {
            self->resolving_ = false;
            self->publish_front(*s);
            self->pump();
          });
        });
        return;
      }
      publish_front(*subjects);
    }
  }

  void publish_front(const ChunkRouter::Subjects& targets) {
    if (outbox_.empty()) return;
    auto payload = protocol::encode(outbox_.front());
    bool final = outbox_.front().is_final;
    outbox_.pop_front();
    bool broadcast = targets.size() == 1 && targets.front() == subjects::broadcast(request_.session_id);
    worker_.replay_log_.record(request_.session_id, request_.message_id, payload, broadcast);
    // The accepting pod stores the reply, so it gets every chunk, also while
    // the route names only the pods that hold streams (a broadcast reaches it).
    if (!broadcast && !accepting_subject_.empty() &&
        std::find(targets.begin(), targets.end(), accepting_subject_) == targets.end())
      worker_.bus_.publish(accepting_subject_, payload);
    for (std::size_t i = 0; i < targets.size(); ++i)
      worker_.bus_.publish(targets[i], i + 1 == targets.size() ? std::move(payload) : payload);
    if (final) {
      worker_.replay_log_.finish(request_.session_id, request_.message_id);
      worker_.finished(request_.message_id);
    }
  }

  asio::strand<asio::any_io_executor> strand_;
  WorkflowWorker& worker_;
  protocol::WorkflowRequest request_;
  std::string model_;
  std::string accepting_subject_;  // empty when the request did not name its pod
  std::uint32_t next_chunk_id_ = 0;
  std::deque<protocol::ResponseChunk> outbox_;
  bool resolving_ = false;
  std::mutex generation_mutex_;  // guards generation_ and cancel_requested_: cancel comes from bus threads
  std::shared_ptr<Generation> generation_;
  bool cancel_requested_ = false;
};

WorkflowWorker::WorkflowWorker(asio::any_io_executor executor, bus::MessageBus& bus, registry::SessionRegistry& registry,
                               config::WorkerConfig config, std::vector<std::shared_ptr<Provider>> providers)
    : executor_(std::move(executor)), bus_(bus), config_(std::move(config)), router_(registry) {
  for (auto& p : providers) providers_.emplace(std::string(p->name()), std::move(p));
}

WorkflowWorker::~WorkflowWorker() {
  requests_.reset();
  cancels_.reset();
  replays_.reset();
}

void WorkflowWorker::start() {
  requests_ = bus_.subscribe(std::string(subjects::kAllExecute), std::string(subjects::kWorkerQueueGroup),
                             [this](const bus::Message& m) { on_request(m); });
  cancels_ = bus_.subscribe(std::string(subjects::kAllCancel), {}, [this](const bus::Message& m) { on_cancel(m); });
  replays_ = bus_.subscribe(std::string(subjects::kAllReplay), {}, [this](const bus::Message& m) { on_replay(m); });
}

void WorkflowWorker::stop_intake(std::function<void()> on_idle) {
  // Cancels and replays are still served: running generations need them.
  requests_.reset();
  if (!on_idle) return;
  {
    std::lock_guard lock(runs_mutex_);
    if (active_.load() != 0) {
      on_idle_ = std::move(on_idle);
      return;
    }
  }
  on_idle();
}

void WorkflowWorker::on_request(const bus::Message& m) {
  std::string error;
  auto request = protocol::decode_workflow_request(m.payload, error);
  if (!request) {
    log::warn("workflow_request_rejected", {{"subject", m.subject}, {"error", error}});
    return;
  }
  asio::post(executor_, [this, r = std::move(*request)]() mutable { admit(std::move(r)); });
}

void WorkflowWorker::admit(protocol::WorkflowRequest request) {
  bool overloaded = false;
  {
    std::lock_guard lock(runs_mutex_);
    if (active_.load() >= config_.max_concurrent) {
      // A burst waits for a free slot instead of failing; only a flood is refused.
      if (waiting_.size() < config_.max_concurrent * 10) {
        waiting_.push_back(std::move(request));
        return;
      }
      overloaded = true;
    }
    ++active_;  // the slot belongs to this request until finished()
  }
  run(std::move(request), overloaded);
}

void WorkflowWorker::on_cancel(const bus::Message& m) {
  std::string error;
  auto cancel = protocol::decode_cancel_request(m.payload, error);
  if (!cancel) {
    log::warn("cancel_request_rejected", {{"subject", m.subject}, {"error", error}});
    return;
  }
  std::shared_ptr<GenerationRun> run;
  {
    std::lock_guard lock(runs_mutex_);
    if (auto it = runs_.find(cancel->message_id); it != runs_.end()) run = it->second.lock();
  }
  if (!run) return;  // another worker runs it, or it already ended: stay silent
  const auto& running = run->request();
  bool owner = running.user_id == cancel->user_id;
  if (!m.reply_to.empty()) {
    bus_.publish(std::string(m.reply_to),
                 "{\"status\":\"" + std::string(owner ? "cancelling" : "forbidden") + "\",\"message_id\":\"" +
                     running.message_id + "\",\"session_id\":\"" + running.session_id + "\"}");
  }
  if (!owner) return;
  log::info("generation_cancelled", {{"message_id", cancel->message_id}, {"correlation_id", running.correlation_id}});
  run->cancel();
}

void WorkflowWorker::on_replay(const bus::Message& m) {
  std::string error;
  auto replay = protocol::decode_replay_request(m.payload, error);
  if (!replay) {
    log::warn("replay_request_rejected", {{"subject", m.subject}, {"error", error}});
    return;
  }
  router_.add_pod(replay->session_id, replay->pod_id);
  auto subject = subjects::pod_response(replay->pod_id);
  std::size_t sent = 0;
  replay_log_.replay(replay->session_id, replay->message_id, [&](const std::string& payload) {
    bus_.publish(subject, payload);
    ++sent;
  });
  if (sent) log::info("replay_sent", {{"session_id", replay->session_id}, {"pod_id", replay->pod_id}, {"chunks", sent}});
}

void WorkflowWorker::run(protocol::WorkflowRequest request, bool overloaded) {
  auto provider_name = request.context.ai_provider.empty() ? config_.default_provider : request.context.ai_provider;
  auto provider = providers_.find(provider_name);
  auto model = request.context.model;
  if (model.empty() && provider != providers_.end()) model = provider->second->default_model();
  log::info("generation_started", {{"message_id", request.message_id}, {"session_id", request.session_id},
                                   {"provider", provider_name}, {"model", model},
                                   {"correlation_id", request.correlation_id}});
  auto message_id = request.message_id;
  router_.forget(request.session_id);
  auto run = std::make_shared<GenerationRun>(executor_, *this, std::move(request), model);
  {
    std::lock_guard lock(runs_mutex_);
    runs_[message_id] = run;
  }
  if (overloaded) return run->fail("worker_overloaded", "too many replies are waiting; try again shortly");
  if (provider == providers_.end())
    return run->fail("unknown_provider", "no AI provider named \"" + provider_name + "\"");
  run->start(*provider->second);
}

void WorkflowWorker::finished(const std::string& message_id) {
  std::optional<protocol::WorkflowRequest> next;
  std::function<void()> idle;
  {
    std::lock_guard lock(runs_mutex_);
    runs_.erase(message_id);
    if (waiting_.empty()) {
      if (--active_ == 0) idle = std::move(on_idle_);
    } else {  // the slot passes to the oldest waiting request
      next = std::move(waiting_.front());
      waiting_.pop_front();
    }
  }
  ++completed_;
  if (next) asio::post(executor_, [this, r = std::move(*next)]() mutable { run(std::move(r), false); });
  if (idle) idle();
}

}  // namespace chat::worker
