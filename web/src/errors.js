// What went wrong, said for people, and the banner that says it.

import { ApiError } from './api.js';

// Codes of a reply that ended badly (docs/API.md, "Providers" and "Buffering").
const REPLY_ERRORS = {
  unknown_provider: 'The server does not know this AI provider.',
  provider_not_configured: 'This AI provider is not set up on the server (it has no API key).',
  provider_auth_failed: 'The AI provider refused the server’s credentials.',
  model_not_found: 'The AI provider does not know this model.',
  rate_limited: 'The AI provider is limiting requests right now; try again in a moment.',
  provider_unavailable: 'The AI provider cannot be reached right now.',
  provider_timeout: 'The AI provider took too long to answer.',
  provider_bad_response: 'The AI provider sent an answer that could not be read.',
  content_filtered: 'The AI provider’s content filter stopped this reply.',
  worker_overloaded: 'The AI workers are overloaded; try again shortly.',
  retries_exhausted: 'The reply failed several times; try again.',
  chunks_missing: 'Part of this reply was lost on the way.',
  reply_timeout: 'This reply took too long and was cut off.',
  buffer_evicted: 'The server was too busy to finish this reply.',
  shutdown: 'The server restarted before this reply finished; send your message again.',
};

export function replyErrorText(code, message) {
  return REPLY_ERRORS[code] || (message ? 'The reply failed: ' + message : 'The reply failed.');
}

function seconds(n) {
  return n === 1 ? '1 second' : n + ' seconds';
}

// {kind, text, retryAfter} for an ApiError (or anything thrown) during `doing`
// ("sending your message").
export function describe(error, doing) {
  if (!(error instanceof ApiError)) {
    return { kind: 'internal', text: 'Something went wrong while ' + doing + '.', retryAfter: null };
  }
  const wait = error.retryAfter;
  switch (error.status) {
    case 0:
      return {
        kind: 'offline',
        text: error.code === 'timeout'
          ? 'The chat server did not answer in time while ' + doing + '.'
          : 'The chat server cannot be reached. Check that it is running; the page keeps trying.',
        retryAfter: null,
      };
    case 401:
      return { kind: 'unauthorized', text: 'You are signed out. Sign in again to continue.', retryAfter: null };
    case 403:
      return { kind: 'forbidden', text: 'This conversation belongs to another user.', retryAfter: null };
    case 404:
      return { kind: 'not_found', text: 'This conversation or reply no longer exists.', retryAfter: null };
    case 413:
      return { kind: 'invalid', text: 'The message is too long.', retryAfter: null };
    case 429: {
      // Which limit: the server's message names it (docs/SECURITY.md, rate limits).
      let text = 'You are sending too fast.' + (wait != null ? ' You can send again in {wait}.' : ' Wait a moment and try again.');
      if (/replies are running/.test(error.message)) {
        text = 'Another of your replies is still being written. Send again when it has finished.';
      } else if (/open streams/.test(error.message)) {
        text = 'Too many of your conversations are open at once (tabs or devices). Close one; this one reconnects by itself.';
      } else if (/this address/.test(error.message)) {
        text = 'Too many requests come from your network.' + (wait != null ? ' Try again in {wait}.' : ' Try again shortly.');
      }
      return { kind: 'rate_limited', text, retryAfter: wait };
    }
    case 503: {
      const restarting = /shutting down|draining/i.test(error.message);
      const what = restarting ? 'The chat server is restarting.' : 'The chat server is busy or one of its parts is down.';
      return { kind: 'unavailable', text: what + (wait != null ? ' Try again in {wait}.' : ' Try again shortly.'), retryAfter: wait };
    }
    default:
      if (error.status >= 500) {
        return { kind: 'unavailable', text: 'The chat server failed while ' + doing + '. Try again shortly.', retryAfter: wait };
      }
      return { kind: 'invalid', text: 'The server refused this: ' + error.message, retryAfter: null };
  }
}

// The banner at the top of the chat. A wait ({wait} in the text) counts down;
// when it reaches zero the banner goes and onExpired runs.
export class ErrorBanner {
  // onDismiss: the user closed the banner, or another took the place of its
  // countdown (what the wait held back need not wait any longer, unexplained).
  constructor(element, textElement, dismissButton, onDismiss = () => {}) {
    this.element = element;
    this.textElement = textElement;
    this.timer = null;
    this.kind = '';
    this.onDismiss = onDismiss;
    dismissButton.addEventListener('click', () => {
      this.clear();
      onDismiss();
    });
  }

  show({ kind, text, retryAfter = null }, onExpired = null) {
    const countdownReplaced = this.timer && kind !== this.kind;
    this.stopTimer();
    delete this.element.dataset.retryAfter;
    if (countdownReplaced) this.onDismiss();
    this.kind = kind;
    this.element.dataset.kind = kind;
    this.element.hidden = false;
    if (retryAfter == null || !text.includes('{wait}')) {
      this.textElement.textContent = text.replace(' {wait}', '');
      return;
    }
    // The banner is an alert, read out when it shows and again at each change
    // inside it: the countdown's aria-live="off" keeps its ticks quiet.
    const [before, after] = text.split('{wait}');
    const countdown = document.createElement('span');
    countdown.setAttribute('aria-live', 'off');
    this.textElement.replaceChildren(before, countdown, after);
    const until = Date.now() + retryAfter * 1000;
    const tick = () => {
      const left = Math.max(0, Math.ceil((until - Date.now()) / 1000));
      countdown.textContent = seconds(left);
      this.element.dataset.retryAfter = String(left);
      if (left === 0) {
        this.clear();
        if (onExpired) onExpired();
      }
    };
    tick();
    if (!this.element.hidden) this.timer = setInterval(tick, 1000);
  }

  // Removes the banner if it shows one of `kinds` (or any, without kinds).
  clear(...kinds) {
    if (kinds.length && !kinds.includes(this.kind)) return;
    this.stopTimer();
    this.kind = '';
    this.element.hidden = true;
    delete this.element.dataset.kind;
    delete this.element.dataset.retryAfter;
  }

  stopTimer() {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }
}
