#pragma once
// Request framing rules beyond what Beast's parser enforces (RFC 9112 §6).
//
// Beast 1.81 takes a request as chunked only when `chunked` is the last coding
// of a single Transfer-Encoding line; any other Transfer-Encoding (`xchunked`,
// `chunked, chunked`, `gzip` alone) silently means "no body", and the bytes of
// the real body are then read as the next request: request smuggling behind a
// proxy that frames the message differently. Beast already refuses
// Transfer-Encoding together with Content-Length and conflicting
// Content-Length values. What it lets through is decided here, right after the
// header is read and before any body byte is.

#include <optional>
#include <string>

#include "http/responses.hpp"

namespace chat::http {

struct FramingError {
  Status status;  // 400 or 501; the connection is closed after the answer
  std::string code;
  std::string message;
};

// `parser_chunked`: what Beast's parser decided. nullopt: the framing is sound.
std::optional<FramingError> check_framing(const beast_http::request_header<>& header, bool parser_chunked);

}  // namespace chat::http
