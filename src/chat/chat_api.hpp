#pragma once
// The HTTP API of SPEC section 3: routing, input checks, and the hand-off to the
// store, the bus and the session hub. It never knows which implementation of the
// bus, registry or store it has.

#include <atomic>
#include <chrono>
#include <memory>
#include <string>

#include "bus/message_bus.hpp"
#include "chat/chat_request.hpp"
#include "chat/pod.hpp"
#include "config/config.hpp"
#include "http/http_session.hpp"
#include "registry/session_registry.hpp"
#include "store/message_store.hpp"

namespace chat {

class ChatApi final : public http::RequestHandler {
 public:
  ChatApi(const config::Config& config, Pod& pod, bus::MessageBus& bus, registry::SessionRegistry& registry,
          store::MessageStore& store);

  void handle(http::Request request, std::shared_ptr<http::HttpSession> session) override;
  void decorate(http::Response& response) override;

  // SIGTERM: /health says draining, /ready fails, new chats and streams get 503.
  void start_draining() { draining_ = true; }
  std::string health_json() const;

 private:
  struct Call;  // one request being answered
  void route(std::shared_ptr<Call> call);
  void post_chat(std::shared_ptr<Call> call);
  void open_stream(std::shared_ptr<Call> call);
  void cancel_reply(std::shared_ptr<Call> call, std::string message_id);
  void list_sessions(std::shared_ptr<Call> call);
  void list_messages(std::shared_ptr<Call> call, std::string session_id);
  void delete_session(std::shared_ptr<Call> call, std::string session_id);
  void publish_request(std::shared_ptr<Call> call, ChatRequest request, std::string user_message_id,
                       std::vector<protocol::HistoryEntry> history);
  http::Response health_response() const;
  http::Response ready_response() const;
  http::Response info_response() const;
  std::string cors_origin(std::string_view request_origin) const;
  bool dependencies_up() const;

  const config::Config& config_;
  Pod& pod_;
  bus::MessageBus& bus_;
  registry::SessionRegistry& registry_;
  store::MessageStore& store_;
  ChatLimits chat_limits_;
  std::atomic<bool> draining_{false};
  std::chrono::steady_clock::time_point started_ = std::chrono::steady_clock::now();
};

}  // namespace chat
