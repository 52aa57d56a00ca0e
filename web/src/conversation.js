// The messages of the open conversation: what history says, what streams in,
// and the list items that show them.
//
// A message is known by its id. History (GET .../messages) gives stored
// messages; chunk events grow replies still being written. A chunk is applied
// only if it is the next one of its reply, so a chunk delivered twice (after a
// resume) is never shown twice. A reply streamed here keeps the text it
// streamed; one that ended while the page was not listening, or whose stream
// was reset, takes the stored text from history.

import { renderMarkdown } from './markdown.js';
import { replyErrorText } from './errors.js';

const FINAL = new Set(['complete', 'cancelled', 'error']);
// How far this device's clock may be ahead of the server's, for telling a
// message just sent from an earlier one in the history (replaceLocalCopy).
const CLOCK_SKEW_MS = 60000;
const LOST_NOTE = 'This reply stopped arriving: the server may have restarted. If nothing more comes, send your message again.';

// Stored status -> what the page shows (incomplete replies are errors to a reader).
function shownStatus(stored) {
  if (stored === 'complete' || stored === 'cancelled') return stored;
  return 'error';
}

function storedNote(message) {
  if (message.status === 'cancelled') return 'Stopped';
  if (message.status === 'incomplete') {
    const code = (message.metadata || {}).error_code || '';
    return code && code !== 'chunks_missing' ? replyErrorText(code, '') : 'This reply is incomplete: part of it was lost.';
  }
  if (message.status === 'error') {
    const metadata = message.metadata || {};
    return replyErrorText(metadata.error_code || '', '');
  }
  return '';
}

class Message {
  constructor(id, role) {
    this.id = id;
    this.role = role;
    this.text = '';
    this.status = 'complete';
    this.next = 0; // the chunk id expected next
    this.streamedHere = false;
    this.stale = false; // its stream was reset: history has the truth once it ends
    this.lastEventAt = performance.now(); // its last chunk, or since when it waits for one
    this.createdAt = NaN; // when it was stored (history), ms since the epoch
    this.lost = false; // ended here as lost (see Conversation.endLost); history will not have it
    this.local = false; // shown before the server knew it (a user message being sent)
    this.storedCopy = null; // a local message's id in history, once a page showed it there
    this.shownAt = NaN; // a local message: when it was shown (ms since the epoch, this device's clock)
    this.renderTimer = null;

    this.element = document.createElement('li');
    this.element.className = 'message';
    this.element.dataset.testid = 'message';
    this.element.dataset.role = role;
    const author = document.createElement('p');
    author.className = 'message-author';
    author.textContent = role === 'user' ? 'You' : 'Assistant';
    this.body = document.createElement('div');
    this.body.className = role === 'user' ? 'message-body plain' : 'message-body markdown';
    this.body.dir = 'auto'; // Arabic or Hebrew text reads right to left
    this.body.dataset.testid = 'message-body';
    this.note = document.createElement('p');
    this.note.className = 'message-note';
    this.note.hidden = true;
    this.element.append(author, this.body, this.note);
    this.setId(id);
  }

  setId(id) {
    this.id = id;
    if (this.local) delete this.element.dataset.messageId;
    else this.element.dataset.messageId = id;
  }

  setStatus(status, note = '') {
    this.status = status;
    this.element.dataset.status = status;
    this.element.setAttribute('aria-busy', status === 'streaming' ? 'true' : 'false');
    this.note.textContent = note;
    this.note.hidden = note === '';
  }

  // Markdown is rendered at most every 50 ms while text streams in.
  render(now = false) {
    if (this.role === 'user') {
      this.body.textContent = this.text;
      return;
    }
    if (now) {
      clearTimeout(this.renderTimer);
      this.renderTimer = null;
      renderMarkdown(this.body, this.text);
      return;
    }
    if (this.renderTimer) return;
    this.renderTimer = setTimeout(() => this.render(true), 50);
  }
}

export class Conversation {
  // onChange(): something a running reply depends on changed (for the stop button)
  constructor(listElement, sessionId, resume, onChange) {
    this.list = listElement;
    this.sessionId = sessionId;
    this.resume = resume;
    this.onChange = onChange;
    this.messages = new Map();
    this.historyOrder = []; // stored messages, oldest first
    this.localOrder = []; // not (yet) in history: replies streaming, messages being sent
    this.nextBefore = null; // older history exists before this id
    this.fresh = false; // made here and nothing sent yet: the server has no history of it
    this.newestPageAskedAt = -Infinity; // when the newest page applied last was asked for
    this.list.replaceChildren();
  }

  get streaming() {
    return [...this.messages.values()].filter((m) => m.role === 'assistant' && m.status === 'streaming');
  }

  get isEmpty() {
    return this.messages.size === 0;
  }

