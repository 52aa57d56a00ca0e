#pragma once
// The two halves of the durable-bus suites (work queue, chunk log): the
// in-process implementations, and JetStream on a real nats-server with -js.

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>

#include <chrono>
#include <memory>
#include <thread>

#include "bus/bus_work_queue.hpp"
#include "bus/jetstream.hpp"
#include "bus/jetstream_chunk_log.hpp"
#include "bus/jetstream_work_queue.hpp"
#include "bus/memory_bus.hpp"
#include "bus/memory_chunk_log.hpp"
#include "harness/server_process.hpp"

namespace chat::test {

template <class Pred>
bool wait_until(Pred pred, std::chrono::milliseconds limit = std::chrono::seconds(20)) {
  auto deadline = std::chrono::steady_clock::now() + limit;
  while (!pred()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return true;
}

class MemoryDurable {
 public:
  static constexpr const char* kName = "Memory";
  static constexpr bool kRedelivers = false;

  MemoryDurable() : work_(boost::asio::make_work_guard(io_)), bus_(io_.get_executor()), queue_(bus_),
                    log_(io_.get_executor(), std::chrono::minutes(10), 64 << 20) {
    for (int i = 0; i < 2; ++i) threads_.emplace_back([this] { io_.run(); });
  }
  ~MemoryDurable() {
    work_.reset();
    io_.stop();
    for (auto& t : threads_) t.join();
  }
  bus::WorkQueue& queue(int) { return queue_; }
  bus::ChunkLog& log(int) { return log_; }

 private:
  boost::asio::io_context io_;
  boost::asio::executor_work_guard<boost::asio::io_context::executor_type> work_;
  bus::MemoryBus bus_;
  bus::BusWorkQueue queue_;
  bus::MemoryChunkLog log_;
  std::vector<std::thread> threads_;
};

// One nats-server with JetStream per test; each client index is its own
// connection with its own JetStream context, as pods and workers have.
class JetStreamDurable {
 public:
  static constexpr const char* kName = "JetStream";
  static constexpr bool kRedelivers = true;

  explicit JetStreamDurable(bus::JetStreamOptions options = short_options()) : options_(options) {}

  static bus::JetStreamOptions short_options() {
    bus::JetStreamOptions o;
    o.ack_wait = std::chrono::milliseconds(1'500);
    o.max_deliver = 3;
    return o;
  }

  bus::WorkQueue& queue(int index) { return client(index).queue; }
  bus::ChunkLog& log(int index) { return client(index).log; }
  ServerProcess& server() { return server_; }

 private:
  struct Client {
    Client(const std::string& url, const bus::JetStreamOptions& o, int index)
        : bus(config(url), "durable-" + std::to_string(index)), js(bus, o, true), queue(js), log(js) {}
    static config::NatsConfig config(const std::string& url) {
      config::NatsConfig c;
      c.url = url;
      c.reconnect_wait = std::chrono::milliseconds(100);
      return c;
    }
    bus::NatsBus bus;
    bus::JetStream js;
    bus::JetStreamWorkQueue queue;
    bus::JetStreamChunkLog log;
  };

  Client& client(int index) {
    while (clients_.size() <= static_cast<std::size_t>(index)) {
      auto& c = clients_.emplace_back(std::make_unique<Client>(server_.nats_url(), options_, static_cast<int>(clients_.size())));
      if (!wait_until([&] { return c->js.ready(); })) throw std::runtime_error("JetStream never became ready");
    }
    return *clients_[static_cast<std::size_t>(index)];
  }

  bus::JetStreamOptions options_;
  ServerProcess server_{ServerProcess::Kind::nats};  // started with -js
  std::vector<std::unique_ptr<Client>> clients_;
};

}  // namespace chat::test
