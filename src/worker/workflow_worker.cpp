#include "worker/workflow_worker.hpp"

#include <algorithm>

#include <boost/asio/post.hpp>

#include "log/log.hpp"
#include "protocol/subjects.hpp"
#include "worker/generation_run.hpp"

namespace asio = boost::asio;

namespace chat::worker {
namespace {

// A waiting request's turn can take a while: held this many times over the
// slots, the queue still serves users in turn without hoarding requests that
// an idle worker could take.
constexpr std::size_t kLookaheadFactor = 2;

// A log read for an earlier attempt that fails (a NATS node restarting, a
// slow server) is tried again this long after, doubling, before the request
// runs without the log's word: running it could pay the provider for a reply
// the pods already have.
constexpr std::chrono::milliseconds kFirstLogReadRetry{250};
constexpr std::chrono::milliseconds kLastLogReadRetry{2'000};

bool has_final(const std::vector<std::string>& payloads) {
  std::string error;
  for (const auto& p : payloads)
    if (auto c = protocol::decode_response_chunk(p, error); c && c->is_final) return true;
  return false;
}

// A request that ends before it started: its reply gets its cancelled end.
void end_unstarted(GenerationRun& run) {
  log::info("generation_cancelled", {{"message_id", run.request().message_id}, {"started", false},
                                     {"correlation_id", run.request().correlation_id}});
  run.end_cancelled();
}

}  // namespace

WorkflowWorker::WorkflowWorker(asio::any_io_executor executor, bus::MessageBus& bus, bus::WorkQueue& work,
                               bus::ChunkLog* log, registry::SessionRegistry& registry, config::WorkerConfig config,
                               std::vector<std::shared_ptr<providers::Provider>> providers, trace::Tracer tracer)
    : executor_(executor),
      bus_(bus),
      work_(work),
      log_(log),
      config_(std::move(config)),
      tracer_(tracer),
      router_(registry),
      keep_alive_timer_(executor),
      waiting_(config_.max_concurrent * 10) {
  for (auto& p : providers) providers_.emplace(std::string(p->name()), std::move(p));
}

WorkflowWorker::~WorkflowWorker() {
  {
    std::lock_guard lock(gate_->mutex);
    gate_->open = false;
  }
  requests_.reset();
  cancels_.reset();
  replays_.reset();
}

void WorkflowWorker::start() {
  cancels_ = bus_.subscribe(std::string(subjects::kAllCancel), {}, [this](const bus::Message& m) { on_cancel(m); });
  replays_ = bus_.subscribe(std::string(subjects::kAllReplay), {}, [this](const bus::Message& m) { on_replay(m); });
  requests_ = work_.consume([this] { return free_slots(); },
                            [this](std::unique_ptr<bus::WorkItem> item) { on_work(std::move(item)); });
  keep_alive();
}

std::size_t WorkflowWorker::free_slots() {
  std::lock_guard lock(mutex_);
  auto held = active_.load() + waiting_.size() + admitting_;
  auto room = config_.max_concurrent * kLookaheadFactor;
  return stopping_ || held >= room ? 0 : room - held;
}

void WorkflowWorker::stop_intake(std::function<void()> on_idle) {
  // Cancels and replays are still served: running generations need them.
  log::info("work_intake_stopped", {{"running", active_.load()}});
  std::vector<WaitingRequest> unstarted;
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
    if (requests_) ++admitting_;  // the drain below, until intake_drained()
    unstarted = waiting_.take_redeliverable();
    if (active_.load() != 0 || admitting_ != 0) {
      on_idle_ = std::move(on_idle);
      on_idle = nullptr;
    }
  }
  // Not started and not this queue's last delivery: another worker takes them
  // now. The rest (the in-process bus, core NATS) run here before the drain ends.
  for (auto& w : unstarted) w.item->give_back();
  if (!unstarted.empty()) log::info("requests_given_back", {{"count", unstarted.size()}});
  if (requests_) {
    requests_->drain([this, gate = gate_] {
      std::lock_guard lock(gate->mutex);
      if (gate->open) asio::post(executor_, [this] { intake_drained(); });
    });
  }
  if (on_idle) on_idle();
}

void WorkflowWorker::intake_drained() {
  requests_.reset();
  std::function<void()> idle;
  {
    std::lock_guard lock(mutex_);
    if (--admitting_ == 0 && active_.load() == 0) idle = std::move(on_idle_);
  }
  log::info("work_intake_drained", {{"running", active_.load()}});
  if (idle) idle();
}

void WorkflowWorker::cancel_running(std::function<void()> on_idle, Ending ending) {
  std::vector<std::shared_ptr<GenerationRun>> running;
  std::vector<std::shared_ptr<GenerationRun>> waiting;
  {
    std::lock_guard lock(mutex_);
    const bool all = ending == Ending::all;
    // Only where everything ends does nothing start any more.
    if (all) cancelling_ = true;
    else ending_last_deliveries_ = true;
    for (auto& [id, r] : runs_)
      if (auto run = r.run.lock(); run && (all || r.last_delivery)) running.push_back(std::move(run));
    // Those still waiting for a slot would start as the cancelled ones free
    // theirs: they end now too, never started. (After stop_intake, only last
    // deliveries still wait: the others were given back.)
    // They are counted in active_ in this hold: runs ending meanwhile on other
    // threads must not find the worker idle while these still have to end.
    while (auto w = waiting_.pop([](const std::string&) { return 0; }))
      waiting.push_back(track_unstarted(std::move(*w)));
    // A last delivery on its way to its slot or still being admitted ends as
    // it gets there: the event loop must outlive that.
    const bool to_wait_for =
        all ? active_.load() != 0 || admitting_ != 0
            : !running.empty() || admitting_ != 0 ||
                  std::ranges::any_of(starting_, [](const auto& s) { return s.second.last_delivery; });
    if (to_wait_for || !waiting.empty()) {
      on_idle_ = std::move(on_idle);
      on_idle = nullptr;
    }
  }
  log::warn("generations_cancelled_at_shutdown", {{"running", running.size()}, {"waiting", waiting.size()}});
  for (auto& run : running) run->cancel();
  for (auto& run : waiting) run->end_cancelled();
  if (on_idle) on_idle();
}

void WorkflowWorker::on_work(std::unique_ptr<bus::WorkItem> item) {
  std::string error;
  auto request = protocol::decode_workflow_request(item->payload(), error);
  // Subjects are what NATS permissions and the JetStream queue's order go by:
  // a payload naming another session than its subject is not trusted.
  if (request && item->subject() != subjects::execute(request->session_id))
    error = "session_id " + request->session_id + " is not the subject's session";
  if (!error.empty()) {
    log::warn("workflow_request_rejected", {{"subject", item->subject()}, {"error", error}});
    item->ack();  // never valid, however often it comes
    return;
  }
  {
    std::lock_guard lock(mutex_);
    ++admitting_;
  }
  asio::post(executor_, [this, w = WaitingRequest{std::move(*request), std::move(item)}]() mutable { admit(std::move(w)); });
}

void WorkflowWorker::collect(metrics::Exposition& out) const {
  std::size_t waiting = 0;
  {
    std::lock_guard lock(mutex_);
    waiting = waiting_.size();
  }
  out.gauge("chat_worker_slots_in_use", "Generations running.", static_cast<double>(active_.load()));
  out.gauge("chat_worker_slots", "Generations that may run at once (WORKER_MAX_CONCURRENT).",
            static_cast<double>(config_.max_concurrent));
  out.gauge("chat_worker_queue_depth", "Requests waiting for a slot.", static_cast<double>(waiting));
  out.counter("chat_worker_replies_total", "Replies ended (any outcome).", static_cast<double>(completed_.load()));
  out.counter("chat_worker_redeliveries_total",
              "Requests delivered again: a worker died with them, or the queue missed a worker's keep-alives.",
              static_cast<double>(redeliveries_.value()));
  out.counter("chat_worker_redeliveries_kept_running_total",
              "Requests delivered again (the queue missed the keep-alives) or sent twice while this worker still ran or "
              "queued them: not started again.",
              static_cast<double>(kept_running_.value()));
  out.counter("chat_worker_redeliveries_already_finished_total",
              "Redelivered requests whose earlier attempt had finished (acked, not generated again).",
              static_cast<double>(already_finished_.value()));
  out.counter("chat_worker_overloaded_total", "Requests refused because the waiting queue was full.",
              static_cast<double>(overloaded_.value()));
  provider_metrics_.requests.each([&](const metrics::Labels& l, const metrics::Counter& c) {
    out.counter("chat_provider_requests_total", "Generations started, by provider.", static_cast<double>(c.value()), l);
  });
  provider_metrics_.errors.each([&](const metrics::Labels& l, const metrics::Counter& c) {
    out.counter("chat_provider_errors_total", "Generations that ended in an error, by provider and code.",
                static_cast<double>(c.value()), l);
  });
  provider_metrics_.tokens.each([&](const metrics::Labels& l, const metrics::Counter& c) {
    out.counter("chat_provider_tokens_total", "Tokens the providers reported, by provider.",
                static_cast<double>(c.value()), l);
  });
  provider_metrics_.first_token.each([&](const metrics::Labels& l, const metrics::Histogram& h) {
    out.histogram("chat_provider_first_token_seconds", "From a generation's start to its first text, by provider.",
                  h.snapshot(), l);
  });
  provider_metrics_.generation.each([&](const metrics::Labels& l, const metrics::Histogram& h) {
    out.histogram("chat_provider_generation_seconds", "A generation from start to end, by provider.", h.snapshot(), l);
  });
}

void WorkflowWorker::admit(WaitingRequest w) {
  if (w.item->attempt() > 1) redeliveries_.add();
  if (w.item->attempt() == 1 || !log_) return start_or_wait(std::move(w));
  // Delivered again: if an earlier attempt finished (the worker died before its
  // ack), the pods have the reply already.
  auto shared = std::make_shared<WaitingRequest>(std::move(w));
  if (take_newer_delivery(*shared, shared)) return;
  read_log_then_admit(std::move(shared), kFirstLogReadRetry);
}

void WorkflowWorker::read_log_then_admit(std::shared_ptr<WaitingRequest> shared, std::chrono::milliseconds retry) {
  auto session = shared->request.session_id, message = shared->request.message_id;
  log_->read(session, message, [this, gate = gate_, shared, retry](boost::system::error_code ec,
                                                                  std::vector<std::string> payloads) {
    // Gone (shut down before the read answered): its queue delivers the request again.
    std::lock_guard lock(gate->mutex);
    if (!gate->open) return;
    asio::post(executor_, [this, gate, shared, retry, ec, payloads = std::move(payloads)] {
      if (ec && retry <= kLastLogReadRetry) return read_log_again(std::move(shared), retry, ec);
      if (ec)
        log::warn("redelivery_run_unchecked", {{"message_id", shared->request.message_id}, {"error", ec.message()}});
      if (ec || !has_final(payloads)) return start_or_wait(WaitingRequest{shared->request, nullptr}, shared);
      log::info("reply_already_finished", {{"message_id", shared->request.message_id}});
      already_finished_.add();
      std::function<void()> idle;
      {
        std::lock_guard lock(mutex_);
        stop_reading_log(shared);  // from here on `shared` is this handler's alone
        // The drain may have been waiting for this admission alone.
        if (--admitting_ == 0 && active_.load() == 0) idle = std::move(on_idle_);
      }
      shared->item->ack();
      if (idle) idle();
    });
  });
}

// Still in reading_log_ meanwhile: kept alive, and a newer delivery takes its place.
void WorkflowWorker::read_log_again(std::shared_ptr<WaitingRequest> shared, std::chrono::milliseconds retry,
                                    boost::system::error_code ec) {
  log::warn("redelivery_log_read_failed", {{"message_id", shared->request.message_id}, {"error", ec.message()},
                                           {"retry_ms", retry.count()}});
  auto timer = std::make_shared<asio::steady_timer>(executor_, retry);
  timer->async_wait([this, gate = gate_, timer, shared = std::move(shared), retry](boost::system::error_code) {
    std::lock_guard lock(gate->mutex);
    if (gate->open) read_log_then_admit(shared, retry * 2);
  });
}

// Running, waiting, starting or being looked for in the log here already:
// takes this delivery of it instead, or nullopt if it is not here. With mutex_ held.
std::optional<WorkflowWorker::Holder> WorkflowWorker::hand_to_holder(WaitingRequest& w) {
  if (auto it = runs_.find(w.request.message_id); it != runs_.end()) {
    if (auto run = it->second.run.lock()) {
      const bool last_delivery = w.item->final_attempt();
      it->second.last_delivery = last_delivery;  // the run holds this delivery now
      // A drain that ended the last deliveries passed this run by: it was
      // not one then, and now nobody else will get it.
      return Holder{std::move(run), last_delivery && ending_last_deliveries_};
    }
  }
  if (take_while_reading_log(w) || take_while_starting(w) ||
      waiting_.take_newer_delivery(w.request.message_id, w.item))
    return Holder{};
  return std::nullopt;
}

// Delivered again while this worker still runs or queues it: the queue did not
// hear its keep-alives (the bus was away longer than the ack wait), or the
// same request was sent twice. Starting over would pay the provider twice and
// restart the reply on every stream.
void WorkflowWorker::taken_over(WaitingRequest& w, Holder holder, unsigned attempt) {
  log::info("redelivery_taken_over", {{"message_id", w.request.message_id}, {"running", holder.run != nullptr},
                                      {"attempt", attempt}});
  kept_running_.add();
  if (!holder.run) return;
  holder.run->take_newer_delivery(std::move(w.item));
  if (holder.end_now) holder.run->cancel();
}

bool WorkflowWorker::take_newer_delivery(WaitingRequest& w, std::shared_ptr<WaitingRequest> reading_log) {
  const auto attempt = w.item->attempt();
  std::optional<Holder> holder;
  {
    std::lock_guard lock(mutex_);
    holder = hand_to_holder(w);
    if (!holder) {
      // In the same hold of the lock: a delivery a moment later finds it.
      reading_log_[w.request.message_id] = std::move(reading_log);
      return false;
    }
    --admitting_;
  }
  taken_over(w, std::move(*holder), attempt);
  return true;
}

bool WorkflowWorker::take_while_reading_log(WaitingRequest& w) {
  auto it = reading_log_.find(w.request.message_id);
  if (it == reading_log_.end()) return false;
  // An earlier delivery whose own read ended just before this one's began:
  // the later one is what the queue waits for, so it stays.
  if (w.item->attempt() < it->second->item->attempt()) return true;
  it->second->item = std::move(w.item);
  it->second->item->in_progress();
  return true;
}

bool WorkflowWorker::take_while_starting(WaitingRequest& w) {
  auto it = starting_.find(w.request.message_id);
  if (it == starting_.end()) return false;
  it->second.newer = std::move(w.item);
  it->second.newer->in_progress();
  it->second.last_delivery = it->second.newer->final_attempt();
  return true;
}

void WorkflowWorker::enter_starting(const WaitingRequest& w) {
  starting_.try_emplace(w.request.message_id, Starting{requester_of(w.request), w.item->final_attempt(), nullptr});
}

// Delivered again on its way to its slot: the newest delivery is the one to
// judge (its last?) and to hold.
void WorkflowWorker::adopt_newer_delivery(WaitingRequest& w) {
  if (auto it = starting_.find(w.request.message_id); it != starting_.end() && it->second.newer)
    w.item = std::move(it->second.newer);
}

bool WorkflowWorker::ends_unstarted(const WaitingRequest& w) {
  return cancelling_ || (ending_last_deliveries_ && w.item->final_attempt()) || cancelled_before_start(w.request);
}

bool WorkflowWorker::cancelled_before_start(const protocol::WorkflowRequest& request) {
  auto* cancel = unheld_cancels_.find(request.message_id);
  if (!cancel || cancel->user_id != request.user_id) return false;
  cancelled_.remember(request.message_id, request.user_id, request.session_id);  // a cancel sent again is answered
  return true;
}

// Its delivery held in reading_log_ until now is taken out (mutex_ held).
void WorkflowWorker::stop_reading_log(const std::shared_ptr<WaitingRequest>& read_for) {
  if (auto it = reading_log_.find(read_for->request.message_id); it != reading_log_.end() && it->second == read_for)
    reading_log_.erase(it);
}

void WorkflowWorker::start_or_wait(WaitingRequest w, std::shared_ptr<WaitingRequest> read_for) {
  unsigned attempt = 0;
  std::optional<Holder> holder;
  std::shared_ptr<GenerationRun> cancelled;
  bool overloaded = false;
  {
    std::lock_guard lock(mutex_);
    --admitting_;
    // Read for in the log until now: it leaves reading_log_ in the hold that
    // enters it elsewhere, so a delivery meanwhile always finds it somewhere.
    if (read_for) {
      stop_reading_log(read_for);
      w.item = std::move(read_for->item);
    }
    attempt = w.item->attempt();
    // Here already (delivered again, or sent twice): looked for in the same
    // hold that enters it, so two deliveries admitted at once run it once.
    holder = hand_to_holder(w);
    if (!holder && ends_unstarted(w)) {
      cancelled = track_unstarted(std::move(w));
    } else if (!holder) {
      if (held_ >= config_.max_concurrent) {
        // A burst waits for a free slot instead of failing; only a flood is refused.
        if (waiting_.push(std::move(w))) return;
        overloaded = true;
      }
      ++active_;
      if (!overloaded) ++held_;  // the slot belongs to this request until finished()
      enter_starting(w);
    }
  }
  if (holder) return taken_over(w, std::move(*holder), attempt);
  if (cancelled) return end_unstarted(*cancelled);
  if (overloaded) {
    overloaded_.add();
    return run(std::move(w), Slot::extra, "worker_overloaded", "too many replies are waiting; try again shortly");
  }
  run(std::move(w), Slot::held);
}

void WorkflowWorker::run(WaitingRequest w, Slot slot, std::string_view fail_code, std::string_view fail_message) {
  auto& request = w.request;
  auto provider_name = request.context.ai_provider.empty() ? config_.default_provider : request.context.ai_provider;
  auto provider = providers_.find(provider_name);
  auto model = request.context.model;
  if (model.empty() && provider != providers_.end()) model = provider->second->default_model();
  router_.forget(request.session_id);
  auto label = provider == providers_.end() ? std::string("unknown") : provider_name;
  std::shared_ptr<GenerationRun> run;
  bool cancelled = false;
  bool retries_exhausted = false;
  {
    std::lock_guard lock(mutex_);
    // Delivered again on its way here (while it waited, or on its way from
    // start_or_wait() or finished()): the newest delivery is the one judged,
    // in the same hold that tracks it. A cancel meanwhile found it in
    // starting_ and was answered.
    adopt_newer_delivery(w);
    cancelled = ends_unstarted(w);
    // The queue's last delivery after failed ones is not tried once more: a
    // worker dying with it would leave the reply without an end.
    retries_exhausted = w.item->final_attempt() && w.item->attempt() > 1;
    run = cancelled ? track_new_run(std::move(w), "", "none", slot)
                    : track_new_run(std::move(w), model, std::move(label), slot);
  }
  if (cancelled) return end_unstarted(*run);
  log::info("generation_started", {{"message_id", run->request().message_id},
                                   {"session_id", run->request().session_id}, {"provider", provider_name},
                                   {"model", model}, {"attempt", run->attempt()},
                                   {"correlation_id", run->request().correlation_id}});
  if (!fail_code.empty()) return run->fail(fail_code, fail_message);
  if (retries_exhausted) return run->fail("retries_exhausted", "the reply failed on every attempt");
  if (provider == providers_.end())
    return run->fail("unknown_provider", "no AI provider named \"" + provider_name + "\"");
  run->start(*provider->second);
}

void WorkflowWorker::on_cancel(const bus::Message& m) {
  std::string error;
  auto cancel = protocol::decode_cancel_on(m.subject, m.payload, error);
  if (!cancel) {
    log::warn("cancel_request_rejected", {{"subject", m.subject}, {"error", error}});
    return;
  }
  std::shared_ptr<GenerationRun> run;
  std::optional<Requester> request;
  std::shared_ptr<GenerationRun> unstarted;
  std::optional<CancelledReplies::Entry> cancelled_before;
  {
    std::lock_guard lock(mutex_);
    if (auto it = runs_.find(cancel->message_id); it != runs_.end()) run = it->second.run.lock();
    if (run) request = requester_of(run->request());
    else if (auto* waiting = waiting_.find(cancel->message_id)) request = requester_of(*waiting);
    else if (auto it = reading_log_.find(cancel->message_id); it != reading_log_.end())
      request = requester_of(it->second->request);
    else if (auto it = starting_.find(cancel->message_id); it != starting_.end()) request = it->second.requester;
    // The owner's cancel of a request that never started takes it out of the
    // queue, into runs_ and active_ in the same hold (a drain must wait for it).
    if (!run && request && request->user_id == cancel->user_id)
      if (auto w = waiting_.remove(cancel->message_id)) unstarted = track_unstarted(std::move(*w));
    if (request && request->user_id == cancel->user_id) {
      cancelled_.remember(cancel->message_id, request->user_id, request->session_id);
    } else if (!request) {
      if (auto* earlier = cancelled_.find(cancel->message_id)) cancelled_before = *earlier;
      // Not here yet (still in the work queue), or another worker's: should it
      // come here, it ends cancelled instead of running.
      else unheld_cancels_.remember(cancel->message_id, cancel->user_id, cancel->session_id);
    }
    // Its earlier attempt is being looked for in the log, or it is on its way
    // to its slot: it ends when that read does, or as its run is tracked.
    if (!run && request && !unstarted && request->user_id == cancel->user_id)
      unheld_cancels_.remember(cancel->message_id, cancel->user_id, cancel->session_id);
  }
  if (cancelled_before) {
    // Sent again after this worker cancelled it: the same answer as the first time.
    answer_cancel(m.reply_to, cancelled_before->user_id == cancel->user_id, cancel->message_id,
                  cancelled_before->session_id);
    return;
  }
  if (!request) return;  // another worker has it, or it already ended: stay silent
  bool owner = request->user_id == cancel->user_id;
  answer_cancel(m.reply_to, owner, cancel->message_id, request->session_id);
  if (!owner || (!run && !unstarted)) return;  // one being read for or on its way ends later
  log::info("generation_cancelled", {{"message_id", cancel->message_id}, {"started", run != nullptr},
                                     {"correlation_id", request->correlation_id}});
  if (run) return run->cancel();
  if (unstarted) unstarted->end_cancelled();
}

void WorkflowWorker::answer_cancel(std::string_view reply_to, bool owner, const std::string& message_id,
                                   const std::string& session_id) {
  if (reply_to.empty()) return;
  bus_.publish(std::string(reply_to), "{\"status\":\"" + std::string(owner ? "cancelling" : "forbidden") +
                                          "\",\"message_id\":\"" + message_id + "\",\"session_id\":\"" +
                                          session_id + "\"}");
}

// A request cancelled before it started ends at once as cancelled (the
// caller calls end_cancelled() out of the lock), in a slot of its own that
// passes to nobody.
std::shared_ptr<GenerationRun> WorkflowWorker::track_unstarted(WaitingRequest w) {
  ++active_;
  return track_new_run(std::move(w), "", "none", Slot::extra);
}

void WorkflowWorker::on_replay(const bus::Message& m) {
  std::string error;
  auto replay = protocol::decode_replay_request(m.payload, error);
  if (replay && m.subject != subjects::replay(replay->session_id))
    error = "session_id " + replay->session_id + " is not the subject's session";
  if (!error.empty()) {
    log::warn("replay_request_rejected", {{"subject", m.subject}, {"error", error}});
    return;
  }
  // The pod holds a stream of the session now: route there at once.
  router_.add_pod(replay->session_id, replay->pod_id);
  if (log_) return;  // the pod reads what it missed from the log
  auto subject = subjects::pod_response(replay->pod_id);
  std::size_t sent = 0;
  replay_log_.replay(replay->session_id, replay->message_id, [&](const std::string& payload) {
    bus_.publish(subject, payload);
    ++sent;
  });
  if (sent) log::info("replay_sent", {{"session_id", replay->session_id}, {"pod_id", replay->pod_id}, {"chunks", sent}});
}

// Made and entered in runs_ in one hold of mutex_: a delivery of it again finds
// it passed a slot or running, never neither (and so never runs it twice).
std::shared_ptr<GenerationRun> WorkflowWorker::track_new_run(WaitingRequest w, std::string model, std::string provider,
                                                             Slot slot) {
  auto message_id = w.request.message_id;
  adopt_newer_delivery(w);
  starting_.erase(message_id);
  const bool last_delivery = w.item->final_attempt();
  auto run = std::make_shared<GenerationRun>(executor_, *this, std::move(w.request), std::move(model),
                                             std::move(w.item), std::move(provider));
  runs_[message_id] = Running{run, run->request().user_id, slot, last_delivery};
  ++running_per_user_[run->request().user_id];
  return run;
}

void WorkflowWorker::finished(const std::string& message_id) {
  std::optional<WaitingRequest> next;
  std::function<void()> idle;
  {
    std::lock_guard lock(mutex_);
    auto it = runs_.find(message_id);
    // Only a slot within WORKER_MAX_CONCURRENT passes on: an extra one (a
    // refusal, an unstarted cancel) would let one more request run each time.
    // It passes before its user's count drops: that user just had a turn.
    const bool held = it != runs_.end() && it->second.slot == Slot::held;
    if (held) {
      next = waiting_.pop([this](const std::string& user) {
        auto count = running_per_user_.find(user);
        return count == running_per_user_.end() ? 0 : count->second;
      });
      if (next) enter_starting(*next);
      else --held_;
    }
    if (it != runs_.end()) {
      if (--running_per_user_[it->second.user_id] == 0) running_per_user_.erase(it->second.user_id);
      runs_.erase(it);
    }
    // Counted in the hold that may find the worker idle: a drain's on_idle
    // never sees a reply ended and not counted yet.
    ++completed_;
    if (!next && --active_ == 0 && admitting_ == 0) idle = std::move(on_idle_);
  }
  // The slot passes to the next user's oldest waiting request.
  if (next) asio::post(executor_, [this, w = std::move(*next)]() mutable { run(std::move(w), Slot::held); });
  if (idle) idle();
}

// Waiting and running requests are not dead workers' requests: the queue must
// not deliver them again while they are held here.
void WorkflowWorker::keep_alive() {
  {
    std::lock_guard lock(mutex_);
    waiting_.for_each_item([](bus::WorkItem& item) { item.in_progress(); });
    for (auto& [id, w] : reading_log_) w->item->in_progress();
    for (auto& [id, starting] : starting_)
      if (starting.newer) starting.newer->in_progress();
    for (auto& [id, r] : runs_)
      if (auto run = r.run.lock()) run->keep_alive();
  }
  keep_alive_timer_.expires_after(config_.progress_interval);
  keep_alive_timer_.async_wait([this](boost::system::error_code ec) {
    if (!ec) keep_alive();
  });
}

}  // namespace chat::worker
