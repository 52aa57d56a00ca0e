#include "client.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <stdexcept>

#include "util.hpp"

namespace lg {
namespace {

constexpr std::size_t kReadBuf = 64 * 1024;
constexpr std::size_t kMaxHead = 64 * 1024;
constexpr int kMaxEvents = 512;

std::string errno_text(const char* what) { return std::string(what) + ": " + std::strerror(errno); }

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && strncasecmp(a.data(), b.data(), a.size()) == 0;
}

bool icontains(std::string_view hay, std::string_view needle) {
  if (needle.size() > hay.size()) return false;
  for (std::size_t i = 0; i + needle.size() <= hay.size(); ++i)
    if (strncasecmp(hay.data() + i, needle.data(), needle.size()) == 0) return true;
  return false;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

}  // namespace

Loop::Loop() : ep_(epoll_create1(EPOLL_CLOEXEC)), buf_(new char[kReadBuf]) {
  if (ep_ < 0) throw std::runtime_error(errno_text("epoll_create1"));
}

Loop::~Loop() {
  ::close(ep_);
  delete[] buf_;
}

bool Loop::connect(Conn& c, std::uint16_t port) {
  if (c.open()) close(c);
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  if (c.source_ip != 0) {
    // The port is picked at connect(), per destination, not at bind().
    setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
    sockaddr_in local{};
    local.sin_family = AF_INET;
    local.sin_addr.s_addr = htonl(c.source_ip);
    if (::bind(fd, reinterpret_cast<sockaddr*>(&local), sizeof local) < 0) {
      int saved = errno;
      ::close(fd);
      errno = saved;
      return false;
    }
  }
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(port);
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) < 0 && errno != EINPROGRESS) {
    int saved = errno;
    ::close(fd);
    errno = saved;
    return false;
  }
  epoll_event ev{};
  ev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
  ev.data.ptr = &c;
  if (epoll_ctl(ep_, EPOLL_CTL_ADD, fd, &ev) < 0) {
    int saved = errno;
    ::close(fd);
    errno = saved;
    return false;
  }
  c.fd = fd;
  ++c.gen;
  c.connecting = true;  // completion (or failure) arrives as EPOLLOUT/EPOLLERR
  return true;
}

void Loop::reset_response(Conn& c) {
  c.headers_done = false;
  c.streaming = false;
  c.close_after = false;
  c.status = 0;
  c.mode = BodyMode::none;
  c.remaining = 0;
  c.chunk_state = 0;
  c.body.clear();
  c.ev_type.clear();
  c.ev_data.clear();
  c.ev_id.clear();
  c.ev_any = false;
}

