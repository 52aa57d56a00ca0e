#include "store/spill_journal.hpp"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <stdexcept>
#include <utility>
#include <vector>

#include "log/log.hpp"
#include "store/spill_record.hpp"

namespace chat::store {
namespace {

namespace fs = std::filesystem;
using boost::system::error_code;

constexpr const char* kSuffix = ".spill";
constexpr std::size_t kReadBlock = 64 * 1024;

error_code last_error() { return {errno, boost::system::system_category()}; }

std::string file_name_safe(std::string text) {
  for (char& c : text) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '-';
    if (!ok) c = '_';
  }
  return text;
}

bool is_segment_name(const std::string& name) { return name.front() != '.' && name.ends_with(kSuffix); }

error_code write_all(int fd, std::string_view bytes) {
  while (!bytes.empty()) {
    auto n = ::write(fd, bytes.data(), bytes.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return last_error();
    bytes.remove_prefix(static_cast<std::size_t>(n));
  }
  return {};
}

// The line that starts at `offset` (without its '\n') in [offset, end). `whole`
// is false when no line end comes before `end`: a write torn by a crash.
error_code read_line(int fd, std::uint64_t offset, std::uint64_t end, std::string& line, bool& whole) {
  line.clear();
  whole = false;
  char block[kReadBlock];
  while (offset < end) {
    auto want = static_cast<std::size_t>(std::min<std::uint64_t>(sizeof block, end - offset));
    auto n = ::pread(fd, block, want, static_cast<off_t>(offset));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return last_error();
    if (n == 0) return boost::system::errc::make_error_code(boost::system::errc::io_error);  // shorter than recorded
    std::string_view got(block, static_cast<std::size_t>(n));
    if (auto eol = got.find('\n'); eol != std::string_view::npos) {
      line.append(got.substr(0, eol));
      whole = true;
      return {};
    }
    line.append(got);
    offset += static_cast<std::uint64_t>(n);
  }
  return {};
}

}  // namespace

fs::path spill_dir_for(const config::StoreConfig& cfg) {
  if (!cfg.spill_dir.empty()) return cfg.spill_dir;
  if (cfg.host) {
    return fs::temp_directory_path() /
           ("chatd-spill-" + file_name_safe(*cfg.host + "-" + std::to_string(cfg.port) + "-" + cfg.name));
  }
  if (cfg.path != ":memory:" && !cfg.path.starts_with("file:")) return cfg.path + kSuffix;
  // No file to sit beside, and an in-memory database dies with its process.
  return fs::temp_directory_path() / ("chatd-spill-" + file_name_safe(cfg.path) + "-" + std::to_string(::getpid()));
}

SpillJournal::File& SpillJournal::File::operator=(File&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = std::exchange(other.fd_, -1);
  }
  return *this;
}

SpillJournal::File::~File() {
  if (fd_ >= 0) ::close(fd_);
}

SpillJournal::SpillJournal(fs::path dir, std::uint64_t segment_bytes)
    : dir_(std::move(dir)), segment_bytes_(std::max<std::uint64_t>(segment_bytes, 1)) {
  std::error_code ec;
  fs::create_directories(dir_, ec);
  if (ec) throw std::runtime_error("DB_SPILL_DIR: cannot create the spill directory " + dir_.string() + ": " + ec.message());
  adopt_orphans();
}

SpillJournal::~SpillJournal() {
  segments_.clear();  // closing releases the locks: the next journal may adopt what is left
  ::rmdir(dir_.c_str());  // only when empty; otherwise the records wait there
}

// A segment whose lock can be taken belongs to no live journal. One that is
// gone by the time the lock is ours was finished by its owner.
void SpillJournal::adopt_orphans() {
  std::error_code ec;
  std::vector<fs::path> paths;
  for (const auto& entry : fs::directory_iterator(dir_, ec)) {
    if (is_segment_name(entry.path().filename().string())) paths.push_back(entry.path());
  }
  if (ec) throw std::runtime_error("cannot read the spill directory " + dir_.string() + ": " + ec.message());
  std::sort(paths.begin(), paths.end());
  for (const auto& path : paths) {
    File file(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    struct stat st {};
    if (file.fd() < 0 || ::flock(file.fd(), LOCK_EX | LOCK_NB) != 0 || ::fstat(file.fd(), &st) != 0 ||
        st.st_nlink == 0)
      continue;
    if (st.st_size == 0) {
      ::unlink(path.c_str());
      continue;
    }
    unread_bytes_ += static_cast<std::uint64_t>(st.st_size);
    segments_.push_back({path, std::move(file), static_cast<std::uint64_t>(st.st_size)});
  }
  if (!segments_.empty()) {
    log::warn("store_spill_adopted",
              {{"dir", dir_.string()}, {"segments", segments_.size()}, {"bytes", unread_bytes_}});
  }
}

// Created under a name no journal adopts, locked, then renamed: another store
// scanning the directory never sees it unlocked.
error_code SpillJournal::open_segment() {
  auto now = std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::system_clock::now().time_since_epoch());
  char name[96];
  std::snprintf(name, sizeof name, "%020lld-%d-%u%s", static_cast<long long>(now.count()), static_cast<int>(::getpid()),
                ++created_, kSuffix);
  auto path = dir_ / name;
  auto temporary = dir_ / ("." + std::string(name) + ".tmp");
  // Another journal removes the directory once it is empty: it is made again,
  // and again should it go between the two calls (a reply would be lost).
  File file;
  for (int attempt = 0; attempt < 3 && file.fd() < 0; ++attempt) {
    std::error_code dir_ec;
    fs::create_directories(dir_, dir_ec);
    if (dir_ec) return {dir_ec.value(), boost::system::system_category()};
    file = File(::open(temporary.c_str(), O_RDWR | O_CREAT | O_EXCL | O_APPEND | O_CLOEXEC, 0600));
    if (file.fd() < 0 && errno != ENOENT) break;
  }
  if (file.fd() < 0) return last_error();
  if (::flock(file.fd(), LOCK_EX | LOCK_NB) != 0 || ::rename(temporary.c_str(), path.c_str()) != 0) {
    auto ec = last_error();
    ::unlink(temporary.c_str());
    return ec;
  }
  segments_.push_back({path, std::move(file), 0});
  appending_ = true;
  return {};
}

