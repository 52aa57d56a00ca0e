#pragma once
// The provider's side of each wire protocol, for tests that run the same
// checks against openai and anthropic: the events of a reply and the bodies
// of HTTP errors as each real API sends them, and a harness that points an
// HttpStreamingProvider at a FakeServer.

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "http_client/client_loop.hpp"
#include "http_client/fake_http_server.hpp"
#include "protocol/messages.hpp"
#include "providers/http_streaming_provider.hpp"
#include "providers/recording_sink.hpp"

namespace chat::providers::test {

using http_client::test::Script;

// How a reply ends, in each protocol's own words.
enum class Ending { stop, length, content_filter };

class WireScript {
 public:
  virtual ~WireScript() = default;
  virtual std::shared_ptr<const WireProtocol> protocol() const = 0;
  virtual std::string key() const = 0;  // shaped like the real ones: the scrubbing looks for that
  // The base URL setting for `server`, in the form the real setting takes.
  virtual std::string base_url(const http_client::test::FakeServer& server) const = 0;
  virtual std::string target() const = 0;       // where requests arrive: "/v1/chat/completions"
  virtual std::string model() const = 0;        // as a request names it
  virtual std::string reply_model() const = 0;  // as the stream names it back

  // Each is one or more complete events: what precedes the first text, one
  // piece of text, the event(s) carrying how the reply ended and its token
  // count, and the event that closes the stream.
  virtual std::string opening() const = 0;
  virtual std::string text(std::string_view piece) const = 0;
  virtual std::string finish(Ending ending, int tokens) const = 0;
  virtual std::string end() const = 0;
  // The JSON body of an HTTP error answer.
  virtual std::string error_body(unsigned status, std::string_view message) const = 0;

  // A whole reply as one chunk per event: opening, `pieces`, stop, end.
  Script reply(const std::vector<std::string>& pieces, int tokens) const;
  std::string name() const { return std::string(protocol()->names().provider); }
};

const WireScript& openai_wire();
const WireScript& anthropic_wire();

protocol::WorkflowRequest chat_request(std::string message = "Hello there");

// What every provider test needs: the client's threads, providers on them,
// and generations kept until the test ends.
class ProviderHarness {
 protected:
  HttpStreamingSettings settings(const WireScript& wire, const http_client::test::FakeServer& server) const;
  std::shared_ptr<HttpStreamingProvider> provider(
      const WireScript& wire, const http_client::test::FakeServer& server,
      http_client::HttpClientOptions options = http_client::test::ClientLoop::fast_options());
  // Starts a generation and waits for its end, checking the sink's contract.
  std::shared_ptr<RecordingSink> run(Provider& provider, const std::string& model,
                                     const protocol::WorkflowRequest& request = chat_request());
  // The same with `wire`'s provider against `server`, asking for wire.model().
  std::shared_ptr<RecordingSink> run(const WireScript& wire, const http_client::test::FakeServer& server,
                                     const protocol::WorkflowRequest& request = chat_request());

  http_client::test::ClientLoop loop;
  std::vector<std::shared_ptr<Generation>> generations;
};

}  // namespace chat::providers::test
