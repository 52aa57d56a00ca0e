#include "providers/provider_errors.hpp"

#include <boost/json/parse.hpp>
#include <boost/json/value.hpp>

#include <charconv>
#include <cmath>

namespace json = boost::json;

namespace chat::providers {
namespace {

constexpr std::size_t kMaxMessage = 400;

std::string string_at(const json::value& v, std::initializer_list<std::string_view> path) {
  const json::value* cur = &v;
  for (auto key : path) {
    const auto* obj = cur->if_object();
    if (!obj) return {};
    auto it = obj->find(key);
    if (it == obj->end()) return {};
    cur = &it->value();
  }
  if (const auto* s = cur->if_string()) return std::string(*s);
  return {};
}

// Length of the valid UTF-8 sequence at s[i], 0 if it is not one. Error
// chunks are JSON: a stray byte from a plain-text error body must not break them.
std::size_t utf8_length(std::string_view s, std::size_t i) {
  auto byte = [&](std::size_t k) { return static_cast<unsigned char>(s[k]); };
  unsigned char c = byte(i);
  std::size_t n = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xE ? 3 : (c >> 3) == 0x1E ? 4 : 0;
  if (n == 0 || i + n > s.size()) return 0;
  for (std::size_t k = 1; k < n; ++k)
    if ((byte(i + k) & 0xC0) != 0x80) return 0;
  if (n == 2 && c < 0xC2) return 0;                        // overlong
  if (n == 3 && c == 0xE0 && byte(i + 1) < 0xA0) return 0;  // overlong
  if (n == 3 && c == 0xED && byte(i + 1) > 0x9F) return 0;  // surrogates
  if (n == 4 && (c > 0xF4 || (c == 0xF0 && byte(i + 1) < 0x90) || (c == 0xF4 && byte(i + 1) > 0x8F))) return 0;
  return n;
}

bool key_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_' || c == '*';
}

}  // namespace

ProviderFailure failure_from_status(std::string_view provider, unsigned status, std::string_view body_message,
                                    std::optional<std::chrono::milliseconds> retry_after) {
  std::string detail = body_message.empty() ? std::string{} : ": " + std::string(body_message);
  std::string who(provider);
  ProviderFailure f;
  if (status == 401 || status == 403) {
    f.code = provider_code::kAuthFailed;
    f.message = who + " rejected the API key (HTTP " + std::to_string(status) + ")" + detail;
  } else if (status == 404) {
    f.code = provider_code::kModelNotFound;
    f.message = who + " does not know the model or the URL (HTTP 404)" + detail;
  } else if (status == 429) {
    f.code = provider_code::kRateLimited;
    f.message = who + " is rate limiting requests (HTTP 429)" + detail;
    f.retryable = true;
    f.retry_after = retry_after;
  } else if (status == 408) {
    f.code = provider_code::kTimeout;
    f.message = who + " timed out the request (HTTP 408)" + detail;
    f.retryable = true;
  } else if (status >= 500) {
    // 529 is Anthropic's "overloaded"; all 5xx are the provider's trouble.
    f.code = provider_code::kUnavailable;
    f.message = who + " failed (HTTP " + std::to_string(status) + ")" + detail;
    f.retryable = true;
    f.retry_after = retry_after;
  } else {
    f.code = provider_code::kError;
    f.message = who + " refused the request (HTTP " + std::to_string(status) + ")" + detail;
  }
  return f;
}

std::string error_message_from_body(std::string_view body) {
  boost::system::error_code ec;
  auto v = json::parse(body, ec);
  if (!ec) {
    for (auto path : {std::initializer_list<std::string_view>{"error", "message"}, {"error"}, {"message"}, {"detail"}}) {
      auto s = string_at(v, path);
      if (!s.empty()) return s;
    }
    return {};
  }
  // Not JSON (a proxy's HTML page, a plain-text error): only short, textual bodies help.
  if (body.size() > kMaxMessage || body.find('<') != std::string_view::npos) return {};
  return std::string(body);
}

std::optional<std::chrono::milliseconds> parse_retry_after(std::string_view seconds, std::string_view millis) {
  auto number = [](std::string_view s) -> std::optional<double> {
    while (!s.empty() && s.front() == ' ') s.remove_prefix(1);
    while (!s.empty() && s.back() == ' ') s.remove_suffix(1);
    double v = 0;
    auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (s.empty() || ec != std::errc{} || ptr != s.data() + s.size() || !(v >= 0) || v > 1e9) return std::nullopt;
    return v;
  };
  if (auto ms = number(millis)) return std::chrono::milliseconds{static_cast<long long>(std::ceil(*ms))};
  if (auto s = number(seconds)) return std::chrono::milliseconds{static_cast<long long>(std::ceil(*s * 1000))};
  return std::nullopt;
}

std::string sanitize_message(std::string_view text, std::string_view secret) {
  std::string s(text);
  if (secret.size() >= 4) {
    for (auto pos = s.find(secret); pos != std::string::npos; pos = s.find(secret, pos)) s.replace(pos, secret.size(), "***");
  }
  // Key-shaped tokens: OpenAI echoes a masked key in its 401 message; masked or
  // not, a key fragment has no place in a chat stream.
  std::string out;
  out.reserve(s.size());
  for (std::size_t i = 0; i < s.size();) {
    bool boundary = i == 0 || !key_char(s[i - 1]);
    if (boundary && s.compare(i, 3, "sk-") == 0) {
      std::size_t j = i + 3;
      while (j < s.size() && key_char(s[j])) ++j;
      out += "sk-***";
      i = j;
      continue;
    }
    unsigned char c = static_cast<unsigned char>(s[i]);
    if (c >= 0x80) {
      auto n = utf8_length(s, i);
      if (n == 0) {
        out += "\xEF\xBF\xBD";  // U+FFFD for a byte that is not UTF-8
        ++i;
      } else {
        out.append(s, i, n);
        i += n;
      }
      continue;
    }
    out.push_back(c < 0x20 || c == 0x7f ? ' ' : s[i]);
    ++i;
  }
  if (out.size() > kMaxMessage) {
    std::size_t cut = kMaxMessage;
    while (cut > 0 && (static_cast<unsigned char>(out[cut]) & 0xC0) == 0x80) --cut;  // not inside a UTF-8 character
    out.resize(cut);
    out += "…";
  }
  return out;
}

}  // namespace chat::providers
