#include "protocol/subjects.hpp"

namespace chat::subjects {

std::string execute(std::string_view session_id) { return "chat.workflow.execute." + std::string(session_id); }
std::string pod_response(std::string_view pod_id) { return "chat.pod." + std::string(pod_id) + ".response"; }
std::string pod_health(std::string_view pod_id) { return "chat.pod." + std::string(pod_id) + ".health"; }
std::string broadcast(std::string_view session_id) { return "chat.session." + std::string(session_id) + ".broadcast"; }
std::string cancel(std::string_view message_id) { return "chat.workflow.cancel." + std::string(message_id); }
std::string replay(std::string_view session_id) { return "chat.session." + std::string(session_id) + ".replay"; }
std::string session_deleted(std::string_view session_id) {
  return "chat.session." + std::string(session_id) + ".deleted";
}

}  // namespace chat::subjects
