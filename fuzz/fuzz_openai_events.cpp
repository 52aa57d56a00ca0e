// OpenAI (and compatible servers') streamed replies (provider_fuzz.hpp).
#include "provider_fuzz.hpp"
#include "providers/openai_protocol.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  chat::providers::OpenAiDecoder decoder;
  decode_body(decoder, std::string_view(reinterpret_cast<const char*>(data), size));
  return 0;
}
