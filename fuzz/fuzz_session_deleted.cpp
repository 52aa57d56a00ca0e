// Bus messages as they arrive from NATS: decode_session_deleted_on (bus_fuzz.hpp).
// The input's first line is the subject it came on, the rest its payload.
#include <cstdint>

#include "bus_fuzz.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view input(reinterpret_cast<const char*>(data), size);
  auto newline = input.find('\n');
  auto subject = input.substr(0, newline);
  auto payload = newline == std::string_view::npos ? std::string_view{} : input.substr(newline + 1);
  round_trip(payload, [subject](std::string_view text, std::string& error) {
    return chat::protocol::decode_session_deleted_on(subject, text, error);
  });
  return 0;
}
