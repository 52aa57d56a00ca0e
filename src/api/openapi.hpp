#pragma once
// GET /openapi.yaml: the API contract, docs/openapi.yaml, as built into the
// program (cmake/embed_file.cmake), so a pod serves the description of the API
// it runs without the source tree.

#include <string_view>

#include "http/responses.hpp"

namespace chat::api {

// The bytes of docs/openapi.yaml at build time.
std::string_view openapi_document();

// 200, Content-Type application/yaml.
http::Response openapi_response();

}  // namespace chat::api
