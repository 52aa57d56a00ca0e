// The chatd HTTP API as the page uses it (docs/API.md). Every failure becomes
// an ApiError carrying the status, the server's error code and, for 429 and
// 503, how long to wait.

const REQUEST_TIMEOUT_MS = 20000;

export class ApiError extends Error {
  constructor({ status, code, message, retryAfter = null }) {
    super(message);
    this.name = 'ApiError';
    this.status = status; // 0: the server could not be reached
    this.code = code;
    this.retryAfter = retryAfter; // seconds, or null
  }
}

// Retry-After is seconds or an HTTP date; at least a second, so that a wait
// of 0 (or a date already past) still shows.
export function parseRetryAfter(value) {
  if (!value) return null;
  if (/^\d+$/.test(value.trim())) return Math.max(1, Number(value.trim()));
  const at = Date.parse(value);
  return Number.isNaN(at) ? null : Math.max(1, Math.ceil((at - Date.now()) / 1000));
}

// A session id the page makes itself while the server cannot (no POST
// /api/sessions), shaped like the server's: 'w_' and 21 base64url characters
// (126 random bits), 23 in all, the most a stream keeps without a heap block.
export function newLocalSessionId() {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  const base64url = btoa(String.fromCharCode(...bytes)).replace(/\+/g, '-').replace(/\//g, '_');
  return 'w_' + base64url.slice(0, 21);
}

export class Api {
  constructor(identity) {
    this.identity = identity;
    this.serverMakesSessions = null; // unknown until POST /api/sessions was tried
  }

  headers(extra = {}) {
    const headers = { Accept: 'application/json', ...extra };
    if (this.identity.token) headers.Authorization = 'Bearer ' + this.identity.token;
    return headers;
  }

  url(path, query = {}, { asUser = true } = {}) {
    const url = new URL(path, window.location.origin);
    const user = this.identity.requestUserId;
    if (asUser && user) url.searchParams.set('user_id', user);
    for (const [key, value] of Object.entries(query)) {
      if (value !== undefined && value !== null && value !== '') url.searchParams.set(key, String(value));
    }
    return url;
  }

  async call(method, path, { query, body, asUser = true } = {}) {
    const init = { method, headers: this.headers(), cache: 'no-store', signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS) };
    if (body !== undefined) {
      init.headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(this.url(path, query, { asUser }), init);
    } catch (e) {
      const timedOut = e && e.name === 'TimeoutError';
      throw new ApiError({
        status: 0,
        code: timedOut ? 'timeout' : 'network',
        message: timedOut ? 'the server did not answer in time' : 'the server could not be reached',
      });
    }
    const text = await response.text().catch(() => '');
    let json = null;
    try {
      json = text ? JSON.parse(text) : null;
    } catch {
      json = null;
    }
    if (!response.ok) {
      const error = json && typeof json.error === 'object' && json.error ? json.error : {};
      throw new ApiError({
        status: response.status,
        code: typeof error.code === 'string' ? error.code : 'http_' + response.status,
        message: typeof error.message === 'string' ? error.message : response.statusText || 'request failed',
        retryAfter: parseRetryAfter(response.headers.get('Retry-After')),
      });
    }
    return json;
  }

  info() {
    return this.call('GET', '/api', { asUser: false });
  }

  providers() {
    return this.call('GET', '/api/providers', { asUser: false });
  }

  // The newest conversations, or (with `before`, a page's next_before) those after that page.
  sessions(before = null) {
    return this.call('GET', '/api/sessions', { query: before ? { limit: 100, before } : { limit: 100 } });
  }

  messages(sessionId, { before, limit = 50 } = {}) {
    return this.call('GET', '/api/sessions/' + encodeURIComponent(sessionId) + '/messages', { query: { limit, before } });
  }

  deleteSession(sessionId) {
    return this.call('DELETE', '/api/sessions/' + encodeURIComponent(sessionId));
  }

  // A new conversation's id: from the server when it makes them (POST
  // /api/sessions), else made here. A route that is not there is remembered.
  async newSessionId() {
    if (this.serverMakesSessions !== false) {
      try {
        const created = await this.call('POST', '/api/sessions', { body: this.bodyUser({}) });
        const id = created && (created.session_id || created.id);
        if (typeof id === 'string' && id) {
          this.serverMakesSessions = true;
          return id;
        }
        this.serverMakesSessions = false;
      } catch (e) {
        // 404/405: no such route (yet); 400/415: one this page does not know how to call.
        if (!(e instanceof ApiError) || ![400, 404, 405, 415].includes(e.status)) throw e;
        this.serverMakesSessions = false;
      }
    }
    return newLocalSessionId();
  }

  bodyUser(body) {
    const user = this.identity.requestUserId;
    return user ? { ...body, user_id: user } : body;
  }

  // The JSON body of POST /api/chat.
  chatBody({ sessionId, message, provider, model }) {
    const body = this.bodyUser({ session_id: sessionId, message });
    if (provider) body.ai_provider = provider;
    if (model) body.model = model;
    return body;
  }

  chat(request) {
    return this.call('POST', '/api/chat', { body: this.chatBody(request) });
  }

  cancel(messageId, sessionId) {
    return this.call('POST', '/api/chat/' + encodeURIComponent(messageId) + '/cancel', { query: { session_id: sessionId } });
  }

  // The event stream URL: EventSource cannot send headers, so the token goes
  // in the query (access_token) and the resume cursor too (last_event_id).
  streamUrl(sessionId, cursor) {
    const query = { session_id: sessionId, last_event_id: cursor };
    if (this.identity.token) query.access_token = this.identity.token;
    return this.url('/api/sse', query);
  }
}
