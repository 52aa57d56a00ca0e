#include "store/message_store.hpp"

#include <string>

#include "common/utf8.hpp"

namespace chat::store {
namespace {

class StoreCategory final : public boost::system::error_category {
 public:
  const char* name() const noexcept override { return "chat.store"; }
  std::string message(int ev) const override {
    switch (static_cast<Errc>(ev)) {
      case Errc::forbidden: return "the session belongs to another user";
      case Errc::not_found: return "no such session or message";
      case Errc::unavailable: return "the database cannot be reached";
      case Errc::overloaded: return "the store's operation queue is full";
    }
    return "unknown store error";
  }
};

constexpr std::size_t kTitleChars = 60;

// Whitespace and control characters separate words; a newline in the first
// message must not end up in a one-line title.
bool is_separator(unsigned char c) { return c <= 0x20 || c == 0x7f; }

std::string_view next_word(std::string_view text, std::size_t& pos) {
  while (pos < text.size() && is_separator(static_cast<unsigned char>(text[pos]))) ++pos;
  std::size_t start = pos;
  while (pos < text.size() && !is_separator(static_cast<unsigned char>(text[pos]))) ++pos;
  return text.substr(start, pos - start);
}

}  // namespace

const boost::system::error_category& store_category() noexcept {
  static const StoreCategory category;
  return category;
}

std::string make_title(std::string_view first_message) {
  std::string title;
  std::size_t chars = 0;
  std::size_t pos = 0;
  for (auto word = next_word(first_message, pos); !word.empty(); word = next_word(first_message, pos)) {
    std::size_t needed = utf8_length(word) + (title.empty() ? 0 : 1);
    if (chars + needed > kTitleChars) {
      // One giant first "word" (a URL, a code line) is cut; later words are dropped whole.
      if (title.empty()) title = utf8_prefix(word, kTitleChars);
      return title + "\u2026";
    }
    if (!title.empty()) title += ' ';
    title += word;
    chars += needed;
  }
  return title.empty() ? std::string("New chat") : title;
}

}  // namespace chat::store
