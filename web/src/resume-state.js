// What this tab has received of a conversation's event stream, kept in
// sessionStorage so that a reload picks up exactly where it stopped: the
// cursor (the id of the last chunk event: "<message_id>:<chunk_id>") and the
// text so far of each reply still being written. The server resumes after the
// cursor; the page already holds everything up to it. One record per
// conversation, cursor and text always written together, so they agree.
//
// Chunks are written at most every SAVE_EVERY_MS, not each one: every write
// serializes the whole text, which per chunk is quadratic in a long reply.
// Leaving or hiding the page writes what is pending, and a record a moment
// old is still exact: the server resumes after its cursor.

const PREFIX = 'chatd.stream.';
const SAVE_EVERY_MS = 250;
const unsaved = new Set(); // states with chunks not written yet

function saveAll() {
  for (const state of [...unsaved]) state.save();
}
window.addEventListener('pagehide', saveAll);
document.addEventListener('visibilitychange', () => {
  if (document.visibilityState === 'hidden') saveAll();
});

export class ResumeState {
  constructor(sessionId) {
    this.key = PREFIX + sessionId;
    this.cursor = '';
    this.replies = {}; // message_id -> {text, next}
    this.saveTimer = null;
    // The conversation shown again before its last chunks were written.
    for (const state of [...unsaved]) if (state.key === this.key) state.save();
    try {
      const saved = JSON.parse(sessionStorage.getItem(this.key) || 'null');
      if (saved && typeof saved === 'object') {
        this.cursor = typeof saved.cursor === 'string' ? saved.cursor : '';
        this.replies = saved.replies && typeof saved.replies === 'object' ? saved.replies : {};
      }
    } catch {
      // a damaged record is as good as none
    }
  }

  chunk(cursor, messageId, text, next) {
    this.cursor = cursor || this.cursor;
    this.replies[messageId] = { text, next };
    if (this.saveTimer !== null) return;
    unsaved.add(this);
    this.saveTimer = setTimeout(() => this.save(), SAVE_EVERY_MS);
  }

  finished(messageId) {
    if (!(messageId in this.replies)) return;
    delete this.replies[messageId];
    this.save();
  }

  // After a reset the cursor cannot be served any more.
  forgetCursor() {
    this.cursor = '';
    this.save();
  }

  save() {
    clearTimeout(this.saveTimer);
    this.saveTimer = null;
    unsaved.delete(this);
    try {
      if (!this.cursor && Object.keys(this.replies).length === 0) sessionStorage.removeItem(this.key);
      else sessionStorage.setItem(this.key, JSON.stringify({ cursor: this.cursor, replies: this.replies }));
    } catch {
      // storage full or disabled: a reload then reloads from history instead
    }
  }

  // A pending write would bring back a record removed meanwhile.
  static dropUnsaved(key) {
    for (const state of [...unsaved]) {
      if (key !== undefined && state.key !== key) continue;
      clearTimeout(state.saveTimer);
      state.saveTimer = null;
      unsaved.delete(state);
    }
  }

  // Every conversation's record (signing out: the next user must not find them).
  static removeAll() {
    ResumeState.dropUnsaved();
    try {
      for (const key of Object.keys(sessionStorage)) if (key.startsWith(PREFIX)) sessionStorage.removeItem(key);
    } catch {
      // nothing kept
    }
  }

  static remove(sessionId) {
    ResumeState.dropUnsaved(PREFIX + sessionId);
    try {
      sessionStorage.removeItem(PREFIX + sessionId);
    } catch {
      // nothing kept
    }
  }
}
