// A provider's event stream, cut into pieces anywhere (the first byte of the
// input chooses the cuts): the events must not depend on where the cuts fall,
// and an event never exceeds the parser's limit.
#include <cstdint>
#include <cstdlib>
#include <string_view>
#include <vector>

#include "http_client/event_stream_parser.hpp"

using chat::http_client::EventStreamParser;
using chat::http_client::StreamEvent;

namespace {

constexpr std::size_t kLimit = 4096;

bool parse(std::string_view text, std::size_t piece, std::vector<StreamEvent>& out) {
  EventStreamParser parser(kLimit);
  for (std::size_t i = 0; i < text.size(); i += piece) {
    if (!parser.feed(text.substr(i, piece), out)) return false;
  }
  parser.finish(out);
  return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  std::size_t piece = data[0] % 16 + 1;
  std::string_view text(reinterpret_cast<const char*>(data) + 1, size - 1);
  std::vector<StreamEvent> whole, cut;
  bool ok_whole = parse(text, text.size() + 1, whole);
  bool ok_cut = parse(text, piece, cut);
  for (const auto& e : whole) {
    if (e.data.size() > kLimit) std::abort();
  }
  // An overflow may be seen at a different event when cut; otherwise equal.
  if (ok_whole && ok_cut) {
    if (whole.size() != cut.size()) std::abort();
    for (std::size_t i = 0; i < whole.size(); ++i) {
      if (whole[i].data != cut[i].data || whole[i].type != cut[i].type || whole[i].id != cut[i].id) std::abort();
    }
  }
  return 0;
}
