#include "bus/bus_work_queue.hpp"

#include "protocol/subjects.hpp"

namespace chat::bus {
namespace {

class BusWorkItem final : public WorkItem {
 public:
  BusWorkItem(MessageBus& bus, std::string subject, std::string payload, Headers headers)
      : bus_(bus), subject_(std::move(subject)), payload_(std::move(payload)), headers_(std::move(headers)) {}

  std::string_view payload() const override { return payload_; }
  std::string_view subject() const override { return subject_; }
  std::string header(std::string_view key) const override { return std::string(header_value(headers_, key)); }
  unsigned attempt() const override { return 1; }
  bool final_attempt() const override { return true; }
  void in_progress() override {}
  void ack() override {}
  void give_back() override { bus_.publish(subject_, payload_, headers_, {}); }

 private:
  MessageBus& bus_;
  std::string subject_;
  std::string payload_;
  Headers headers_;
};

}  // namespace

void BusWorkQueue::submit(std::string subject, std::string payload, std::string, Headers headers, PublishCallback done) {
  bus_.publish(std::move(subject), std::move(payload), std::move(headers), std::move(done));
}

std::unique_ptr<Subscription> BusWorkQueue::consume(FreeSlots, WorkHandler handler) {
  // Pushed, not pulled: the worker keeps its own bounded queue for a burst.
  return bus_.subscribe(std::string(subjects::kAllExecute), std::string(subjects::kWorkerQueueGroup),
                        [this, handler = std::move(handler)](const Message& m) {
                          handler(std::make_unique<BusWorkItem>(bus_, std::string(m.subject), std::string(m.payload), m.headers));
                        });
}

}  // namespace chat::bus
