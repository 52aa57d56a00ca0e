#include "protocol/subjects.hpp"

namespace chat::subjects {

std::string execute(std::string_view session_id) { return "chat.workflow.execute." + std::string(session_id); }
std::string pod_response(std::string_view pod_id) { return "chat.pod." + std::string(pod_id) + ".response"; }
std::string pod_health(std::string_view pod_id) { return "chat.pod." + std::string(pod_id) + ".health"; }
std::string broadcast(std::string_view session_id) { return "chat.session." + std::string(session_id) + ".broadcast"; }
std::string cancel(std::string_view message_id) { return "chat.workflow.cancel." + std::string(message_id); }
std::string replay(std::string_view session_id) { return "chat.session." + std::string(session_id) + ".replay"; }

bool matches(std::string_view pattern, std::string_view subject) {
  while (true) {
    auto pdot = pattern.find('.');
    auto sdot = subject.find('.');
    auto ptok = pattern.substr(0, pdot);
    auto stok = subject.substr(0, sdot);
    if (ptok == ">") return !subject.empty();
    if (stok.empty() || (ptok != "*" && ptok != stok)) return false;
    if (pdot == std::string_view::npos || sdot == std::string_view::npos)
      return pdot == std::string_view::npos && sdot == std::string_view::npos;
    pattern.remove_prefix(pdot + 1);
    subject.remove_prefix(sdot + 1);
  }
}

}  // namespace chat::subjects
