// The conversation list: the user's sessions, newest first, each with its
// title and a delete button that asks once more before it deletes.

const CONFIRM_MS = 4000;

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
  // handlers: onSelect(sessionId), onDelete(sessionId) -> Promise
  constructor(listElement, emptyElement, handlers) {
    this.list = listElement;
    this.empty = emptyElement;
    this.handlers = handlers;
    this.sessions = [];
    this.currentId = null;
    this.list.addEventListener('click', (event) => this.click(event));
  }

  titleOf(sessionId) {
    const session = this.sessions.find((s) => s.session_id === sessionId);
    return session ? session.title || 'Untitled' : '';
  }

  has(sessionId) {
    return this.sessions.some((s) => s.session_id === sessionId);
  }

  show(sessions) {
    this.sessions = sessions;
    const focused = document.activeElement && this.list.contains(document.activeElement)
      ? document.activeElement.closest('li')?.dataset.sessionId
      : null;
    const items = sessions.map((session) => this.item(session));
    this.list.replaceChildren(...items);
    this.empty.hidden = sessions.length > 0;
    if (focused) this.list.querySelector(`li[data-session-id="${CSS.escape(focused)}"] .session-open`)?.focus();
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