void Loop::close(Conn& c, bool rst) {
  if (c.fd < 0) return;
  if (rst) {
    linger lg{1, 0};
    setsockopt(c.fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
  }
  ::close(c.fd);  // also removes it from the epoll set
  c.fd = -1;
  ++c.gen;
  c.connecting = false;
  c.out.clear();
  c.out_off = 0;
  c.in.clear();
  reset_response(c);
}

void Loop::fail(Conn& c, std::string_view why) {
  close(c);
  c.handler->on_close(c, why);
}

void Loop::send(Conn& c, std::string_view bytes) {
  c.out.append(bytes);
  if (c.open() && !c.connecting) flush(c);
}

void Loop::flush(Conn& c) {
  while (c.out_off < c.out.size()) {
    ssize_t n = ::send(c.fd, c.out.data() + c.out_off, c.out.size() - c.out_off, MSG_NOSIGNAL);
    if (n > 0) {
      c.out_off += static_cast<std::size_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;  // EPOLLOUT edge will follow
    fail(c, errno_text("send"));
    return;
  }
  c.out.clear();
  c.out_off = 0;
}

int Loop::poll(int timeout_ms) {
  epoll_event evs[kMaxEvents];
  int n = epoll_wait(ep_, evs, kMaxEvents, timeout_ms);
  if (n < 0) return 0;  // EINTR
  for (int i = 0; i < n; ++i) {
    Conn& c = *static_cast<Conn*>(evs[i].data.ptr);
    if (!c.open()) continue;  // closed earlier in this batch
    const std::uint64_t g = c.gen;
    const std::uint32_t e = evs[i].events;
    if (c.connecting) {
      if (!(e & (EPOLLOUT | EPOLLERR | EPOLLHUP))) continue;
      int err = 0;
      socklen_t len = sizeof err;
      getsockopt(c.fd, SOL_SOCKET, SO_ERROR, &err, &len);
      if (err != 0) {
        errno = err;
        fail(c, errno_text("connect"));
        continue;
      }
      c.connecting = false;
      c.handler->on_open(c);
      if (c.gen != g) continue;
      flush(c);
      if (c.gen != g) continue;
    } else if (e & EPOLLOUT) {
      flush(c);
      if (c.gen != g) continue;
    }
    if (e & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) on_readable(c);
  }
  return n;
}

void Loop::on_readable(Conn& c) {
  for (;;) {
    ssize_t n = ::recv(c.fd, buf_, kReadBuf, 0);
    if (n > 0) {
      c.recv_real_us = real_us();
      c.recv_mono_ns = mono_ns();
      c.in.append(buf_, static_cast<std::size_t>(n));
      if (!process(c, false)) return;
      continue;  // edge-triggered: read until EAGAIN
    }
    if (n == 0) {
      if (!process(c, true)) return;
      fail(c, c.headers_done || !c.in.empty() ? "eof mid-response" : "eof");
      return;
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return;
    fail(c, errno_text("recv"));
    return;
  }
}

bool Loop::parse_headers(Conn& c) {
  std::size_t end = c.in.find("\r\n\r\n");
  if (end == std::string::npos) {
    if (c.in.size() > kMaxHead) fail(c, "response head too large");
    return false;
  }
  std::string_view head(c.in.data(), end);
  std::size_t eol = head.find("\r\n");
  std::string_view status_line = head.substr(0, eol);
  if (status_line.size() < 12 || status_line.substr(0, 5) != "HTTP/" || status_line[8] != ' ') {
    fail(c, "bad status line");
    return false;
  }
  auto code = to_int(status_line.substr(9, 3));
  if (!code) {
    fail(c, "bad status code");
    return false;
  }
  c.status = static_cast<int>(*code);
  c.close_after = status_line.substr(5, 3) == "1.0";
  bool chunked = false, has_len = false;
  std::uint64_t len = 0;
  std::size_t pos = eol == std::string_view::npos ? head.size() : eol + 2;
  while (pos < head.size()) {
    std::size_t next = head.find("\r\n", pos);
    if (next == std::string_view::npos) next = head.size();
    std::string_view line = head.substr(pos, next - pos);
    pos = next + 2;
    std::size_t colon = line.find(':');
    if (colon == std::string_view::npos) continue;
    std::string_view name = trim(line.substr(0, colon)), value = trim(line.substr(colon + 1));
    if (iequals(name, "content-length")) {
      auto v = to_int(value);
      if (!v || *v < 0) {
        fail(c, "bad content-length");
        return false;
      }
      has_len = true;
      len = static_cast<std::uint64_t>(*v);
    } else if (iequals(name, "transfer-encoding")) {
      chunked = icontains(value, "chunked");
    } else if (iequals(name, "connection")) {
      if (icontains(value, "close")) c.close_after = true;
      if (icontains(value, "keep-alive")) c.close_after = false;
    }
  }
  c.in.erase(0, end + 4);
  c.headers_done = true;
  c.streaming = c.sse && c.status == 200;
  if (chunked) {
    c.mode = BodyMode::chunked;
    c.chunk_state = 0;
  } else if (has_len) {
    c.mode = len == 0 ? BodyMode::none : BodyMode::length;
    c.remaining = len;
  } else if (c.status == 204 || c.status == 304 || (c.status >= 100 && c.status < 200)) {
    c.mode = BodyMode::none;
  } else {
    c.mode = BodyMode::until_close;
    c.close_after = true;
  }
  return true;
}

bool Loop::decode_body(Conn& c, bool eof, bool& error) {
  switch (c.mode) {
    case BodyMode::none:
      return true;
    case BodyMode::length: {
      std::size_t take = static_cast<std::size_t>(std::min<std::uint64_t>(c.remaining, c.in.size()));
      c.body.append(c.in, 0, take);
      c.in.erase(0, take);
      c.remaining -= take;
      return c.remaining == 0;
    }
    case BodyMode::until_close:
      c.body.append(c.in);
      c.in.clear();
      return eof;
    case BodyMode::chunked:
      break;
  }
  std::size_t p = 0;
  bool complete = false;
  while (!complete) {
    if (c.chunk_state == 0) {  // size line
      std::size_t nl = c.in.find("\r\n", p);
      if (nl == std::string::npos) break;
      std::uint64_t size = 0;
      std::size_t i = p, ndig = 0;
      for (; i < nl; ++i, ++ndig) {
        char ch = c.in[i];
        int d = ch >= '0' && ch <= '9' ? ch - '0' : ch >= 'a' && ch <= 'f' ? ch - 'a' + 10 : ch >= 'A' && ch <= 'F' ? ch - 'A' + 10 : -1;
        if (d < 0) break;
        size = size * 16 + static_cast<std::uint64_t>(d);
      }
      if (ndig == 0 || ndig > 15) {
        error = true;
        return false;
      }
      p = nl + 2;
      if (size == 0) {
        c.chunk_state = 3;
      } else {
        c.remaining = size;
        c.chunk_state = 1;
      }
    } else if (c.chunk_state == 1) {  // data
      std::size_t take = static_cast<std::size_t>(std::min<std::uint64_t>(c.remaining, c.in.size() - p));
      c.body.append(c.in, p, take);
      p += take;
      c.remaining -= take;
      if (c.remaining > 0) break;
      c.chunk_state = 2;
    } else if (c.chunk_state == 2) {  // CRLF after data
      if (c.in.size() - p < 2) break;
      if (c.in[p] != '\r' || c.in[p + 1] != '\n') {
        error = true;
        return false;
      }
      p += 2;
      c.chunk_state = 0;
    } else {  // trailers up to an empty line
      std::size_t nl = c.in.find("\r\n", p);
      if (nl == std::string::npos) break;
      if (nl == p) complete = true;
      p = nl + 2;
    }
  }
  c.in.erase(0, p);
  return complete;
}

bool Loop::dispatch_events(Conn& c) {
  const std::uint64_t g = c.gen;
  std::size_t p = 0;
  for (;;) {
    std::size_t nl = c.body.find('\n', p);
    if (nl == std::string::npos) break;
    std::string_view line(c.body.data() + p, nl - p);
    p = nl + 1;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.empty()) {
      if (c.ev_any) {
        c.handler->on_event(c, c.ev_type.empty() ? std::string_view("message") : std::string_view(c.ev_type),
                            c.ev_data, c.ev_id);
        if (c.gen != g) return false;
      }
      c.ev_type.clear();
      c.ev_data.clear();
      c.ev_id.clear();
      c.ev_any = false;
      continue;
    }
    if (line.front() == ':') continue;  // comment
    std::size_t colon = line.find(':');
    std::string_view field = line.substr(0, colon), value;
    if (colon != std::string_view::npos) {
      value = line.substr(colon + 1);
      if (!value.empty() && value.front() == ' ') value.remove_prefix(1);
    }
    if (field == "event") {
      c.ev_type.assign(value);
      c.ev_any = true;
    } else if (field == "data") {
      if (c.ev_any && !c.ev_data.empty()) c.ev_data += '\n';
      c.ev_data.append(value);
      c.ev_any = true;
    } else if (field == "id") {
      c.ev_id.assign(value);
      c.ev_any = true;
    }
  }
  c.body.erase(0, p);
  return true;
}

bool Loop::process(Conn& c, bool eof) {
  const std::uint64_t g = c.gen;
  for (;;) {
    if (!c.headers_done) {
      if (!parse_headers(c)) return c.gen == g;
      c.handler->on_headers(c);
      if (c.gen != g) return false;
    }
    bool error = false;
    bool complete = decode_body(c, eof, error);
    if (error) {
      fail(c, "bad chunked framing");
      return false;
    }
    if (c.streaming) {
      if (!dispatch_events(c)) return false;
      if (complete) {
        fail(c, "event stream ended");
        return false;
      }
      return true;
    }
    if (!complete) return true;
    std::string body = std::move(c.body);
    bool close_after = c.close_after;
    c.handler->on_response(c, body);  // c.status still describes this response
    if (c.gen != g) return false;
    reset_response(c);
    if (close_after) {
      fail(c, "closed by server after response");
      return false;
    }
    if (c.in.empty()) return true;
  }
}

}  // namespace lg
