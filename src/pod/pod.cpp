#include "pod/pod.hpp"

#include <sys/socket.h>

#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/json.hpp>

#include <random>
#include <string>

#include "common/countdown.hpp"
#include "common/deadline.hpp"
#include "common/identifier.hpp"
#include "common/time.hpp"
#include "log/log.hpp"
#include "protocol/subjects.hpp"

namespace json = boost::json;

namespace chat::pod {

namespace {

PodOptions with_log(PodOptions o, const bus::ChunkLog* log) {
  o.hub.log_catch_up = log != nullptr;
  return o;
}

}  // namespace

Pod::Pod(boost::asio::io_context& ioc, PodOptions options, bus::MessageBus& bus, bus::WorkQueue& work,
         bus::ChunkLog* log, registry::SessionRegistry& registry, store::MessageStore& store,
         limits::Admission* admission)
    : ioc_(ioc),
      options_(with_log(std::move(options), log)),
      bus_(bus),
      work_(work),
      log_(log),
      registry_(registry),
      store_(store),
      admission_(admission),
      hub_(ioc, options_.hub,
           hub::ShardHandlers{[this](buffer::FinishedMessage m) { store_reply(std::move(m)); },
                              [this](const std::string& session_id, const std::string& message_id) {
                                request_replay(session_id, message_id);
                              },
                              [this](const std::string& session_id, const std::string& stream_id,
                                     const sse::ResumeCursor& cursor) { catch_up(session_id, stream_id, cursor); },
                              [this] { return bus_.status().reconnects; }}),
      traces_(options_.tracer, 3 * options_.hub.buffer.max_age) {}

Pod::~Pod() { gate_.close(); }

void Pod::submit(ChatRequest request, std::string correlation_id, SubmitCallback done) {
  if (!chats_.enter()) return done(Errc::draining, {});
  done = [this, done = std::move(done)](boost::system::error_code ec, Accepted accepted) {
    done(ec, std::move(accepted));
    chats_.leave();
  };
  // Nothing half-done: with the bus down, not even the user message is stored.
  if (!work_.status().connected) return done(Errc::bus_unavailable, {});
  if (no_room_for_reply(request.session_id)) return done(Errc::memory_full, {});
  auto reply_id = new_identifier("msg_");
  if (!admission_) return accept(std::move(request), std::move(correlation_id), std::move(reply_id), std::move(done));
  auto user_id = request.user_id;
  admission_->reply_starts(user_id, reply_id,
                           [this, request = std::move(request), correlation_id = std::move(correlation_id), reply_id,
                            done = std::move(done)](limits::Verdict v) mutable {
                             if (!v.allowed) return done(Errc::too_many_replies, {});
                             accept(std::move(request), std::move(correlation_id), std::move(reply_id), std::move(done));
                           });
}

// Past the budget, or with the session's shard holding as many replies
// accepted here as it may hold buffers, new chats wait (503): the replies
// already accepted must still fit, and every chunk of theirs is kept (a new
// buffer past the shard's bound evicts one; other pods' replies go first).
bool Pod::no_room_for_reply(const std::string& session_id) {
  const bool no_room = reply_memory_full() || !hub_.has_room_for_reply(session_id);
  if (no_room) stats_.memory_full_refusals.add();
  return no_room;
}

bool Pod::reply_memory_full() {
  const auto budget = options_.hub.reply_memory_budget;
  if (budget == 0) return false;
  const auto bytes = hub_.stats().reply_bytes;
  const bool full = bytes >= budget;
  if (memory_full_.exchange(full) != full) {
    if (full) log::warn("reply_memory_full", {{"bytes", bytes}, {"budget", budget}});
    else log::info("reply_memory_available", {{"bytes", bytes}, {"budget", budget}});
  }
  return full;
}

void Pod::accept(ChatRequest request, std::string correlation_id, std::string reply_id, SubmitCallback done) {
  store::NewUserMessage user{request.session_id, request.user_id, new_identifier("msg_"), request.message,
                             request.ai_provider.empty() ? options_.default_provider : request.ai_provider,
                             request.model, std::chrono::system_clock::now()};
  auto user_message_id = user.message_id;
  trace::SharedSpan span(traces_.tracer().start("chat.store_user_message", trace::SpanKind::client, request.trace));
  const auto asked_at = std::chrono::steady_clock::now();
  // Answered on a store thread; the store outlives the pod (a slow database
  // may answer after the pod went at shutdown).
  store_.accept_user_message(
      std::move(user), options_.history_turns,
      gate_.guard([this, request = std::move(request), correlation_id = std::move(correlation_id), user_message_id,
                   reply_id = std::move(reply_id), done = std::move(done), span,
                   asked_at](boost::system::error_code ec, std::vector<protocol::HistoryEntry> history) mutable {
        span.end(ec ? ec.message() : std::string());
        if (ec) {
          log::warn("chat_not_accepted", {{"session_id", request.session_id}, {"error", ec.message()},
                                          {"correlation_id", correlation_id}});
          if (admission_) admission_->reply_ended(reply_id);
          return done(ec, {});
        }
        if (chats_.given_up()) {
          // The drain waits no more: nobody here would hear the reply.
          log::warn("chat_refused_by_shutdown", {{"session_id", request.session_id}, {"correlation_id", correlation_id}});
          take_back(reply_id, user_message_id);
          return done(Errc::draining, {});
        }
        if (!expect_unless_ended(request.session_id, reply_id, request.user_id, asked_at)) {
          // Deleted while its store call ran: the message went with the session,
          // or made it again; either way no reply is generated for it.
          log::info("chat_refused", {{"session_id", request.session_id}, {"reason", "session_deleted"},
                                     {"correlation_id", correlation_id}});
          take_back(reply_id, user_message_id);
          return done(store::Errc::not_found, {});
        }
        publish_request(std::move(request), std::move(correlation_id), std::move(user_message_id),
                        std::move(reply_id), std::move(history), std::move(done));
      }));
}

void Pod::publish_request(ChatRequest request, std::string correlation_id, std::string user_message_id,
                          std::string reply_id, std::vector<protocol::HistoryEntry> history, SubmitCallback done) {
  protocol::WorkflowRequest work;
  work.message_id = std::move(reply_id);
  work.session_id = std::move(request.session_id);
  work.user_id = std::move(request.user_id);
  work.message = std::move(request.message);
  work.context.ai_provider = std::move(request.ai_provider);
  work.context.model = std::move(request.model);
  work.context.temperature = request.temperature;
  work.context.max_tokens = request.max_tokens;
  work.context.system_prompt = std::move(request.system_prompt);
  // A NUL in text stored before every decoder refused it (SQLite keeps one)
  // would make the workers refuse the request: it goes.
  for (auto& turn : history) std::erase(turn.content, '\0');
  work.context.conversation_history = std::move(history);
  work.timestamp = rfc3339_now();
  work.correlation_id = std::move(correlation_id);
  work.accepting_pod = options_.pod_id;
  Accepted accepted{work.message_id, work.session_id, work.timestamp, work.correlation_id};
  traces_.accepted(work.message_id, request.trace);
  // The worker's spans are children of this one: its context rides in the
  // request's headers.
  auto span = traces_.tracer().start("chat.publish_request", trace::SpanKind::producer, request.trace);
  span.set("chat.message_id", work.message_id);
  span.set("messaging.system", "nats");
  auto subject = subjects::execute(work.session_id);
  span.set("messaging.destination.name", subject);
  auto headers = span.context().headers();
  trace::SharedSpan publishing(std::move(span));
  auto payload = protocol::encode(work);
  auto message_id = work.message_id;
  // Answered on the bus thread, which outlives the pod: seconds later (a
  // stalled server: 10 s), maybe after the pod went at shutdown.
  work_.submit(std::move(subject), std::move(payload), std::move(message_id), std::move(headers),
               gate_.guard([this, accepted = std::move(accepted), user_message_id = std::move(user_message_id),
                            done = std::move(done), publishing](boost::system::error_code ec) {
                 publishing.end(ec ? ec.message() : std::string());
                 if (!ec) {
                   log::info("chat_accepted", {{"message_id", accepted.message_id}, {"session_id", accepted.session_id},
                                               {"correlation_id", accepted.correlation_id}});
                   return done({}, accepted);
                 }
                 log::warn("chat_publish_failed", {{"error", ec.message()}, {"correlation_id", accepted.correlation_id}});
                 stats_.submits_refused.add();
                 // The server may have stored it all the same (its acknowledgement
                 // lost): refused here, it must not run later.
                 work_.withdraw(subjects::execute(accepted.session_id), accepted.message_id);
                 hub_.forget(accepted.session_id, accepted.message_id);
                 traces_.forget(accepted.message_id);
                 take_back(accepted.message_id, user_message_id);
                 done(Errc::bus_unavailable, {});
               }));
}

// A chat refused after its user message was stored: its reply's place goes
// back, and the message goes again, so the history holds no question that was
// never answered.
void Pod::take_back(const std::string& reply_id, const std::string& message_id) {
  if (admission_) admission_->reply_ended(reply_id);
  store_.discard_message(message_id, [message_id](boost::system::error_code ec) {
    if (ec && ec != store::Errc::not_found)
      log::warn("user_message_not_discarded", {{"message_id", message_id}, {"error", ec.message()}});
  });
}

void Pod::cancel(std::string message_id, std::string session_id, std::string user_id, DoneCallback done) {
  if (!bus_.connected()) return done(Errc::bus_unavailable);
  protocol::CancelRequest cancel{message_id, std::move(session_id), std::move(user_id)};
  // The worker running the reply answers; silence means no such reply is running.
  const auto silence_ends = std::chrono::steady_clock::now() + options_.cancel_timeout;
  bus_.request(subjects::cancel(message_id), protocol::encode(cancel), options_.cancel_timeout,
               [executor = ioc_.get_executor(), message_id, silence_ends, done = std::move(done)](
                   boost::system::error_code ec, std::string reply) mutable {
                 if (ec) return done(Errc::no_running_reply);
                 boost::system::error_code parse_ec;
                 auto v = json::parse(reply, parse_ec);
                 auto* status = !parse_ec && v.is_object() ? v.get_object().if_contains("status") : nullptr;
                 if (status && status->is_string() && status->get_string() == "forbidden") {
                   // Answered when silence would have been, so the caller cannot tell
                   // another user's running reply from one that does not exist.
                   auto timer = std::make_shared<boost::asio::steady_timer>(executor, silence_ends);
                   return timer->async_wait([timer, done = std::move(done)](boost::system::error_code) {
                     done(Errc::not_owner);
                   });
                 }
                 log::info("cancel_requested", {{"message_id", message_id}});
                 done({});
               });
}

bool Pod::open_stream(boost::asio::ip::tcp::socket socket, StreamRequest request) {
  if (draining_) {
    // A few hundred bytes into a fresh socket's empty buffer: taken at once, or
    // the client is gone.
    const auto answer = sse::unavailable_answer(request.cors_origin);
    [[maybe_unused]] auto sent =
        ::send(socket.native_handle(), answer.data(), answer.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
    boost::system::error_code ignored;
    socket.shutdown(boost::asio::ip::tcp::socket::shutdown_send, ignored);
    socket.close(ignored);
    log::info("sse_refused", {{"session_id", request.session_id}, {"reason", "draining"},
                              {"correlation_id", request.correlation_id}});
    return false;
  }
  auto stream =
      std::make_shared<sse::SseConnection>(std::move(socket), CompactId::random(), request.session_id, stream_context_);
  const auto stream_id = stream->id();
  // Registered before it can close, so the registry sees add, then remove.
  registry_.add({request.session_id, options_.pod_id, stream_id});
  std::vector<sse::Frame> first{sse::connected_frame(stream_id, request.session_id, options_.pod_id),
                                sse::retry_frame(options_.stream_retry)};
  // The stream's tickets (streams per user, connections per address) are its lease: released when it ends.
  stream->start(sse::stream_head(request.cors_origin), std::move(first), std::move(request.ticket));
  log::info("sse_connected", {{"connection_id", stream_id}, {"session_id", request.session_id},
                              {"resume", request.cursor.has_value()}, {"correlation_id", request.correlation_id}});
  hub_.attach(std::move(stream), std::move(request.cursor), request.owner_checked_at);
  return true;
}

void Pod::on_stream_closed(const std::shared_ptr<sse::SseConnection>& stream, std::string_view reason) {
  hub_.detach(stream);
  const auto stream_id = stream->id();
  registry_.remove({std::string(stream->session_id()), options_.pod_id, stream_id});
  log::info("sse_disconnected", {{"connection_id", stream_id}, {"session_id", stream->session_id()}, {"reason", reason}});
}

void Pod::end_session(const std::string& session_id, const std::string& user_id) {
  end_session_here(session_id, user_id);
  // The id is free again, for any user: a stream of it left open on another
  // pod would receive the next owner's replies.
  bus_.publish(subjects::session_deleted(session_id),
               protocol::encode(protocol::SessionDeleted{session_id, user_id, options_.pod_id}));
}

// The reply's chunks are kept here from now on, even with no stream open yet
// (late join, and the reply must be stored when nobody watches); unless its
// session ended since the chat came, in the lock end_session_here() takes, so
// the shard sees the two in the order they were decided.
bool Pod::expect_unless_ended(const std::string& session_id, const std::string& message_id,
                              const std::string& user_id, std::chrono::steady_clock::time_point asked_at) {
  std::lock_guard lock(ended_mutex_);
  if (const auto* ended = ended_sessions_.find(session_id); ended && ended->at >= asked_at) return false;
  hub_.expect(session_id, message_id, user_id);
  return true;
}

void Pod::end_session_here(const std::string& session_id, const std::string& user_id) {
  std::lock_guard lock(ended_mutex_);
  ended_sessions_.remember(session_id, user_id, session_id);
  hub_.end_session(session_id, [this, session_id, user_id](std::vector<std::string> running) {
    for (const auto& message_id : running) {
      bus_.publish(subjects::cancel(message_id), protocol::encode(protocol::CancelRequest{message_id, session_id, user_id}));
      // One still queued would run later for a session that is gone.
      work_.withdraw(subjects::execute(session_id), message_id);
      // Nothing of it is stored, so store_reply never frees these.
      if (admission_) admission_->reply_ended(message_id);
      traces_.forget(message_id);
    }
  });
}

PodHealth Pod::health() const {
  return PodHealth{options_.pod_id,
                   draining_.load(),
                   hub_.stats(),
                   bus_.status(),
                   work_.status(),
                   registry_.status(),
                   store_.status(),
                   std::chrono::duration_cast<std::chrono::seconds>(std::chrono::steady_clock::now() - started_)};
}

// A retry hint spread over the hand-off window, so the streams of a pod do not
// all come back to the other pods in the same instant.
sse::Frame Pod::hand_off_frame() const {
  thread_local std::mt19937 random{std::random_device{}()};
  auto spread = std::max<std::int64_t>(1, options_.hand_off_spread.count());
  std::uniform_int_distribution<std::int64_t> pick(250, 250 + spread);
  return sse::retry_frame(std::chrono::milliseconds{pick(random)});
}

void Pod::drain(std::function<void()> done) {
  draining_ = true;
  auto deadline = std::chrono::steady_clock::now() + options_.shutdown_timeout;
  if (options_.hand_off_streams) {
    log::info("streams_handed_off", {{"streams", hub_.stats().streams}});
    hub_.close_all([this] { return hand_off_frame(); }, [] {});
  }
  with_deadline(
      ioc_.get_executor(), deadline,
      [this](std::function<void()> settled) {
        // Chats let in before the drain began come first: their replies are owed too.
        chats_.close([this, settled = std::move(settled)]() mutable { hub_.when_settled(std::move(settled)); });
      },
      [this, deadline, done = std::move(done)](bool settled) mutable {
        chats_.give_up();
        if (settled) return finish_drain(deadline, std::move(done));
        log::warn("shutdown_timeout", {{"active_buffers", hub_.stats().buffers}});
        if (!options_.replies_end_with_pod) return finish_drain(deadline, std::move(done));
        hub_.finish_accepted(hub::kShutdown, [this, deadline, done = std::move(done)](std::size_t cut) mutable {
          if (cut > 0) log::warn("replies_cut_by_shutdown", {{"replies", cut}});
          boost::asio::post(ioc_, [this, deadline, done = std::move(done)]() mutable { finish_drain(deadline, std::move(done)); });
        });
      });
}

void Pod::finish_drain(std::chrono::steady_clock::time_point deadline, std::function<void()> done) {
  stop_intake();
  // The registry and the store may be down: they get the rest of the shutdown
  // time (at least a moment), not forever.
  auto tidy_deadline = std::max(deadline, std::chrono::steady_clock::now() + std::chrono::seconds{2});
  with_deadline(
      ioc_.get_executor(), tidy_deadline,
      [this](std::function<void()> tidied) {
        auto arrive = make_countdown(2, std::move(tidied));
        registry_.remove_pod(options_.pod_id, [arrive](boost::system::error_code) { arrive(); });
        store_.flush([arrive](boost::system::error_code) { arrive(); });
      },
      [this, done = std::move(done)](bool tidied) mutable {
        if (!tidied) log::warn("shutdown_incomplete", {{"registry_connected", registry_.connected()},
                                                       {"store_connected", store_.connected()}});
        // Give the last frames a moment to reach the clients.
        with_deadline(
            ioc_.get_executor(), std::chrono::steady_clock::now() + std::chrono::seconds{2},
            [this](std::function<void()> closed) {
              hub_.close_all([this] { return sse::retry_frame(options_.stream_retry); }, std::move(closed));
            },
            [this, done = std::move(done)](bool) {
              hub_.stop();
              done();
            });
      });
}

}  // namespace chat::pod
