#pragma once
// The spill journal: where finished assistant replies wait on disk when a
// store's bounded queue has no room for them, so that none is refused and memory
// stays bounded (see message_store.hpp and docs/STORE.md, Spill journal).
//
// A journal is a directory of segment files, one record per line
// (spill_record.hpp), named so that they sort oldest first. Each store owns the
// segments it creates and holds an flock(2) on each of them while it lives; at
// start-up it adopts the segments no live store holds (left by a store that was
// destroyed or crashed with replies still unwritten) and reads them first.
// Several stores (processes) may share one directory.
//
// Appends are one write(2) each, without fsync: a journal survives a crash of
// the process, not of the machine. Records are removed only in whole segments,
// once read to the end; a store destroyed in the middle of a segment leaves it
// whole, so the next store writes some replies a second time, which changes
// nothing (writes are insert-if-absent).

#include <boost/system/error_code.hpp>

#include <cstddef>
#include <cstdint>
#include <deque>
#include <filesystem>
#include <mutex>
#include <optional>
#include <string>
#include <utility>

#include "config/config.hpp"
#include "store/message_store.hpp"

namespace chat::store {

// StoreConfig::spill_dir, or its default when empty: "<DB_PATH>.spill" beside
// the SQLite file; with DB_HOST, "<temp dir>/chatd-spill-<host>-<port>-<name>",
// one per database, so that a restarted pod finds what it left.
std::filesystem::path spill_dir_for(const config::StoreConfig& cfg);

class SpillJournal {
 public:
  static constexpr std::uint64_t kSegmentBytes = 4 * 1024 * 1024;

  // Creates `dir` if needed and adopts the segments nobody holds. Throws
  // std::runtime_error when the directory cannot be created (start-up fails loudly).
  explicit SpillJournal(std::filesystem::path dir, std::uint64_t segment_bytes = kSegmentBytes);
  // Unread records stay on disk for the next journal on this directory; an empty
  // directory is removed.
  ~SpillJournal();
  SpillJournal(const SpillJournal&) = delete;
  SpillJournal& operator=(const SpillJournal&) = delete;

  // Any thread. The error of the file system when the record could not be
  // written whole (nothing of it is then left behind).
  boost::system::error_code append(const AssistantMessage& m);
  // Any thread: true when every record has been read and popped.
  bool empty() const;
  // Any thread: bytes of records not yet popped, adopted ones included.
  std::uint64_t unread_bytes() const;

  // One reader thread: the oldest unread record, left in place until
  // pop_front(). Records that cannot be read back are skipped (logged).
  std::optional<AssistantMessage> front();
  void pop_front();

  const std::filesystem::path& dir() const { return dir_; }

 private:
  class File {
   public:
    explicit File(int fd = -1) : fd_(fd) {}
    File(File&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
    File& operator=(File&& other) noexcept;
    ~File();
    int fd() const { return fd_; }

   private:
    int fd_;
  };

  struct Segment {
    std::filesystem::path path;
    File file;               // holds the flock while open
    std::uint64_t size = 0;  // bytes of whole records
  };

  void adopt_orphans();
  boost::system::error_code open_segment();
  void skip(std::uint64_t bytes);
  void set_aside_front(std::uint64_t record_bytes);
  void drop_read_segments();

  const std::filesystem::path dir_;
  const std::uint64_t segment_bytes_;
  mutable std::mutex mu_;  // guards everything below
  std::deque<Segment> segments_;  // oldest first
  bool appending_ = false;        // segments_.back() is this journal's open tail
  std::uint64_t read_offset_ = 0;  // into segments_.front()
  std::uint64_t unread_bytes_ = 0;
  std::uint64_t peeked_bytes_ = 0;  // the record front() returned, its line end included
  unsigned created_ = 0;            // segments created, for unique names
};

}  // namespace chat::store
