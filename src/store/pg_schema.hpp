#pragma once
// PostgresStore's schema: the versioned migrations and the code that applies
// them at start-up (see docs/STORE.md, Migrations).

#include "store/pg_conn.hpp"

namespace chat::store::pg {

// Applies the migrations `c`'s database lacks, under an advisory lock so that
// pods starting together take turns. Throws std::runtime_error naming the step
// that failed (start-up fails loudly).
void migrate(Connection& c);

}  // namespace chat::store::pg