  // Replies this tab was receiving when the page was left (resume state).
  restorePartials() {
    for (const [id, saved] of Object.entries(this.resume.replies)) {
      if (this.messages.has(id) || typeof saved.text !== 'string') {
        this.resume.finished(id); // it ended meanwhile: history showed it
        continue;
      }
      const message = this.add(id, 'assistant');
      message.text = saved.text;
      message.next = Number(saved.next) || 0;
      message.streamedHere = true;
      message.setStatus('streaming');
      message.render(true);
    }
    this.layout();
  }

  add(id, role, { local = false } = {}) {
    const message = new Message(id, role);
    message.local = local;
    message.setId(id);
    this.messages.set(id, message);
    this.localOrder.push(id);
    return message;
  }

  // A page of history, oldest first. `older`: a page before what is shown.
  // `requestedAt`: when it was asked for; user messages confirmed before
  // then are in it under their stored ids and the local copies go.
  // An answer older than one applied already (the newest page asked twice,
  // answered out of order) is left alone.
  applyHistory(page, { older = false, requestedAt = 0 } = {}) {
    if (!older) {
      if (requestedAt < this.newestPageAskedAt) return;
      this.newestPageAskedAt = requestedAt;
    }
    const ids = [];
    let newestUserMessage = null; // of those new to the page
    for (const stored of page.messages || []) {
      ids.push(stored.message_id);
      let message = this.messages.get(stored.message_id);
      if (!message) {
        message = new Message(stored.message_id, stored.role === 'user' ? 'user' : 'assistant');
        this.messages.set(stored.message_id, message);
        this.takeStored(message, stored);
        if (message.role === 'user') newestUserMessage = message;
        continue;
      }
      this.localOrder = this.localOrder.filter((id) => id !== stored.message_id);
      const finalHere = FINAL.has(message.status) && !message.stale;
      if (!finalHere) {
        this.takeStored(message, stored);
        this.resume.finished(message.id);
      }
    }
    for (const [id, message] of this.messages) {
      if (message.local && message.confirmedAt && message.confirmedAt <= requestedAt) this.drop(id);
    }
    if (newestUserMessage && !older) this.replaceLocalCopy(newestUserMessage);
    const inPage = new Set(ids);
    if (older) {
      this.historyOrder = ids.concat(this.historyOrder.filter((id) => !inPage.has(id)));
      this.nextBefore = page.next_before || null;
    } else {
      // Everything shown before that is not in the newest page is older than it.
      const earlier = this.historyOrder.filter((id) => !inPage.has(id));
      if (earlier.length === 0) this.nextBefore = page.next_before || null;
      this.historyOrder = earlier.concat(ids);
    }
    this.layout();
  }

  // When the oldest message shown was stored (ms since the epoch; NaN: none shown).
  oldestStoredAt() {
    const oldest = this.historyOrder.length ? this.messages.get(this.historyOrder[0]) : null;
    return oldest ? oldest.createdAt : NaN;
  }

  takeStored(message, stored) {
    message.createdAt = Date.parse(stored.created_at || '');
    message.lost = false;
    message.text = typeof stored.content === 'string' ? stored.content : '';
    message.stale = false;
    message.setStatus(shownStatus(stored.status), storedNote(stored));
    message.render(true);
  }

  layout() {
    const wanted = this.historyOrder.concat(this.localOrder).map((id) => this.messages.get(id).element);
    const current = [...this.list.children];
    if (wanted.length !== current.length || wanted.some((element, i) => element !== current[i])) {
      this.list.replaceChildren(...wanted);
    }
    this.onChange();
  }

  // A user message shown at once, before the server has it.
  addLocalUserMessage(text) {
    const message = this.add('local-' + Date.now() + '-' + Math.random().toString(36).slice(2), 'user', { local: true });
    message.shownAt = Date.now();
    message.text = text;
    message.setStatus('complete');
    message.render(true);
    this.layout();
    return message;
  }

  // The server took the message: its reply is `replyId`.
  confirmSent(local, replyId) {
    local.confirmedAt = performance.now();
    if (!this.messages.has(replyId)) {
      const reply = this.add(replyId, 'assistant');
      reply.setStatus('streaming');
      reply.streamedHere = true;
      reply.render(true);
      this.layout();
    }
  }

  dropLocal(local) {
    // Stored a moment and taken back: the server removes it when the chat is refused.
    if (local.storedCopy) this.drop(local.storedCopy);
    this.drop(local.id);
    this.onChange();
  }

  drop(id) {
    const message = this.messages.get(id);
    if (!message) return;
    this.messages.delete(id);
    this.localOrder = this.localOrder.filter((other) => other !== id);
    this.historyOrder = this.historyOrder.filter((other) => other !== id);
    message.element.remove();
  }

