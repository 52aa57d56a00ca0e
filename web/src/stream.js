// One conversation's event stream (GET /api/sse) on an EventSource.
//
// The browser reconnects by itself after a dropped connection and sends the
// last chunk id as Last-Event-ID, so the server resumes without gaps. It gives
// up only when the server answers with an error status (401, 403, 429, 503
// while a pod drains). Then the page asks the same URL once with fetch to learn
// the status and Retry-After, tells the app, and opens a new EventSource when
// it is worth it, with its own cursor in the query.

import { ApiError, parseRetryAfter } from './api.js';

const EVENTS = ['connected', 'chunk', 'message_complete', 'reset', 'ping', 'delayed'];
const MAX_BACKOFF_S = 15;

export class SessionStream {
  // handlers: onEvent(type, data, eventId), onOpen(), onTrouble(ApiError|null, retrying),
  // and cursor(): the cursor to resume from when a new EventSource is opened.
  constructor(api, sessionId, handlers) {
    this.api = api;
    this.sessionId = sessionId;
    this.handlers = handlers;
    this.source = null;
    this.retryTimer = null;
    this.failures = 0;
    this.stopped = false;
    // Bumped by stop(): a diagnosis begun before it must not open a second
    // EventSource beside the one a restart() opened meanwhile.
    this.generation = 0;
  }

  start() {
    this.stopped = false;
    this.open();
  }

  stop() {
    this.stopped = true;
    this.generation += 1;
    clearTimeout(this.retryTimer);
    if (this.source) this.source.close();
    this.source = null;
  }

  // A new EventSource right away (after sign-in, or when the user asks).
  restart() {
    this.stop();
    this.failures = 0;
    this.start();
  }

  open() {
    if (this.stopped) return;
    const source = new EventSource(this.api.streamUrl(this.sessionId, this.handlers.cursor()));
    this.source = source;
    for (const type of EVENTS) {
      source.addEventListener(type, (event) => this.dispatch(source, type, event));
    }
    // A server `error` event (a reply failed) and a broken connection arrive
    // under the same name; only the first carries data.
    source.addEventListener('error', (event) => {
      if (typeof event.data === 'string') this.dispatch(source, 'error', event);
      else this.broken(source);
    });
  }

  dispatch(source, type, event) {
    if (source !== this.source) return;
    let data;
    try {
      data = JSON.parse(event.data);
    } catch {
      return; // not one of ours
    }
    if (type === 'connected') {
      this.failures = 0;
      this.handlers.onOpen(data);
    }
    this.handlers.onEvent(type, data, event.lastEventId || '');
  }

  broken(source) {
    if (source !== this.source || this.stopped) return;
    if (source.readyState !== EventSource.CLOSED) {
      this.handlers.onTrouble(null, true); // the browser is reconnecting
      return;
    }
    this.source = null;
    this.failures += 1;
    const generation = this.generation;
    this.diagnose().then((error) => {
      if (this.stopped || generation !== this.generation) return;
      const retryable = !error || error.status === 0 || error.status === 429 || error.status >= 500;
      this.handlers.onTrouble(error, retryable);
      if (!retryable) return;
      const backoff = Math.min(MAX_BACKOFF_S, 2 ** Math.min(this.failures - 1, 4));
      const wait = error && error.retryAfter != null ? Math.max(error.retryAfter, 1) : backoff;
      this.retryTimer = setTimeout(() => this.open(), wait * 1000 * (0.8 + Math.random() * 0.4));
    });
  }

  // Why the server refused the stream: the same request with fetch, closed as
  // soon as its head is in. null: it would work now.
  async diagnose() {
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(), 10000);
    try {
      const response = await fetch(this.api.streamUrl(this.sessionId, this.handlers.cursor()), {
        headers: this.api.headers({ Accept: 'text/event-stream' }),
        cache: 'no-store',
        signal: controller.signal,
      });
      if (response.ok) return null;
      let body = {};
      try {
        body = (await response.json()).error || {};
      } catch {
        body = {};
      }
      return new ApiError({
        status: response.status,
        code: body.code || 'http_' + response.status,
        message: body.message || response.statusText,
        retryAfter: parseRetryAfter(response.headers.get('Retry-After')),
      });
    } catch {
      return new ApiError({ status: 0, code: 'network', message: 'the server could not be reached' });
    } finally {
      clearTimeout(timer);
      controller.abort();
    }
  }
}
