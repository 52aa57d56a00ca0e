#pragma once
// NATS subjects of docs/API.md#nats. Callers pass validated identifiers only.

#include <string>
#include <string_view>

namespace chat::subjects {

inline constexpr std::string_view kWorkerQueueGroup = "workflow-workers";
inline constexpr std::string_view kAllExecute = "chat.workflow.execute.*";
inline constexpr std::string_view kAllBroadcast = "chat.session.*.broadcast";
inline constexpr std::string_view kAllCancel = "chat.workflow.cancel.*";
inline constexpr std::string_view kAllReplay = "chat.session.*.replay";
inline constexpr std::string_view kAllSessionDeleted = "chat.session.*.deleted";

std::string execute(std::string_view session_id);
std::string pod_response(std::string_view pod_id);
std::string pod_health(std::string_view pod_id);
std::string broadcast(std::string_view session_id);
std::string cancel(std::string_view message_id);
// A pod asks the workers to send a session's replies again (late join, gaps).
std::string replay(std::string_view session_id);
// A pod tells the other pods that a session was deleted: they end its streams.
std::string session_deleted(std::string_view session_id);

}  // namespace chat::subjects
