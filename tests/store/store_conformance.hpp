#pragma once
// The MessageStore conformance suite (store_conformance_test.cpp) runs against
// every implementation: each test binary instantiates it with its Backend.
// Also the synchronous helpers the store tests share.

#include <gtest/gtest.h>
#include <stdlib.h>

#include <chrono>
#include <filesystem>
#include <functional>
#include <future>
#include <memory>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "store/message_store.hpp"

namespace chat::store::test {

using boost::system::error_code;

// One test's database and the stores opened on it.
class Backend {
 public:
  virtual ~Backend() = default;
  // A new store on this test's database (initially empty; several may be open at once).
  virtual std::unique_ptr<MessageStore> open(std::size_t queue_limit = 10'000) = 0;
  // Runs SQL on the database directly; the first column of the first row.
  virtual std::string scalar(const std::string& sql) = 0;
  // How many store threads run callbacks (the overload test blocks them all).
  virtual unsigned threads() const = 0;
  // Where the stores of this database spill replies their queue has no room for.
  virtual std::filesystem::path spill_dir() const = 0;
};

struct BackendParam {
  std::string name;
  std::function<std::unique_ptr<Backend>()> make;
};

inline void PrintTo(const BackendParam& p, std::ostream* os) { *os << p.name; }
inline std::string backend_name(const testing::TestParamInfo<BackendParam>& info) { return info.param.name; }

// ---- files -------------------------------------------------------------------

// A fresh directory in the temp dir, removed with its contents at the end.
class TempDir {
 public:
  explicit TempDir(const std::string& prefix) {
    std::string path = (std::filesystem::temp_directory_path() / (prefix + "-XXXXXX")).string();
    if (::mkdtemp(path.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
    path_ = path;
  }
  ~TempDir() {
    std::error_code ignored;
    std::filesystem::remove_all(path_, ignored);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

// The spill journal's segment files in `dir` (none when it does not exist).
inline std::vector<std::filesystem::path> spill_files(const std::filesystem::path& dir) {
  std::vector<std::filesystem::path> files;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(dir, ec))
    if (e.path().extension() == ".spill") files.push_back(e.path());
  return files;
}

// ---- waiting for callbacks --------------------------------------------------

inline constexpr auto kCallbackTimeout = std::chrono::seconds(60);

// Calls `start(callback)` and waits for the callback's (error_code, result).
template <class Result, class Start>
std::pair<error_code, Result> await(Start start) {
  auto promise = std::make_shared<std::promise<std::pair<error_code, Result>>>();
  auto future = promise->get_future();
  start([promise](error_code ec, Result r) { promise->set_value({ec, std::move(r)}); });
  if (future.wait_for(kCallbackTimeout) != std::future_status::ready)
    throw std::runtime_error("store callback did not come");
  return future.get();
}

template <class Start>
error_code await_done(Start start) {
  auto promise = std::make_shared<std::promise<error_code>>();
  auto future = promise->get_future();
  start([promise](error_code ec) { promise->set_value(ec); });
  if (future.wait_for(kCallbackTimeout) != std::future_status::ready)
    throw std::runtime_error("store callback did not come");
  return future.get();
}

// The store's calls, one at a time.
class Sync {
 public:
  explicit Sync(MessageStore& s) : s_(s) {}

  std::pair<error_code, std::vector<protocol::HistoryEntry>> accept(NewUserMessage m, unsigned turns = 20) {
    return await<std::vector<protocol::HistoryEntry>>(
        [&](auto cb) { s_.accept_user_message(std::move(m), turns, std::move(cb)); });
  }
  error_code save(AssistantMessage m) {
    return await_done([&](auto cb) { s_.save_assistant_message(std::move(m), std::move(cb)); });
  }
  error_code claim(std::string session, std::string user) {
    return await_done([&](auto cb) { s_.claim_session(std::move(session), std::move(user), std::move(cb)); });
  }
  error_code discard(std::string id) {
    return await_done([&](auto cb) { s_.discard_message(std::move(id), std::move(cb)); });
  }
  std::pair<error_code, std::optional<std::string>> owner(std::string session) {
    return await<std::optional<std::string>>([&](auto cb) { s_.session_owner(std::move(session), std::move(cb)); });
  }
  std::pair<error_code, SessionPage> session_page(std::string user, std::size_t limit,
                                                  std::optional<SessionCursor> before = std::nullopt) {
    return await<SessionPage>(
        [&](auto cb) { s_.list_sessions(std::move(user), limit, std::move(before), std::move(cb)); });
  }
  std::pair<error_code, std::vector<SessionSummary>> sessions(std::string user, std::size_t limit = 100) {
    auto [ec, page] = session_page(std::move(user), limit);
    return {ec, std::move(page.sessions)};
  }
  std::pair<error_code, MessagePage> page(std::string session, std::string user, std::size_t limit,
                                          std::string before = {}) {
    return await<MessagePage>([&](auto cb) {
      s_.list_messages(std::move(session), std::move(user), limit, std::move(before), std::move(cb));
    });
  }
  error_code remove(std::string session, std::string user) {
    return await_done([&](auto cb) { s_.delete_session(std::move(session), std::move(user), std::move(cb)); });
  }
  error_code flush() {
    return await_done([&](auto cb) { s_.flush(std::move(cb)); });
  }

 private:
  MessageStore& s_;
};

// ---- building messages -------------------------------------------------------

// A fixed instant with a microsecond fraction, so round trips prove µs precision.
inline SystemTime base_time() { return *parse_rfc3339("2026-11-26T12:00:00.123456Z"); }
inline SystemTime at(int micros) { return base_time() + std::chrono::microseconds(micros); }

inline NewUserMessage user_message(std::string session, std::string user, std::string id, std::string content,
                                   SystemTime when) {
  return NewUserMessage{std::move(session), std::move(user), std::move(id), std::move(content), "demo", "demo-1", when};
}

inline AssistantMessage reply(std::string session, std::string id, std::string content, SystemTime when) {
  return AssistantMessage{std::move(id),
                          std::move(session),
                          std::move(content),
                          7,
                          "complete",
                          R"({"model":"demo-1","finish_reason":"stop"})",
                          when};
}

// ---- the fixture ---------------------------------------------------------------

class StoreConformance : public testing::TestWithParam<BackendParam> {
 protected:
  void SetUp() override {
    try {
      backend_ = GetParam().make();
    } catch (const std::exception& e) {
      FAIL() << GetParam().name << " backend could not start: " << e.what();
    }
  }

  // The test's main store, opened on first use (some tests open their own first).
  MessageStore& store() {
    if (!store_) store_ = backend_->open();
    return *store_;
  }
  Sync sync() { return Sync(store()); }
  void close_store() { store_.reset(); }

  std::unique_ptr<Backend> backend_;
  std::unique_ptr<MessageStore> store_;
};

}  // namespace chat::store::test
