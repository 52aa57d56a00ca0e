#pragma once
// Request header rules beyond what Beast's parser enforces: the framing of the
// body (RFC 9112 §6) and the Host line (RFC 9112 §3.2).
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

struct HeaderError {
  Status status;  // 400 or 501; the connection is closed after the answer
  std::string code;
  std::string message;
};

// `parser_chunked`: what Beast's parser decided. nullopt: the framing is sound.
std::optional<HeaderError> check_framing(const beast_http::request_header<>& header, bool parser_chunked);

// An HTTP/1.1 request names the authority it is meant for in exactly one Host
// line, `host[:port]` or empty; HTTP/1.0 may leave it out. Two lines would let
// a proxy and this server route the same request by different hosts.
std::optional<HeaderError> check_host(const beast_http::request_header<>& header);

}  // namespace chat::http
