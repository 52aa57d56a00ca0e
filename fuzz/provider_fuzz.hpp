#pragma once
// A provider's reply body through the event-stream parser and one wire
// protocol's decoder, as StreamGeneration feeds them: never a crash, token
// counts never negative, failures always with a code and a message.
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "http_client/event_stream_parser.hpp"
#include "providers/wire_protocol.hpp"

inline void decode_body(chat::providers::StreamDecoder& decoder, std::string_view body) {
  chat::http_client::EventStreamParser parser(64 * 1024);
  std::vector<chat::http_client::StreamEvent> events;
  bool ok = parser.feed(body, events);
  if (ok) parser.finish(events);
  std::string text;
  std::optional<chat::providers::StreamEnd> end;
  for (const auto& e : events) {
    end = decoder.on_event(e, text);
    if (end) break;
  }
  if (!end) end = decoder.on_body_end();
  if (end->failure && (end->failure->code.empty() || end->failure->message.empty())) std::abort();
  if (!end->failure && end->finish_reason != "stop" && end->finish_reason != "length") std::abort();
  if (auto n = decoder.tokens_used(); n && *n < 0) std::abort();
}
