#pragma once
// Identifiers (session, user, pod, message, connection ids) are spliced into NATS
// subjects and Redis keys, so the character set is the security boundary:
// 1..128 characters of [A-Za-z0-9_-]. Nothing else may reach a subject or key.

#include <cstdint>
#include <string>
#include <string_view>

namespace chat {

inline constexpr std::size_t kMaxIdentifierLength = 128;

bool is_valid_identifier(std::string_view id) noexcept;

// Model names carry dots, colons and slashes ("llama3.1:8b", "org/model"), but
// no spaces or control characters: 1..128 printable ASCII characters.
bool is_valid_model_name(std::string_view name) noexcept;

// A fresh random identifier such as "msg_3f9a…" (prefix + 24 hex digits).
std::string new_identifier(std::string_view prefix);

// Prefix + 10 characters of [0-9A-Za-z] (59 random bits): for ids that need
// only be unique among what one process holds at once, such as its streams'
// connection ids (the registry's keys carry the pod id). It is kept as the
// number its characters spell, 8 bytes, and spelled when asked: an idle stream
// is mostly such fixed fields. With a prefix of at most 5 characters the text
// fits std::string's inline buffer (no heap block).
class CompactId {
 public:
  static constexpr std::uint64_t kSpace = 839'299'365'868'340'224;  // 62^10
  static CompactId random();
  // `number` modulo kSpace.
  explicit constexpr CompactId(std::uint64_t number) noexcept : number_(number % kSpace) {}

  std::string spelled(std::string_view prefix) const;

 private:
  std::uint64_t number_;
};

}  // namespace chat
