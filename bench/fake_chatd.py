#!/usr/bin/env python3
"""A tiny stand-in for chatd, to check loadgen and run.sh without the real server.

Speaks the subset of docs/API.md#http-api the bench uses: GET /health, POST /api/chat
(202 + message_id, then a demo reply of FAKE_CHUNKS chunks, WORKER_DEMO_CHUNK_DELAY
apart, to every SSE stream of the session), GET /api/sse (connected, retry, chunk,
message_complete, ping). Env: SERVER_HOST, SERVER_PORT, WORKER_DEMO_CHUNK_DELAY
(0, 40ms, 1s), SSE_HEARTBEAT_INTERVAL (seconds), FAKE_CHUNKS (default 20),
FAKE_CHUNKED=1 to frame SSE bodies with Transfer-Encoding: chunked,
FAKE_FAULT=gap|dup to break chunk order now and then, =ahead to stamp chunks 50 ms in the
future (negative latencies), =mute to accept chats and never answer them (stalls, no latency
sample): to see loadgen and run.sh notice.
Not a benchmark target: it is single-threaded Python.
"""
import asyncio
import datetime
import itertools
import json
import os
import re
import time
import urllib.parse

HOST = os.environ.get("SERVER_HOST", "127.0.0.1")
PORT = int(os.environ.get("SERVER_PORT", "8080"))
CHUNKS = int(os.environ.get("FAKE_CHUNKS", "20"))
CHUNKED = os.environ.get("FAKE_CHUNKED") == "1"
FAULT = os.environ.get("FAKE_FAULT", "")
HEARTBEAT = float(os.environ.get("SSE_HEARTBEAT_INTERVAL", "10"))


def parse_delay(text):
    m = re.fullmatch(r"(\d+)(ms|s|us)?", text.strip())
    if not m:
        raise SystemExit(f"bad WORKER_DEMO_CHUNK_DELAY {text!r}")
    value, unit = int(m.group(1)), m.group(2) or "ms"
    return value / {"us": 1e6, "ms": 1e3, "s": 1.0}[unit]


DELAY = parse_delay(os.environ.get("WORKER_DEMO_CHUNK_DELAY", "40ms"))
streams = {}  # session_id -> set of writers
counter = itertools.count()
conn_counter = itertools.count()


def now_rfc3339(ahead=0.0):
    t = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=ahead)
    return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def frame(event, data, ev_id=None):
    head = f"id: {ev_id}\n" if ev_id else ""
    return (head + f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n").encode()


def wire(payload):
    if not CHUNKED:
        return payload
    return b"%x\r\n" % len(payload) + payload + b"\r\n"


def broadcast(session_id, payload):
    for w in list(streams.get(session_id, ())):
        try:
            w.write(wire(payload))
        except Exception:
            pass


async def generate(session_id, message_id):
    if FAULT == "mute":
        return
    ids = list(range(CHUNKS))
    if FAULT == "gap" and next(counter) % 7 == 0:
        ids.remove(CHUNKS // 2)
    if FAULT == "dup" and next(counter) % 7 == 0:
        ids.insert(3, 2)
    for i in ids:
        if DELAY:
            await asyncio.sleep(DELAY)
        elif i % 50 == 0:
            await asyncio.sleep(0)
        final = i == CHUNKS - 1
        chunk = {"session_id": session_id, "message_id": message_id, "chunk_id": i, "chunk": f"word{i} ",
                 "chunk_type": "content", "is_final": final, "timestamp": now_rfc3339(0.05 if FAULT == "ahead" else 0.0),
                 "correlation_id": "corr_fake"}
        if final:
            chunk["metadata"] = {"model": "demo", "tokens_used": CHUNKS, "finish_reason": "stop"}
        broadcast(session_id, frame("chunk", chunk, f"{message_id}:{i}"))
    broadcast(session_id, frame("message_complete",
                                {"message_id": message_id, "token_count": CHUNKS, "finish_reason": "stop"}))


def respond(writer, status, body, reason="OK"):
    data = json.dumps(body).encode()
    writer.write(f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
                 f"Content-Length: {len(data)}\r\n\r\n".encode() + data)


async def sse(writer, query):
    session_id = query.get("session_id", [""])[0]
    if not session_id or not query.get("user_id"):
        respond(writer, 400, {"error": {"code": "invalid_request", "message": "session_id is required"}}, "Bad Request")
        return False
    te = "Transfer-Encoding: chunked\r\n" if CHUNKED else ""
    writer.write(("HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
                  f"X-Accel-Buffering: no\r\n{te}\r\n").encode())
    writer.write(wire(b"retry: 3000\n\n"))
    writer.write(wire(frame("connected", {"connection_id": f"conn_{next(conn_counter)}", "session_id": session_id,
                                          "pod_id": "fake"})))
    streams.setdefault(session_id, set()).add(writer)
    try:
        while True:
            await asyncio.sleep(HEARTBEAT)
            writer.write(wire(frame("ping", {"timestamp": int(time.time())})))
            await writer.drain()
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        streams[session_id].discard(writer)
    return False


async def handle(reader, writer):
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode().split("\r\n")
            method, target, _ = lines[0].split(" ", 2)
            headers = {k.strip().lower(): v.strip() for k, v in (l.split(":", 1) for l in lines[1:] if ":" in l)}
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            url = urllib.parse.urlsplit(target)
            if url.path == "/health":
                respond(writer, 200, {"status": "healthy", "pod_id": "fake", "timestamp": int(time.time()),
                                      "active_connections": sum(len(s) for s in streams.values())})
            elif url.path == "/api/chat" and method == "POST":
                req = json.loads(body)
                message_id = f"msg_{next(counter)}"
                respond(writer, 202, {"message_id": message_id, "session_id": req["session_id"],
                                      "status": "accepted", "timestamp": now_rfc3339(),
                                      "correlation_id": "corr_fake"}, "Accepted")
                asyncio.get_running_loop().create_task(generate(req["session_id"], message_id))
            elif url.path == "/api/sse":
                # Watch for the client going away while the stream runs.
                task = asyncio.get_running_loop().create_task(sse(writer, urllib.parse.parse_qs(url.query)))
                await reader.read()
                task.cancel()
                return
            else:
                respond(writer, 404, {"error": {"code": "not_found", "message": url.path}}, "Not Found")
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError, ValueError):
        pass
    finally:
        writer.close()


async def main():
    server = await asyncio.start_server(handle, HOST, PORT, backlog=4096, limit=1 << 16)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