  // The message being sent, stored already, came in a history page asked for
  // before its 202 (its reply's first chunk can beat the 202 and fetches the
  // history): shown once, as stored. Only the page's newest user message, and
  // only if stored after the local copy was shown (give or take the clocks'
  // skew), can be it: an earlier message of the same text is not.
  replaceLocalCopy(stored) {
    for (const id of this.localOrder) {
      const local = this.messages.get(id);
      if (!local.local || local.text !== stored.text || !(stored.createdAt >= local.shownAt - CLOCK_SKEW_MS)) continue;
      local.storedCopy = stored.id;
      this.drop(local.id);
      return;
    }
  }

  // Returns true when the chunk named a reply this page did not know (another
  // tab or device asked for it): the caller then fetches the user's message.
  applyChunk(data, eventId) {
    const id = data.message_id;
    let message = this.messages.get(id);
    let unknown = false;
    if (!message) {
      // A reply that ended before the oldest message shown (a late join sends
      // replies of the last 30 s that no stream saw, and a script may have
      // posted many): it belongs before this page, where "Load earlier
      // messages" shows it, not after the newest message.
      const at = Date.parse(data.timestamp || '');
      if (this.nextBefore && at < this.oldestStoredAt()) return false;
      message = this.add(id, 'assistant');
      message.setStatus('streaming');
      this.layout();
      unknown = true;
    }
    if (FINAL.has(message.status) && !message.stale) return unknown; // ended already (history has it)
    if (data.chunk_id < message.next) return unknown; // a copy of a chunk already applied
    message.next = data.chunk_id + 1;
    message.lastEventAt = performance.now();
    message.lost = false;
    message.streamedHere = true;
    if (message.status !== 'streaming') message.setStatus('streaming');
    if ((data.chunk_type || 'content') === 'content' && typeof data.chunk === 'string') message.text += data.chunk;
    message.render();
    // A stale reply may have a gap: it takes history's text, and a reload must
    // not bring back this one as whole.
    if (!message.stale) this.resume.chunk(eventId, id, message.text, message.next);
    return unknown;
  }

  // Returns whether the error is news: a stream resumed on a reply's final
  // chunk gets its `error` again, for a reply shown ended already. One not
  // shown yet is news (its 202 may still be on the way).
  applyError(data) {
    const message = this.messages.get(data.message_id);
    if (!message) return true;
    if (FINAL.has(message.status) && !message.stale) return false;
    message.pendingNote = data.code === 'cancelled' ? 'Stopped' : replyErrorText(data.code, data.message);
    return true;
  }

  // Returns the message when it ended here; a stale one wants history.
  applyComplete(data) {
    const message = this.messages.get(data.message_id);
    if (!message || (FINAL.has(message.status) && !message.stale)) return null;
    const status = data.finish_reason === 'cancelled' ? 'cancelled' : shownStatus(data.status || 'complete');
    const note = message.pendingNote || (status === 'cancelled' ? 'Stopped' : status === 'error' ? replyErrorText('', '') : '');
    message.setStatus(status, note);
    message.render(true);
    this.resume.finished(message.id);
    this.onChange();
    return message;
  }

  // The stream could not give what was asked for: a named reply starts over
  // (a new attempt streams from chunk 0); otherwise every running reply may
  // have a gap and takes history's text when it ends.
  applyReset(data) {
    this.resume.forgetCursor();
    if (data.message_id) {
      // A reply that starts over; one this page does not know yet comes from chunk 0 like any other.
      const message = this.messages.get(data.message_id);
      if (!message) return;
      message.text = '';
      message.next = 0;
      message.stale = false;
      message.setStatus('streaming');
      message.render(true);
      this.resume.finished(message.id);
      return;
    }
    for (const running of this.streaming) {
      running.stale = true;
      running.lastEventAt = performance.now();
      this.resume.finished(running.id);
    }
  }

  // A `delayed` event: the server still waits for the reply's next chunk.
  heard(messageId) {
    const message = this.messages.get(messageId);
    if (message) message.lastEventAt = performance.now();
  }

  // The stream is back after a break: running replies get a fresh clock.
  restartQuietClock() {
    for (const message of this.streaming) message.lastEventAt = performance.now();
  }

  // Running replies that have heard nothing for `quietMs` since their stream
  // was reset or came back: the server may have lost them (it restarted). They
  // end here, so the user can send again, and stay stale: should they go on
  // after all, their chunks and history still apply. Returns whether any ended.
  endQuiet(quietMs) {
    const quiet = this.quiet(quietMs);
    for (const message of quiet) this.endLost(message);
    return quiet.length > 0;
  }

  // Running replies that have heard nothing for `quietMs`.
  quiet(quietMs) {
    const now = performance.now();
    return this.streaming.filter((m) => now - m.lastEventAt >= quietMs);
  }

  // A reply the server says it does not run (its cancel was 404) and that did not end.
  endLost(message) {
    if (message.status !== 'streaming') return;
    message.stale = true;
    message.lost = true;
    message.setStatus('error', LOST_NOTE);
    message.render(true);
    this.resume.finished(message.id);
    this.onChange();
  }
}
