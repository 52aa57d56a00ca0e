#pragma once
// Text lengths in characters (Unicode code points), as users count them: limits
// on messages and titles are in characters, not bytes. Input is assumed to be
// valid UTF-8 (JSON parsing guarantees it).

#include <cstddef>
#include <string_view>

namespace chat {

// Code points in `text`.
std::size_t utf8_length(std::string_view text) noexcept;

// The first `chars` code points of `text`, never splitting a UTF-8 sequence.
std::string_view utf8_prefix(std::string_view text, std::size_t chars) noexcept;
// The longest start of `text` of at most `max_bytes` bytes that splits no
// UTF-8 sequence.
std::string_view utf8_byte_prefix(std::string_view text, std::size_t max_bytes) noexcept;

// Whether `text` shows nothing: only Unicode White_Space (ASCII blanks, U+00A0,
// U+3000, the U+2000 spaces, line and paragraph separators...) and the
// zero-width characters a keyboard or a paste leaves behind (U+200B..U+200D,
// U+2060, U+FEFF). An empty text is blank.
bool utf8_is_blank(std::string_view text) noexcept;

}  // namespace chat
