// Bus messages as they arrive from NATS: decode_workflow_request (bus_fuzz.hpp).
#include <cstdint>

#include "bus_fuzz.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  round_trip(std::string_view(reinterpret_cast<const char*>(data), size),
             [](std::string_view text, std::string& error) { return chat::protocol::decode_workflow_request(text, error); });
  return 0;
}
