#pragma once
// The chunk log on JetStream: a limits-retention stream over chat.log.> (age
// and size from JS_LOG_MAX_AGE, JS_LOG_MAX_BYTES), one subject per reply,
// chat.log.{session}.{message}, each entry stored once by its Nats-Msg-Id, its
// payloads one per line.
// Appends are acknowledged publishes off the live path (the live chunks stay
// on core NATS). A read is an ordered consumer over the session's or the
// reply's subject, run on the JetStream thread, bounded in time and entries.

#include "bus/chunk_log.hpp"
#include "bus/jetstream.hpp"

namespace chat::bus {

class JetStreamChunkLog final : public ChunkLog {
 public:
  explicit JetStreamChunkLog(JetStream& js) : js_(js) {}

  void append(const std::string& session_id, const std::string& message_id, std::string entry_id,
              const std::vector<std::string>& payloads, PublishCallback done = {}) override;
  void read(const std::string& session_id, const std::string& message_id, LogReadCallback done) override;
  ComponentStatus status() const override;

  static std::string subject(const std::string& session_id, const std::string& message_id);

 private:
  JetStream& js_;
};

}  // namespace chat::bus
