#pragma once
// Another writer holding a SQLite chat database: the store's writes wait
// behind it (up to the store's busy timeout) until it lets go.

#include <sqlite3.h>

#include <filesystem>
#include <stdexcept>

namespace chat::store {

class DatabaseHeld {
 public:
  explicit DatabaseHeld(const std::filesystem::path& file) {
    if (sqlite3_open(file.c_str(), &db_) != SQLITE_OK) throw std::runtime_error("cannot open the database");
    if (sqlite3_exec(db_, "BEGIN EXCLUSIVE", nullptr, nullptr, nullptr) != SQLITE_OK)
      throw std::runtime_error("cannot lock the database");
  }
  ~DatabaseHeld() { sqlite3_close(db_); }
  DatabaseHeld(const DatabaseHeld&) = delete;
  DatabaseHeld& operator=(const DatabaseHeld&) = delete;
  void let_go() { sqlite3_exec(db_, "COMMIT", nullptr, nullptr, nullptr); }

 private:
  sqlite3* db_ = nullptr;
};

}  // namespace chat::store
