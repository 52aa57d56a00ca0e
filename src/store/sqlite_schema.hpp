#pragma once
// SqliteStore's schema: the versioned migrations and opening the file they are
// applied to (see docs/STORE.md, Migrations).

#include <string>

#include "store/sqlite_db.hpp"

namespace chat::store::sqlite {

// Creates the file's directory when needed, opens the file and applies the
// pending migrations in one write transaction. Throws std::runtime_error naming
// the path (start-up fails loudly).
Connection open_database(const std::string& path);

}  // namespace chat::store::sqlite
