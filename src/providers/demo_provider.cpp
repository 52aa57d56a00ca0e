#include "providers/demo_provider.hpp"

#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>

#include <atomic>

namespace asio = boost::asio;

namespace chat::providers {
namespace {

// Splits after each run of spaces, so the pieces concatenate back to the text.
std::vector<std::string> split_words(const std::string& text, unsigned per_chunk) {
  std::vector<std::string> chunks;
  std::string current;
  unsigned words = 0;
  for (std::size_t i = 0; i < text.size(); ++i) {
    current.push_back(text[i]);
    bool word_end = text[i] == ' ' && (i + 1 == text.size() || text[i + 1] != ' ');
    if (word_end && ++words == per_chunk) {
      chunks.push_back(std::move(current));
      current.clear();
      words = 0;
    }
  }
  if (!current.empty()) chunks.push_back(std::move(current));
  return chunks;
}

class DemoGeneration final : public Generation, public std::enable_shared_from_this<DemoGeneration> {
 public:
  DemoGeneration(asio::any_io_executor ex, std::vector<std::string> pieces, std::string model,
                 std::chrono::milliseconds delay, std::shared_ptr<GenerationSink> sink)
      : strand_(asio::make_strand(ex)), timer_(strand_), pieces_(std::move(pieces)), model_(std::move(model)),
        delay_(delay), sink_(std::move(sink)) {}

  void run() { asio::post(strand_, [self = shared_from_this()] { self->step(); }); }

  void cancel() override {
    cancelled_ = true;
    asio::post(strand_, [self = shared_from_this()] { self->timer_.cancel(); });
  }

 private:
  void step() {
    if (!sink_) return;
    if (cancelled_) return finish("cancelled");
    if (next_ == pieces_.size()) return finish("stop");
    sink_->on_text(pieces_[next_++]);
    if (delay_.count() == 0) return asio::post(strand_, [self = shared_from_this()] { self->step(); });
    timer_.expires_after(delay_);
    timer_.async_wait([self = shared_from_this()](boost::system::error_code) { self->step(); });
  }

  void finish(const char* reason) {
    // Roughly what a tokenizer would count: one token per ~4 characters.
    std::int64_t chars = 0;
    for (std::size_t i = 0; i < next_; ++i) chars += static_cast<std::int64_t>(pieces_[i].size());
    auto sink = std::move(sink_);
    sink->on_finish(Finish{reason, std::max<std::int64_t>(1, (chars + 3) / 4), model_});
  }

  asio::strand<asio::any_io_executor> strand_;
  asio::steady_timer timer_;
  std::vector<std::string> pieces_;
  std::string model_;
  std::chrono::milliseconds delay_;
  std::shared_ptr<GenerationSink> sink_;  // strand-only; reset when finished
  std::size_t next_ = 0;
  std::atomic<bool> cancelled_{false};
};

}  // namespace

DemoProvider::DemoProvider(asio::any_io_executor executor, DemoOptions options)
    : executor_(std::move(executor)), options_(options) {}

std::string DemoProvider::reply_for(const protocol::WorkflowRequest& request) {
  std::string quoted;
  for (char c : request.message) quoted.push_back(c == '\n' || c == '\r' || c == '\t' ? ' ' : c);
  auto turns = request.context.conversation_history.size();
  std::string reply = "Hello! This is the demo assistant of the Universal Chat Interface. You said: \"" + quoted + "\". ";
  reply += turns == 0 ? "This is the first message of our conversation. "
                      : "We have exchanged " + std::to_string(turns) + " earlier messages in this conversation. ";
  reply +=
      "Every word of this reply travels as a numbered chunk over the message bus, is put back in order by the pod, "
      "and reaches each of your open streams. When the reply is complete it is stored once in the database. "
      "Set an AI provider to get real answers instead of this one.";
  return reply;
}

std::shared_ptr<Generation> DemoProvider::start(const protocol::WorkflowRequest& request, std::string model,
                                                std::shared_ptr<GenerationSink> sink, TraceHeaders) {
  auto generation = std::make_shared<DemoGeneration>(executor_, split_words(reply_for(request), options_.words_per_chunk),
                                                     std::move(model), options_.chunk_delay, std::move(sink));
  generation->run();
  return generation;
}

}  // namespace chat::providers
