#pragma once
// Every chunk a worker published, kept for a while, so that any pod can fill a
// gap in a reply or serve a reconnecting stream from it: across pods, after the
// pod that served the stream died, and after the reply finished. Two
// implementations: MemoryChunkLog (one process, the embedded default) and
// JetStreamChunkLog (a limits-retention stream, `chat.log.{session}.{message}`).
//
// Contract, for every implementation:
// - No call blocks its caller; callbacks run on a log-owned thread.
// - An entry holds one payload or a run of them (a writer that appends faster
//   than the log acknowledges sends what gathered meanwhile as one entry); a
//   read returns the payloads one by one. Payloads are single lines (encoded
//   JSON never holds a raw line break).
// - Entries keep the order in which they were appended per session; an entry
//   appended again with the same `entry_id` is stored once.
// - Entries leave when they are older than the log's age limit or the log is
//   over its size limit, oldest first. A read of what has left returns fewer
//   entries (possibly none), never an error.

#include <boost/system/error_code.hpp>

#include <functional>
#include <string>
#include <vector>

#include "bus/message_bus.hpp"
#include "common/component_status.hpp"

namespace chat::bus {

// Payloads in the order they were appended.
using LogReadCallback = std::function<void(boost::system::error_code, std::vector<std::string> payloads)>;

class ChunkLog {
 public:
  virtual ~ChunkLog() = default;

  // `entry_id` deduplicates ("<message>:<attempt>:<first chunk>-<last chunk>").
  // `done` (optional) reports when the entry is stored.
  virtual void append(const std::string& session_id, const std::string& message_id, std::string entry_id,
                      const std::vector<std::string>& payloads, PublishCallback done = {}) = 0;
  // The session's entries, or only one message's when `message_id` is not empty.
  virtual void read(const std::string& session_id, const std::string& message_id, LogReadCallback done) = 0;
  virtual ComponentStatus status() const = 0;
};

}  // namespace chat::bus
