#pragma once
// Drives a hiredis (0.14) async context from Boost.Asio, in the manner of
// hiredis's own adapters (adapters/libevent.h): hiredis asks for read/write
// readiness through its ev hooks, and we answer by calling
// redisAsyncHandleRead/Write when the socket is ready.
//
// Readiness is observed with posix::stream_descriptor::async_wait on the given
// strand, so every hiredis call, and therefore every reply callback, runs on
// that strand. hiredis owns the socket: at cleanup the descriptor is
// release()d, never closed by Asio, and hiredis closes it itself.

#include <hiredis/async.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/strand.hpp>

namespace chat::registry {

using RedisStrand = boost::asio::strand<boost::asio::io_context::executor_type>;

// Call on `strand`, right after redisAsyncConnect and before
// redisAsyncSetConnectCallback (which asks for the first write event). Returns
// false when the context already has an event adapter.
bool attach_to_asio(redisAsyncContext* context, const RedisStrand& strand);

}  // namespace chat::registry
