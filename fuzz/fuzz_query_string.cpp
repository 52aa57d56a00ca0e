// Request targets: parsed as ChatApi::handle parses them, then every query
// value and path segment checked as an identifier. A value accepted as an
// identifier must be safe in a NATS subject and a Redis key.
#include <boost/url/parse.hpp>

#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "api/chat_request.hpp"
#include "common/identifier.hpp"

namespace {

void check(std::string_view value) {
  bool ok = !chat::api::check_identifier("x", value).has_value();
  if (ok != chat::is_valid_identifier(value)) std::abort();
  if (ok && (value.empty() || value.size() > 128 || value.find_first_of(".*> :/\\\r\n\t\0%+", 0, 14) != value.npos))
    std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  check(text);
  auto target = boost::urls::parse_origin_form(text);
  if (!target) return 0;
  std::string path(target->encoded_path());
  for (std::size_t start = 1, slash; start <= path.size(); start = slash + 1) {
    slash = path.find('/', start);
    if (slash == std::string::npos) slash = path.size();
    check(std::string_view(path).substr(start, slash - start));
  }
  for (auto param : target->params()) {
    check(param.key);
    check(param.value);
  }
  return 0;
}
