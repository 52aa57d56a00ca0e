#include "worker/generation_run.hpp"

#include <boost/asio/dispatch.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>

#include <algorithm>
#include <utility>

#include "common/time.hpp"
#include "common/utf8.hpp"
#include "log/log.hpp"
#include "protocol/subjects.hpp"
#include "worker/workflow_worker.hpp"

namespace asio = boost::asio;

namespace chat::worker {
namespace {

// A provider's text with a NUL in it would be refused by the pods (PostgreSQL
// cannot store it); nobody reads one.
std::string without_nul(std::string s) {
  std::erase(s, '\0');
  return s;
}

constexpr std::chrono::milliseconds kFirstLogRetry{200};
constexpr std::chrono::milliseconds kLastLogRetry{2'000};
// One log entry holds at most this many chunks, or about this many bytes.
constexpr std::size_t kMaxLogEntryChunks = 64;
constexpr std::size_t kMaxLogEntryBytes = 64 * 1024;
// A provider's text goes out in chunks of at most this many bytes (cut between
// characters): one event of a megabyte would be more than a NATS message may
// hold, and would be refused by the bus and the log alike.
constexpr std::size_t kMaxChunkTextBytes = 16 * 1024;
// The model name a provider reports, at most.
constexpr std::size_t kMaxModelBytes = 256;

}  // namespace

GenerationRun::GenerationRun(asio::any_io_executor ex, WorkflowWorker& worker, protocol::WorkflowRequest request,
                             std::string model, std::unique_ptr<bus::WorkItem> item, std::string provider)
    : strand_(asio::make_strand(ex)),
      worker_(worker),
      request_(std::move(request)),
      model_(std::move(model)),
      attempt_(item ? item->attempt() : 1),
      item_(std::move(item)),
      accepting_subject_(request_.accepting_pod.empty() ? std::string() : subjects::pod_response(request_.accepting_pod)),
      provider_(std::move(provider)) {
  worker_.provider_metrics_.requests.at({provider_}).add();
  if (!worker_.tracer_.enabled()) return;
  trace::SpanContext parent;
  if (item_)
    if (auto p = trace::parse_traceparent(item_->header("traceparent"), item_->header("tracestate"))) parent = *p;
  generation_span_ = worker_.tracer_.start("chat.generate", trace::SpanKind::consumer, parent);
  generation_span_.set("chat.message_id", request_.message_id);
  generation_span_.set("chat.session_id", request_.session_id);
  generation_span_.set("chat.provider", provider_);
  generation_span_.set("chat.attempt", static_cast<std::int64_t>(attempt_));
}

void GenerationRun::start(providers::Provider& provider) {
  providers::TraceHeaders trace_headers;
  if (generation_span_.context().valid()) {
    provider_span_ = worker_.tracer_.start("provider " + provider_, trace::SpanKind::client, generation_span_.context());
    provider_span_.set("gen_ai.system", provider_);
    provider_span_.set("gen_ai.request.model", model_);
    trace_headers = provider_span_.context().headers();
  }
  auto generation = provider.start(request_, model_, shared_from_this(), std::move(trace_headers));
  std::lock_guard lock(generation_mutex_);
  generation_ = std::move(generation);
  if (cancel_requested_) generation_->cancel();
}

void GenerationRun::cancel() {
  std::lock_guard lock(generation_mutex_);
  cancel_requested_ = true;
  if (generation_) generation_->cancel();
}

void GenerationRun::end_cancelled() {
  providers::Finish finish;
  finish.finish_reason = "cancelled";
  on_finish(finish);
}

void GenerationRun::keep_alive() {
  asio::post(strand_, [self = shared_from_this()] {
    if (self->item_) self->item_->in_progress();
  });
}

void GenerationRun::take_newer_delivery(std::unique_ptr<bus::WorkItem> item) {
  asio::post(strand_, [self = shared_from_this(), item = std::move(item)]() mutable {
    if (!self->item_) return item->ack();  // done meanwhile: the reply is out
    self->item_ = std::move(item);
    self->item_->in_progress();
  });
}

// The provider's calls are dispatched, not posted: a provider running on the
// worker's own threads (the demo, an HTTP stream's read) hands its chunk on
// without waking another thread for it, which at chat rates was a good part of
// the worker's CPU. Elsewhere dispatch posts, as before.
void GenerationRun::on_text(std::string_view text) {
  auto clean = without_nul(std::string(text));
  if (clean.empty()) return;
  asio::dispatch(strand_, [self = shared_from_this(), text = std::move(clean)]() mutable {
    if (!std::exchange(self->first_text_seen_, true))
      self->worker_.provider_metrics_.first_token.at({self->provider_}).observe(
          std::chrono::duration<double>(std::chrono::steady_clock::now() - self->started_).count());
    if (text.size() <= kMaxChunkTextBytes) return self->emit_content(std::move(text));
    for (std::string_view rest = text; !rest.empty();) {
      auto piece = utf8_byte_prefix(rest, kMaxChunkTextBytes);
      if (piece.empty()) piece = rest;  // not UTF-8 after all: whole
      self->emit_content(std::string(piece));
      rest.remove_prefix(piece.size());
    }
  });
}

void GenerationRun::on_finish(const providers::Finish& finish) {
  asio::dispatch(strand_, [self = shared_from_this(), finish] {
    // A provider that reports no usage: the content chunks sent stand in for it,
    // as they do in the pod's own count. The contract's final chunk has one.
    self->reported_tokens_ = finish.tokens_used;
    auto tokens = finish.tokens_used.value_or(self->next_chunk_id_);
    auto& c = self->emit_final(protocol::ChunkType::metadata);
    auto model = finish.model.empty() ? self->model_ : without_nul(finish.model);
    c.metadata = protocol::ChunkMetadata{std::string(utf8_byte_prefix(model, kMaxModelBytes)), tokens,
                                         finish.finish_reason};
    self->pump();
  });
}

void GenerationRun::on_error(std::string_view code, std::string_view message) {
  asio::dispatch(strand_, [self = shared_from_this(), code = without_nul(std::string(code)),
                            message = without_nul(std::string(message))] {
    log::warn("generation_failed", {{"message_id", self->request_.message_id}, {"code", code},
                                    {"attempt", self->attempt_}, {"correlation_id", self->request_.correlation_id}});
    std::int64_t tokens = self->next_chunk_id_;
    auto& c = self->emit_final(protocol::ChunkType::error);
    c.metadata = protocol::ChunkMetadata{self->model_, tokens, "error"};
    c.error = protocol::ChunkError{code, message};
    self->pump();
  });
}

// A content chunk goes out at once (the outbox may be empty right after).
void GenerationRun::emit_content(std::string text) {
  outbox_.push_back(next_chunk(protocol::ChunkType::content, std::move(text), false));
  pump();
}

// The final chunk waits in the outbox for its metadata; the caller pumps.
protocol::ResponseChunk& GenerationRun::emit_final(protocol::ChunkType type) {
  outbox_.push_back(next_chunk(type, {}, true));
  return outbox_.back();
}

protocol::ResponseChunk GenerationRun::next_chunk(protocol::ChunkType type, std::string text, bool is_final) {
  protocol::ResponseChunk c;
  c.session_id = request_.session_id;
  c.message_id = request_.message_id;
  c.chunk_id = next_chunk_id_++;
  c.attempt = attempt_;
  c.chunk = std::move(text);
  c.chunk_type = type;
  c.is_final = is_final;
  c.timestamp = rfc3339_now();
  c.correlation_id = request_.correlation_id;
  return c;
}

// Publishes the outbox in chunk order: a cached route goes out at once; a
// registry look-up holds the queue until it answers.
void GenerationRun::pump() {
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

void GenerationRun::publish_front(const ChunkRouter::Subjects& targets) {
  if (outbox_.empty()) return;
  const auto& chunk = outbox_.front();
  auto payload = protocol::encode(chunk);
  const bool final = chunk.is_final;
  if (final) record_end(chunk);
  const bool broadcast = targets.size() == 1 && targets.front() == subjects::broadcast(request_.session_id);
  // The accepting pod stores the reply, so it gets every chunk, also while
  // the route names only the pods that hold streams (a broadcast reaches it).
  if (!broadcast && !accepting_subject_.empty() &&
      std::find(targets.begin(), targets.end(), accepting_subject_) == targets.end())
    worker_.bus_.publish(accepting_subject_, payload);
  for (const auto& target : targets) worker_.bus_.publish(target, payload);
  if (worker_.log_) {
    // Off the live path: pods read the log only to fill gaps and to resume.
    queue_for_log(chunk.chunk_id, std::move(payload), final);
  } else {
    worker_.replay_log_.record(request_.session_id, request_.message_id, std::move(payload), broadcast);
    if (final) {
      worker_.replay_log_.finish(request_.session_id, request_.message_id);
      done();
    }
  }
  outbox_.pop_front();
}

void GenerationRun::record_end(const protocol::ResponseChunk& final) {
  // The provider's own count only: the chunk count that stands in for it on the
  // wire is no usage figure.
  if (reported_tokens_) provider_span_.set("gen_ai.usage.output_tokens", *reported_tokens_);
  if (final.metadata) generation_span_.set("chat.finish_reason", final.metadata->finish_reason);
  if (final.error) {
    provider_span_.fail(final.error->code);
    generation_span_.fail(final.error->code);
  }
  provider_span_.end();
  generation_span_.end();
  auto& m = worker_.provider_metrics_;
  m.generation.at({provider_}).observe(std::chrono::duration<double>(std::chrono::steady_clock::now() - started_).count());
  if (reported_tokens_) m.tokens.at({provider_}).add(static_cast<std::uint64_t>(std::max<std::int64_t>(0, *reported_tokens_)));
  if (final.error) m.errors.at({provider_, final.error->code}).add();
}

// One append in flight per reply: the chunks the provider produces meanwhile
// go into the log together when it returns, so a fast reply costs the log (and
// nats-server) one stored entry per round trip instead of one per chunk; a
// slow one still logs each chunk as it comes.
void GenerationRun::queue_for_log(std::uint32_t chunk_id, std::string payload, bool final) {
  const bool back_is_open = !unlogged_.empty() && !(log_in_flight_ && unlogged_.size() == 1) &&
                            unlogged_.back().payloads.size() < kMaxLogEntryChunks &&
                            unlogged_.back().bytes < kMaxLogEntryBytes;
  if (!back_is_open) unlogged_.push_back(LogEntry{chunk_id, chunk_id, {}, 0, false});
  auto& entry = unlogged_.back();
  entry.last_chunk = chunk_id;
  entry.bytes += payload.size();
  entry.payloads.push_back(std::move(payload));
  entry.final = final;
  if (!log_in_flight_) append_front_to_log(kFirstLogRetry);
}

std::string GenerationRun::log_entry_id(const LogEntry& e) const {
  return request_.message_id + ":" + std::to_string(attempt_) + ":" + std::to_string(e.first_chunk) + "-" +
         std::to_string(e.last_chunk);
}

// An entry the log did not take (the bus is down, or the server did not
// answer) is appended again, under the same entry id, until it is stored: the
// log is what pods fill gaps and resume streams from, so a chunk that missed
// the live path must not be missing there too. The request is acked once every
// chunk of the attempt is in the log.
void GenerationRun::append_front_to_log(std::chrono::milliseconds retry) {
  log_in_flight_ = true;
  const auto& entry = unlogged_.front();
  worker_.log_->append(request_.session_id, request_.message_id, log_entry_id(entry), entry.payloads,
                       [self = shared_from_this(), retry](boost::system::error_code ec) {
                         asio::post(self->strand_, [self, retry, ec] { self->on_logged(retry, ec); });
                       });
}

void GenerationRun::on_logged(std::chrono::milliseconds retry, boost::system::error_code ec) {
  if (ec) {
    const auto now = std::chrono::steady_clock::now();
    if (!log_failing_) {
      log::warn("chunk_not_logged", {{"message_id", request_.message_id}, {"entry", log_entry_id(unlogged_.front())},
                                     {"error", ec.message()}, {"retrying", true}});
      log_failing_ = true;
      log_failing_since_ = now;
    }
    // The clock runs from the first failure until an append succeeds: once
    // the log has refused this long, the entries after it go at once too.
    if (now - log_failing_since_ < worker_.config_.log_give_up) {
      auto timer = std::make_shared<asio::steady_timer>(strand_, retry);
      timer->async_wait([self = shared_from_this(), timer, retry](boost::system::error_code) {
        self->append_front_to_log(std::min(retry * 2, kLastLogRetry));
      });
      return;
    }
    // The pods have the live chunks; a gap in the log costs a resume or a gap
    // fill those chunks, which is less than a slot and a request held for good.
    if (!std::exchange(log_abandoned_, true))
      log::error("chunk_log_abandoned", {{"message_id", request_.message_id}, {"entry", log_entry_id(unlogged_.front())},
                                         {"error", ec.message()}});
  } else if (log_failing_) {
    log::info("chunk_logged", {{"message_id", request_.message_id}, {"entry", log_entry_id(unlogged_.front())},
                               {"after_retries", true}});
    log_failing_ = false;
  }
  const bool final = unlogged_.front().final;
  unlogged_.pop_front();
  log_in_flight_ = false;
  if (!unlogged_.empty()) return append_front_to_log(kFirstLogRetry);
  if (final) done();
}

// The final chunk is out and every chunk is in the log: the request is done with.
void GenerationRun::done() {
  if (item_) item_->ack();
  item_.reset();
  worker_.finished(request_.message_id);
}

}  // namespace chat::worker
