#include "hub/logged_reply.hpp"

#include <algorithm>
#include <map>
#include <tuple>

namespace chat::hub {

std::vector<LoggedReply> group_logged_replies(std::vector<protocol::ResponseChunk> chunks) {
  std::vector<std::string> order;  // message ids in the order they started
  std::map<std::string, std::map<std::uint32_t, std::vector<protocol::ResponseChunk>>> by_attempt;
  std::map<std::string, std::pair<std::size_t, std::size_t>> span;  // first and last entry
  for (std::size_t i = 0; i < chunks.size(); ++i) {
    auto& c = chunks[i];
    auto& attempts = by_attempt[c.message_id];
    if (attempts.empty()) {
      order.push_back(c.message_id);
      span[c.message_id].first = i;
    }
    span[c.message_id].second = i;
    attempts[c.attempt].push_back(std::move(c));
  }
  std::vector<LoggedReply> out;
  for (const auto& id : order) {
    auto& attempts = by_attempt[id];
    auto has_final = [](const auto& kv) {
      return std::any_of(kv.second.begin(), kv.second.end(), [](const auto& c) { return c.is_final; });
    };
    auto chosen = std::find_if(attempts.begin(), attempts.end(), has_final);
    bool finished = chosen != attempts.end();
    if (!finished) chosen = std::prev(attempts.end());
    auto& list = chosen->second;
    std::stable_sort(list.begin(), list.end(), [](const auto& a, const auto& b) { return a.chunk_id < b.chunk_id; });
    list.erase(std::unique(list.begin(), list.end(), [](const auto& a, const auto& b) { return a.chunk_id == b.chunk_id; }),
               list.end());
    LoggedReply r;
    r.session_id = list.front().session_id;
    r.message_id = id;
    r.attempt = chosen->first;
    r.finished = finished;
    r.had_attempts = attempts.size() > 1;
    r.chunks = std::move(list);
    std::tie(r.first_entry, r.last_entry) = span[id];
    out.push_back(std::move(r));
  }
  return out;
}

buffer::FinishedMessage LoggedReply::to_finished() const {
  // The reorder buffer already knows how a complete chunk sequence is stored.
  buffer::BufferManager one(buffer::Limits{1, chunks.size() + 1, std::chrono::hours(1), std::chrono::hours(1)});
  std::vector<buffer::Event> events;
  auto now = std::chrono::steady_clock::now();
  for (const auto& c : chunks) one.push(c, now, events);
  for (auto& e : events)
    if (auto* done = std::get_if<buffer::MessageFinished>(&e)) return std::move(done->message);
  buffer::FinishedMessage m;  // the log lost a chunk: not a finished reply after all
  m.session_id = session_id;
  m.message_id = message_id;
  m.status = buffer::MessageStatus::incomplete;
  m.error_code = "chunks_missing";
  return m;
}

}  // namespace chat::hub