error_code SpillJournal::append(const AssistantMessage& m) {
  std::string line = encode_spill_record(m);
  line.push_back('\n');
  std::lock_guard lock(mu_);
  error_code ec;
  if (!appending_ || segments_.back().size >= segment_bytes_) ec = open_segment();
  if (!ec) {
    auto& tail = segments_.back();
    ec = write_all(tail.file.fd(), line);
    if (!ec) {
      if (unread_bytes_ == 0) log::warn("store_spill_started", {{"dir", dir_.string()}});
      tail.size += line.size();
      unread_bytes_ += line.size();
      log::debug("store_reply_spilled", {{"message_id", m.message_id}, {"unread_bytes", unread_bytes_}});
      return {};
    }
    // Bytes past `size` are never read; new records go to a fresh segment.
    appending_ = false;
  }
  log::error("store_spill_failed", {{"message_id", m.message_id}, {"dir", dir_.string()}, {"error", ec.message()}});
  return ec;
}

bool SpillJournal::empty() const {
  std::lock_guard lock(mu_);
  return unread_bytes_ == 0;
}

std::uint64_t SpillJournal::unread_bytes() const {
  std::lock_guard lock(mu_);
  return unread_bytes_;
}

std::optional<AssistantMessage> SpillJournal::front() {
  for (;;) {
    int fd;
    std::uint64_t offset;
    std::uint64_t end;
    std::string path;
    {
      std::lock_guard lock(mu_);
      drop_read_segments();
      if (segments_.empty()) return std::nullopt;
      fd = segments_.front().file.fd();
      offset = read_offset_;
      end = segments_.front().size;
      path = segments_.front().path.string();
    }
    // Bytes below `end` never change, and only this thread drops segments: read without the lock.
    std::string line;
    bool whole = false;
    if (auto ec = read_line(fd, offset, end, line, whole)) {
      log::error("store_spill_unreadable", {{"path", path}, {"offset", offset}, {"error", ec.message()}});
      skip(end - offset);
    } else if (!whole) {
      log::warn("store_spill_torn_record", {{"path", path}, {"bytes", line.size()}});
      skip(line.size());
    } else if (auto m = decode_spill_record(line)) {
      peeked_bytes_ = line.size() + 1;
      return m;
    } else if (is_newer_spill_record(line)) {
      log::error("store_spill_newer_record", {{"path", path}, {"offset", offset},
                                              {"detail", "the segment is left for a chatd that reads its format"}});
      set_aside_front(line.size() + 1);
    } else {
      log::error("store_spill_bad_record", {{"path", path}, {"offset", offset}});
      skip(line.size() + 1);
    }
  }
}

// The front segment, adopted from a newer chatd, stays on disk unread: closed,
// so its lock goes and the next journal on the directory may take it.
void SpillJournal::set_aside_front(std::uint64_t record_bytes) {
  {
    std::lock_guard lock(mu_);
    if (!(appending_ && segments_.size() == 1)) {
      unread_bytes_ -= std::min(segments_.front().size - read_offset_, unread_bytes_);
      segments_.pop_front();
      read_offset_ = 0;
      return;
    }
  }
  // This journal's own tail holds only records it wrote, never a newer one:
  // a damaged record, skipped like any other.
  skip(record_bytes);
}

void SpillJournal::pop_front() {
  skip(std::exchange(peeked_bytes_, 0));
}

void SpillJournal::skip(std::uint64_t bytes) {
  std::lock_guard lock(mu_);
  read_offset_ += bytes;
  unread_bytes_ -= std::min(bytes, unread_bytes_);
  drop_read_segments();
  if (bytes > 0 && unread_bytes_ == 0) log::info("store_spill_drained", {{"dir", dir_.string()}});
}

// Under `mu_`. The open tail goes too once read: the next append starts a new
// segment, so an idle journal leaves no file behind.
void SpillJournal::drop_read_segments() {
  while (!segments_.empty() && read_offset_ >= segments_.front().size) {
    if (segments_.size() == 1) appending_ = false;
    ::unlink(segments_.front().path.c_str());
    segments_.pop_front();
    read_offset_ = 0;
  }
}

}  // namespace chat::store
