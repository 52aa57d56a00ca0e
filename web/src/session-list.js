// The conversation list: the user's sessions, newest first, each with its
// title and a delete button that asks once more before it deletes.

const CONFIRM_MS = 4000;

// Whether session `a` is listed after `b`: older last message, then the lower
// id (the server's order; its times all have six decimals, so they compare as text).
function listedAfter(a, b) {
  if (a.last_message_at !== b.last_message_at) return a.last_message_at < b.last_message_at;
  return a.session_id < b.session_id;
}

function relativeTime(iso) {
  const then = Date.parse(iso);
  if (Number.isNaN(then)) return '';
  const minutes = Math.round((Date.now() - then) / 60000);
  if (minutes < 1) return 'just now';
  if (minutes < 60) return minutes + ' min ago';
  const hours = Math.round(minutes / 60);
  if (hours < 24) return hours + ' h ago';
  return new Date(then).toLocaleDateString();
}

export class SessionList {
  // handlers: onSelect(sessionId), onDelete(sessionId) -> Promise, onOlder()
  // (the user asked for the page at this.nextBefore)
  constructor(listElement, emptyElement, olderButton, handlers) {
    this.list = listElement;
    this.empty = emptyElement;
    this.olderButton = olderButton;
    this.handlers = handlers;
    this.sessions = [];
    this.expanded = false; // the user opened older pages
    this.nextBefore = null; // where the next older page starts (none: all are listed)
    this.currentId = null;
    this.list.addEventListener('click', (event) => this.click(event));
    olderButton.addEventListener('click', () => this.handlers.onOlder());
  }

  // The newest page (GET /api/sessions) replaces the list. Once the user has
  // opened older pages, what was listed after the new page's end stays (those
  // pushed down out of it too), and the older pages' cursor with it.
  showNewest({ sessions = [], next_before: nextBefore = null }) {
    let tail = [];
    if (this.expanded && nextBefore && sessions.length) {
      const last = sessions[sessions.length - 1];
      const listed = new Set(sessions.map((s) => s.session_id));
      tail = this.sessions.filter((s) => !listed.has(s.session_id) && listedAfter(s, last));
    }
    if (!tail.length) {
      this.expanded = false;
      this.nextBefore = nextBefore;
    }
    this.show([...sessions, ...tail]);
  }

  // Deleted here: gone before the newest page is read again.
  forget(sessionId) {
    this.sessions = this.sessions.filter((s) => s.session_id !== sessionId);
  }

  // An older page, asked for with this.nextBefore. The focus, on the button
  // that may now hide, goes to the first conversation the page added.
  showOlder({ sessions = [], next_before: nextBefore = null }) {
    const listed = new Set(this.sessions.map((s) => s.session_id));
    const added = sessions.filter((s) => !listed.has(s.session_id));
    const hadFocus = document.activeElement === this.olderButton;
    this.expanded = true;
    this.nextBefore = nextBefore;
    this.show([...this.sessions, ...added]);
    if (hadFocus && added.length) this.focusItem(added[0].session_id);
  }

  focusItem(sessionId) {
    this.list.querySelector(`li[data-session-id="${CSS.escape(sessionId)}"] .session-open`)?.focus();
  }

  titleOf(sessionId) {
    const session = this.sessions.find((s) => s.session_id === sessionId);
    return session ? session.title || 'Untitled' : '';
  }

  has(sessionId) {
    return this.sessions.some((s) => s.session_id === sessionId);
  }

  // The focus stays on its conversation, or (that one deleted) on the one
  // now in its place, so a keyboard user is not sent back to the page's top.
  show(sessions) {
    const focusedItem = document.activeElement && this.list.contains(document.activeElement)
      ? document.activeElement.closest('li')
      : null;
    const focusedAt = focusedItem ? [...this.list.children].indexOf(focusedItem) : -1;
    this.sessions = sessions;
    const items = sessions.map((session) => this.item(session));
    this.list.replaceChildren(...items);
    this.empty.hidden = sessions.length > 0;
    this.olderButton.hidden = !this.nextBefore;
    if (!focusedItem) return;
    const id = focusedItem.dataset.sessionId;
    if (sessions.some((s) => s.session_id === id)) this.focusItem(id);
    else if (sessions.length) this.focusItem(sessions[Math.min(focusedAt, sessions.length - 1)].session_id);
    else document.getElementById('new-chat')?.focus();
  }

  item(session) {
    const li = document.createElement('li');
    li.className = 'session-item';
    li.dataset.testid = 'session-item';
    li.dataset.sessionId = session.session_id;
    const open = document.createElement('button');
    open.type = 'button';
    open.className = 'session-open';
    const title = document.createElement('span');
    title.className = 'session-title';
    title.textContent = session.title || 'Untitled';
    const when = document.createElement('span');
    when.className = 'session-when';
    when.textContent = relativeTime(session.last_message_at || session.updated_at);
    open.append(title, when);
    if (session.session_id === this.currentId) {
      li.classList.add('current');
      open.setAttribute('aria-current', 'page');
    }
    const remove = document.createElement('button');
    remove.type = 'button';
    remove.className = 'session-delete';
    remove.dataset.testid = 'session-delete';
    remove.setAttribute('aria-label', 'Delete conversation: ' + (session.title || 'Untitled'));
    remove.textContent = '×';
    li.append(open, remove);
    return li;
  }

  select(sessionId) {
    this.currentId = sessionId;
    for (const li of this.list.children) {
      const current = li.dataset.sessionId === sessionId;
      li.classList.toggle('current', current);
      const open = li.querySelector('.session-open');
      if (current) open.setAttribute('aria-current', 'page');
      else open.removeAttribute('aria-current');
    }
  }

  click(event) {
    const li = event.target.closest('li.session-item');
    if (!li) return;
    const sessionId = li.dataset.sessionId;
    const remove = event.target.closest('button.session-delete');
    if (!remove) {
      this.handlers.onSelect(sessionId);
      return;
    }
    if (!remove.classList.contains('confirm')) {
      remove.classList.add('confirm');
      remove.textContent = 'Delete?';
      remove.setAttribute('aria-label', 'Press again to delete: ' + this.titleOf(sessionId));
      setTimeout(() => {
        if (!remove.isConnected) return;
        remove.classList.remove('confirm');
        remove.textContent = '×';
        remove.setAttribute('aria-label', 'Delete conversation: ' + this.titleOf(sessionId));
      }, CONFIRM_MS);
      return;
    }
    remove.disabled = true;
    this.handlers.onDelete(sessionId).finally(() => {
      remove.disabled = false;
    });
  }
}
