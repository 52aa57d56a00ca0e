// What this tab has received of a conversation's event stream, kept in
// sessionStorage so that a reload picks up exactly where it stopped: the
// cursor (the id of the last chunk event: "<message_id>:<chunk_id>") and the
// text so far of each reply still being written. The server resumes after the
// cursor; the page already holds everything up to it. One record per
// conversation, written after every chunk, so cursor and text always agree.

const PREFIX = 'chatd.stream.';

export class ResumeState {
  constructor(sessionId) {
    this.key = PREFIX + sessionId;
    this.cursor = '';
    this.replies = {}; // message_id -> {text, next}
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
    this.save();
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
    try {
      if (!this.cursor && Object.keys(this.replies).length === 0) sessionStorage.removeItem(this.key);
      else sessionStorage.setItem(this.key, JSON.stringify({ cursor: this.cursor, replies: this.replies }));
    } catch {
      // storage full or disabled: a reload then reloads from history instead
    }
  }

  // Every conversation's record (signing out: the next user must not find them).
  static removeAll() {
    try {
      for (const key of Object.keys(sessionStorage)) if (key.startsWith(PREFIX)) sessionStorage.removeItem(key);
    } catch {
      // nothing kept
    }
  }

  static remove(sessionId) {
    try {
      sessionStorage.removeItem(PREFIX + sessionId);
    } catch {
      // nothing kept
    }
  }
}
