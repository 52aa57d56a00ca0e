// Anthropic's streamed replies (provider_fuzz.hpp).
#include "provider_fuzz.hpp"
#include "providers/anthropic_protocol.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  chat::providers::AnthropicDecoder decoder;
  decode_body(decoder, std::string_view(reinterpret_cast<const char*>(data), size));
  if (auto n = decoder.input_tokens(); n && *n < 0) std::abort();
  return 0;
}
