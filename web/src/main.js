// The chat page: wires the conversation list, the open conversation, its
// event stream and the composer to the chatd API. No framework: the page is
// small, and every piece of state has one owner (see the modules it imports).

import { Api, ApiError } from './api.js';
import { ID_PATTERN, Identity, userIdFromName } from './identity.js';
import { ErrorBanner, describe, replyErrorText } from './errors.js';
import { Conversation } from './conversation.js';
import { SessionList } from './session-list.js';
import { SessionStream } from './stream.js';
import { ResumeState } from './resume-state.js';
import { handleCopyClick } from './markdown.js';
import { MessageLimits, jsonBytes } from './message-limits.js';

// The width below which the conversation list is a drawer (styles.css says the same).
const NARROW_SCREEN = '(max-width: 759px)';

const PROVIDER_KEY = 'chatd.provider';
const MODEL_KEY = 'chatd.model';
const RECONNECT_NOTICE_MS = 2500; // a quick reconnect (a pod handing off) is not worth a banner
const STORED_REPLY_TRIES = 10;
// A reply that hears nothing this long after its stream was reset or came back
// is taken as lost (the server restarted without it); checked every QUIET_CHECK_MS.
const LOST_REPLY_MS = 30000;
const QUIET_CHECK_MS = 5000;
// A reply can end where this stream never hears of it: on the server that
// accepted it, before any chunk of it came (given up for want of a worker),
// when that is not the server this stream is on. While a running reply hears
// nothing this long, the stored history is asked again, every as long.
const SILENT_REPLY_MS = 30000;
// A cancel answered 404 for a reply still shown running: its last events get
// this long to arrive before the page takes it as lost.
const CANCEL_GRACE_MS = 3000;
// How long a message waits for its conversation's stream to connect before it goes anyway.
const STREAM_WAIT_MS = 5000;

const $ = (id) => document.getElementById(id);

// Who is signed in (name or token), as one comparable value.
function identityKey(identity) {
  return identity.userId + '\n' + identity.token;
}

function remembered(key) {
  try {
    return localStorage.getItem(key) || '';
  } catch {
    return '';
  }
}

function remember(key, value) {
  try {
    if (value) localStorage.setItem(key, value);
    else localStorage.removeItem(key);
  } catch {
    // this load only
  }
}

class App {
  constructor() {
    this.identity = new Identity();
    this.api = new Api(this.identity);
    // A dismissed wait no longer holds Send back: the server says again if it is too soon.
    this.banner = new ErrorBanner($('error-banner'), $('error-text'), $('error-dismiss'), () => {
      this.sendBlockedUntil = 0;
      this.updateControls();
    });
    this.limits = new MessageLimits();
    this.composerProblem = null; // why the message in the composer cannot go (its size)
    this.sessions = new SessionList($('session-list'), $('session-empty'), $('older-sessions'), {
      onSelect: (id) => this.navigate(id),
      onDelete: (id) => this.deleteSession(id),
      onOlder: () => this.showOlderSessions(),
    });
    this.sessionId = null;
    this.conversation = null;
    this.stream = null;
    this.streamDown(); // this.connected: the open conversation's stream, see streamDown()
    this.sending = false;
    this.stopping = false;
    this.sendBlockedUntil = 0;
    this.deleting = new Set(); // conversations this tab is deleting: their end is no surprise
    this.historyTimer = null;
    this.historyTries = 0;
    this.troubleTimer = null;
    this.quietTimer = null;
    this.silentTimer = null;
    this.shownAs = null; // the identity whose conversations the page shows
    this.stickToBottom = true;
  }

  async start() {
    this.bind();
    await this.loadInfo();
    if (!this.identity.signedIn) await this.signIn('');
    $('who').textContent = this.identity.displayName;
    this.shownAs = identityKey(this.identity);
    this.loadProviders();
    await this.refreshSessions();
    this.route();
  }

  bind() {
    const composer = $('composer');
    $('composer-form').addEventListener('submit', (event) => {
      event.preventDefault();
      this.send();
    });
    composer.addEventListener('keydown', (event) => {
      if (event.key === 'Enter' && !event.shiftKey && !event.isComposing) {
        event.preventDefault();
        this.send();
      } else if (event.key === 'Escape' && this.conversation && this.conversation.streaming.length) {
        event.preventDefault();
        this.stop();
      }
    });
    composer.addEventListener('input', () => this.composerChanged());
    $('stop').addEventListener('click', () => this.stop());
    $('new-chat').addEventListener('click', () => {
      this.navigate(null);
      composer.focus();
    });
    $('switch-user').addEventListener('click', () => {
      this.identity.signOut();
      this.closeConversation(); // first: a chunk still coming would save its record again
      ResumeState.removeAll();
      window.location.assign(window.location.pathname);
    });
    // Back after Switch brings this page from the browser's back/forward cache
    // as the user left it: another user's conversations. Load it afresh when
    // the one signed in now (or nobody) is not the one it shows.
    window.addEventListener('pageshow', (event) => {
      if (!event.persisted) return;
      if (identityKey(new Identity()) !== this.shownAs) window.location.reload();
    });
    $('load-earlier').addEventListener('click', () => this.loadEarlier());
    $('message-list').addEventListener('click', handleCopyClick);
    $('menu-toggle').addEventListener('click', () => this.toggleSidebar());
    $('sidebar-scrim').addEventListener('click', () => this.toggleSidebar(false));
    $('sidebar-close').addEventListener('click', () => this.toggleSidebar(false));
    document.addEventListener('keydown', (event) => {
      if (event.key === 'Escape' && $('app').classList.contains('sidebar-open')) this.toggleSidebar(false);
    });
    // A screen that grows past the phone layout shows the list beside the
    // conversation: no drawer left open over it.
    window.matchMedia(NARROW_SCREEN).addEventListener('change', (event) => {
      if (!event.matches) this.toggleSidebar(false);
    });
    window.addEventListener('popstate', () => this.route());

    const messages = $('messages');
    messages.addEventListener('scroll', () => {
      this.stickToBottom = messages.scrollHeight - messages.scrollTop - messages.clientHeight < 80;
    });
    new ResizeObserver(() => {
      if (this.stickToBottom) messages.scrollTop = messages.scrollHeight;
    }).observe($('message-list'));

    const provider = $('provider');
    provider.addEventListener('change', () => {
      remember(PROVIDER_KEY, provider.value);
      this.showDefaultModel();
    });
    $('model').addEventListener('change', () => remember(MODEL_KEY, $('model').value.trim()));
    $('model').addEventListener('input', () => this.composerChanged()); // the body's size
    provider.addEventListener('change', () => this.composerChanged());
  }

  // GET /api: how this server authenticates. Until it answers, nothing else can.
  async loadInfo() {
    for (;;) {
      try {
        const info = await this.api.info();
        this.identity.setAuthMode(info && info.auth_mode);
        this.limits.set(info && info.limits);
        this.composerChanged();
        this.banner.clear('offline', 'unavailable');
        return;
      } catch (e) {
        if (e instanceof ApiError && e.status === 401) {
          this.identity.setAuthMode('jwt');
          return;
        }
        if (e instanceof ApiError && e.status === 404) return; // a chatd without /api: no authentication
        this.banner.show(describe(e, 'loading the page'));
        await new Promise((resolve) => setTimeout(resolve, Math.max(3, e.retryAfter || 0) * 1000));
      }
    }
  }

  // The sign-in dialog: a user name (AUTH_MODE=none) or an access token (jwt).
  signIn(reason) {
    const dialog = $('sign-in');
    const jwt = this.identity.authMode === 'jwt';
    $('name-field').hidden = jwt;
    $('token-field').hidden = !jwt;
    $('sign-in-title').textContent = jwt ? 'Sign in' : 'Welcome';
    $('sign-in-reason').textContent = reason || (jwt ? 'Paste the access token you were given.' : 'What should we call you?');
    $('sign-in-error').textContent = '';
    const input = jwt ? $('sign-in-token') : $('sign-in-name');
    input.value = jwt ? '' : this.identity.userId;
    return new Promise((resolve) => {
      const form = $('sign-in-form');
      const submit = (event) => {
        event.preventDefault();
        const value = input.value.trim();
        if (jwt) {
          if (value.split('.').length !== 3) {
            $('sign-in-error').textContent = 'That does not look like a token (three parts separated by dots).';
            return;
          }
          this.identity.useToken(value);
        } else if (!ID_PATTERN.test(userIdFromName(value)) || !this.identity.useName(value)) {
          $('sign-in-error').textContent = 'Use letters, digits, - or _ (at most 128).';
          return;
        }
        form.removeEventListener('submit', submit);
        dialog.removeEventListener('cancel', refuse);
        dialog.close();
        $('who').textContent = this.identity.displayName;
        this.shownAs = identityKey(this.identity);
        resolve();
      };
      const refuse = (event) => event.preventDefault(); // the page cannot work without it
      form.addEventListener('submit', submit);
      dialog.addEventListener('cancel', refuse);
      if (!dialog.open) dialog.showModal();
      input.focus();
    });
  }

  // 401 anywhere: the token is no longer good.
  async signInAgain() {
    if (this.signingIn) return this.signingIn;
    this.identity.forgetToken();
    if (this.identity.authMode !== 'jwt') this.identity.setAuthMode('jwt');
    this.signingIn = this.signIn('You are signed out. Sign in again to continue.').then(() => {
      this.signingIn = null;
      this.banner.clear('unauthorized');
      this.refreshSessions();
      if (this.stream) this.stream.restart();
    });
    return this.signingIn;
  }

  showApiError(error, doing) {
    const problem = describe(error, doing);
    if (problem.kind === 'unauthorized') this.signInAgain();
    // First the banner: replacing another countdown lifts that one's block.
    this.banner.show(problem, () => this.updateControls());
    if (problem.kind === 'rate_limited' && problem.retryAfter) {
      this.sendBlockedUntil = Date.now() + problem.retryAfter * 1000;
    }
    this.updateControls();
  }

  async loadProviders() {
    const select = $('provider');
    let answer = null;
    try {
      answer = await this.api.providers();
    } catch {
      answer = null; // the server's default provider answers
    }
    const providers = (answer && Array.isArray(answer.providers)) ? answer.providers : [];
    this.providers = providers;
    const options = providers.map((p) => {
      const option = document.createElement('option');
      option.value = p.name;
      option.textContent = p.name;
      return option;
    });
    if (options.length === 0) {
      const option = document.createElement('option');
      option.value = '';
      option.textContent = 'default';
      options.push(option);
    }
    select.replaceChildren(...options);
    const saved = remembered(PROVIDER_KEY);
    const fallback = answer && answer.default_provider;
    select.value = providers.some((p) => p.name === saved) ? saved : fallback || (providers[0] && providers[0].name) || '';
    $('model').value = remembered(MODEL_KEY);
    this.showDefaultModel();
  }

  showDefaultModel() {
    const chosen = (this.providers || []).find((p) => p.name === $('provider').value);
    const model = chosen && chosen.default_model;
    $('model').placeholder = model ? model + ' (default)' : 'default model';
    const suggestion = document.createElement('option');
    suggestion.value = model || '';
    $('model-suggestions').replaceChildren(...(model ? [suggestion] : []));
  }

  async refreshSessions() {
    try {
      this.sessions.showNewest(await this.api.sessions());
      this.banner.clear('offline');
      if (this.sessionId && this.sessions.has(this.sessionId)) this.setTitle(this.sessions.titleOf(this.sessionId));
    } catch (e) {
      this.showApiError(e, 'loading your conversations');
    }
  }

  async showOlderSessions() {
    const before = this.sessions.nextBefore;
    if (!before) return;
    try {
      const page = await this.api.sessions(before);
      if (this.sessions.nextBefore === before) this.sessions.showOlder(page);
    } catch (e) {
      this.showApiError(e, 'loading older conversations');
    }
  }

  setTitle(title) {
    $('chat-title').textContent = title;
    document.title = title === 'New chat' ? 'Chat' : title + ' · Chat';
  }

  // ?c=<session_id> names the open conversation, so reloads and links keep it.
  navigate(sessionId) {
    const url = sessionId ? '?c=' + encodeURIComponent(sessionId) : window.location.pathname;
    if (window.location.search !== (sessionId ? url : '')) window.history.pushState(null, '', url);
    this.toggleSidebar(false);
    this.route();
  }

  route() {
    const wanted = new URLSearchParams(window.location.search).get('c');
    const sessionId = wanted && ID_PATTERN.test(wanted) ? wanted : null;
    if (sessionId === this.sessionId && (sessionId === null ? !this.conversation : this.conversation)) return;
    if (sessionId) this.openConversation(sessionId);
    else this.newChat();
  }

  closeConversation() {
    if (this.stream) this.stream.stop();
    this.stream = null;
    this.conversation = null;
    this.sessionId = null;
    clearTimeout(this.historyTimer);
    this.historyTries = 0; // the next conversation's stored replies get their own tries
    clearTimeout(this.troubleTimer);
    clearTimeout(this.quietTimer);
    clearTimeout(this.silentTimer);
    this.silentTimer = null;
    this.banner.clear('offline', 'provider', 'forbidden', 'not_found');
    this.streamDown(); // the next conversation's stream opens after its history
  }

  newChat() {
    this.closeConversation();
    this.sessions.select(null);
    $('message-list').replaceChildren();
    this.setTitle('New chat');
    this.updateControls();
  }

  async openConversation(sessionId) {
    this.closeConversation();
    this.sessionId = sessionId;
    this.sessions.select(sessionId);
    this.setTitle(this.sessions.titleOf(sessionId) || 'Conversation');
    const conversation = this.makeConversation(sessionId);
    this.stickToBottom = true;
    await this.loadHistory(conversation);
    if (this.conversation !== conversation) return;
    conversation.restorePartials();
    // Replies that ran when this conversation was last shown: their server may
    // have lost them since, and no reset would say so.
    const resumed = conversation.streaming.length > 0;
    if (resumed) this.watchSilent(conversation);
    this.openStream(conversation, { resumed });
  }

  makeConversation(sessionId) {
    const resume = new ResumeState(sessionId);
    const conversation = new Conversation($('message-list'), sessionId, resume, () => this.updateControls());
    this.conversation = conversation;
    this.updateControls();
    return conversation;
  }

  // The newest page of history. A conversation the server does not know yet
  // (made here, nothing sent) is simply empty.
  async loadHistory(conversation) {
    const requestedAt = performance.now();
    try {
      const page = await this.api.messages(conversation.sessionId);
      if (this.conversation !== conversation) return true;
      conversation.applyHistory(page, { requestedAt });
      // Named by the server: a conversation opened by link may be older than the list shows.
      if (page.title) this.setTitle(page.title);
      return true;
    } catch (e) {
      if (e instanceof ApiError && e.status === 404) {
        // Listed, so it existed: deleted since the list was loaded (another tab
        // or device). Opening it would only make it again, empty.
        if (this.conversation !== conversation || !this.sessions.has(conversation.sessionId)) return true;
        this.sessionDeleted(conversation.sessionId);
        return false;
      }
      if (this.conversation === conversation) this.showApiError(e, 'loading this conversation');
      return false;
    }
  }

  async loadEarlier() {
    const conversation = this.conversation;
    if (!conversation || !conversation.nextBefore) return;
    const messages = $('messages');
    const fromBottom = messages.scrollHeight - messages.scrollTop;
    try {
      const page = await this.api.messages(conversation.sessionId, { before: conversation.nextBefore });
      if (this.conversation !== conversation) return;
      conversation.applyHistory(page, { older: true });
      messages.scrollTop = messages.scrollHeight - fromBottom;
    } catch (e) {
      this.showApiError(e, 'loading earlier messages');
    }
  }

  // History again soon: a reply ended, the stream reconnected or was reset,
  // or another device started a reply. A stale reply that ended is stored a
  // moment after its last event, so that case asks again a few times.
  scheduleHistory(delayMs) {
    clearTimeout(this.historyTimer);
    const conversation = this.conversation;
    if (!conversation) return;
    this.historyTimer = setTimeout(async () => {
      if (!(await this.loadHistory(conversation)) || this.conversation !== conversation) return;
      const waiting = [...conversation.messages.values()].some((m) => m.stale && !m.lost && m.status !== 'streaming');
      if (waiting && this.historyTries++ < STORED_REPLY_TRIES) this.scheduleHistory(500);
      else this.historyTries = 0;
    }, delayMs);
  }

  // `connected.open` while the open conversation's stream is connected;
  // `connected.promise` resolves when it is (again).
  streamDown() {
    let resolve;
    this.connected = { promise: new Promise((r) => { resolve = r; }), resolve: () => resolve(), open: false };
  }

  openStream(conversation, { resumed = false } = {}) {
    let opened = false;
    const stream = new SessionStream(this.api, conversation.sessionId, {
      cursor: () => conversation.resume.cursor,
      onOpen: () => {
        clearTimeout(this.troubleTimer);
        this.banner.clear('offline', 'unavailable', 'stream');
        this.connected.open = true;
        this.connected.resolve();
        if (!conversation.fresh) this.scheduleHistory(0); // whatever ended while no stream was open
        // Back after a break (or a reload): a running reply may have been lost
        // with the server (a reconnect without cursor gets no reset to say so).
        if ((opened || resumed) && this.conversation === conversation) {
          conversation.restartQuietClock();
          this.watchQuiet(conversation);
        }
        opened = true;
      },
      onEvent: (type, data, eventId) => this.onStreamEvent(conversation, type, data, eventId),
      onTrouble: (error, retrying) => {
        if (this.stream === stream && this.connected.open) this.streamDown();
        this.onStreamTrouble(error, retrying);
      },
    });
    this.stream = stream;
    stream.start();
  }

  onStreamEvent(conversation, type, data, eventId) {
    if (this.conversation !== conversation) return;
    if (data.session_id && data.session_id !== conversation.sessionId) return;
    switch (type) {
      case 'chunk':
        if (conversation.applyChunk(data, eventId)) {
          this.scheduleHistory(200); // another device's message
          this.watchSilent(conversation);
        }
        break;
      case 'error':
        if (conversation.applyError(data) && data.code !== 'cancelled') {
          this.banner.show({ kind: 'provider', text: replyErrorText(data.code, data.message) });
        }
        break;
      case 'message_complete': {
        const message = conversation.applyComplete(data);
        if (message) this.announce(message);
        if (!message || message.stale) this.scheduleHistory(300);
        this.refreshSessions();
        break;
      }
      case 'delayed':
        conversation.heard(data.message_id);
        break;
      case 'reset':
        if (data.reason === 'session_deleted') {
          this.sessionDeleted(conversation.sessionId);
          return;
        }
        conversation.applyReset(data);
        this.scheduleHistory(0);
        this.watchQuiet(conversation);
        this.watchSilent(conversation);
        break;
      default:
        break;
    }
  }

  // After a reset or a reconnect, running replies that stay silent are ended
  // as lost (see Conversation.endQuiet), so that a restarted server never
  // leaves one "running" for good.
  watchQuiet(conversation) {
    clearTimeout(this.quietTimer);
    this.quietTimer = setTimeout(() => {
      if (this.conversation !== conversation) return;
      if (conversation.endQuiet(LOST_REPLY_MS)) this.scheduleHistory(0);
      if (conversation.streaming.length) this.watchQuiet(conversation);
    }, QUIET_CHECK_MS);
  }

  // While replies run, one that stays silent is looked up in the history
  // (see SILENT_REPLY_MS); it ends here if it is stored ended. Started
  // whenever a reply may have begun to run; one watch serves them all.
  watchSilent(conversation) {
    if (this.silentTimer) return;
    this.silentTimer = setTimeout(() => {
      this.silentTimer = null;
      if (this.conversation !== conversation || !conversation.streaming.length) return;
      if (conversation.quiet(SILENT_REPLY_MS).length) this.scheduleHistory(0);
      this.watchSilent(conversation);
    }, SILENT_REPLY_MS);
  }

  onStreamTrouble(error, retrying) {
    clearTimeout(this.troubleTimer);
    if (!error) {
      // The browser is reconnecting by itself; say so only if it takes a while.
      this.troubleTimer = setTimeout(() => {
        this.banner.show({ kind: 'offline', text: 'The connection to the chat server was lost. Reconnecting…' });
      }, RECONNECT_NOTICE_MS);
      return;
    }
    if (error.status === 401) {
      this.signInAgain();
      return;
    }
    const problem = describe(error, 'following this conversation');
    if (retrying && problem.retryAfter == null && problem.kind === 'offline') {
      problem.text = 'The connection to the chat server was lost. Reconnecting…';
    }
    // About the stream, not sending: a message that goes out does not clear it, its return does.
    if (problem.kind === 'rate_limited') problem.kind = 'stream';
    this.banner.show(problem);
  }

  sessionDeleted(sessionId) {
    ResumeState.remove(sessionId);
    this.sessions.forget(sessionId);
    const open = this.sessionId === sessionId;
    if (open) this.navigate(null); // first: leaving the conversation clears its banners
    if (open && !this.deleting.has(sessionId)) {
      this.banner.show({ kind: 'not_found', text: 'This conversation was deleted (maybe on another device).' });
    }
    this.refreshSessions();
  }

  async deleteSession(sessionId) {
    this.deleting.add(sessionId);
    try {
      await this.api.deleteSession(sessionId);
      this.sessionDeleted(sessionId);
    } catch (e) {
      if (e instanceof ApiError && e.status === 404) this.sessionDeleted(sessionId);
      else this.showApiError(e, 'deleting the conversation');
    } finally {
      this.deleting.delete(sessionId);
    }
  }

  async send() {
    const composer = $('composer');
    const text = composer.value;
    if (!text.trim() || this.sending || Date.now() < this.sendBlockedUntil) return;
    if (this.composerProblem) {
      $('announcer').textContent = this.composerProblem;
      return;
    }
    if (this.conversation && this.conversation.streaming.length) return;
    this.sending = true;
    this.updateControls();
    try {
      if (!this.sessionId) {
        let sessionId;
        try {
          sessionId = await this.api.newSessionId();
        } catch (e) {
          this.showApiError(e, 'starting a conversation');
          return;
        }
        // Another conversation opened meanwhile: the message stays in the
        // composer rather than going where the user no longer looks.
        if (this.sessionId) return;
        this.startNewConversation(sessionId);
      }
      // Listening before asking (a new chat's stream, or one reconnecting after
      // a restart) means the reply streams in; the server's late join covers a
      // stream that takes longer than this.
      const conversation = this.conversation;
      if (!this.connected.open) {
        await Promise.race([this.connected.promise, new Promise((r) => setTimeout(r, STREAM_WAIT_MS))]);
        if (this.conversation !== conversation) return;
      }
      const local = conversation.addLocalUserMessage(text);
      if (composer.value === text) composer.value = ''; // what was typed during the wait stays
      this.composerChanged();
      this.stickToBottom = true;
      // A reply's provider error is about that reply; cleared now, not at the
      // 202, which may come after this reply's own error.
      this.banner.clear('provider');
      try {
        const accepted = await this.api.chat({
          sessionId: conversation.sessionId,
          message: text,
          provider: $('provider').value,
          model: $('model').value.trim(),
        });
        // Another conversation opened meanwhile: this one's history shows the
        // chat when it is opened again.
        if (this.conversation !== conversation) {
          this.refreshSessions();
          return;
        }
        conversation.fresh = false;
        conversation.confirmSent(local, accepted.message_id);
        this.watchSilent(conversation);
        this.banner.clear('rate_limited', 'unavailable', 'offline');
        this.scheduleHistory(0);
        this.refreshSessions();
      } catch (e) {
        // No answer (a timeout, the network), but a history page showed the
        // message stored already: it was sent, and its reply is under way.
        if (local.storedCopy && !(e instanceof ApiError && e.status >= 400)) {
          if (this.conversation === conversation) this.scheduleHistory(0);
          return;
        }
        // After a switch the old conversation is gone from the page; the text
        // still comes back, for the user to send where they choose.
        if (this.conversation === conversation) conversation.dropLocal(local);
        if (!composer.value) {
          composer.value = text;
          this.composerChanged();
        }
        this.showApiError(e, 'sending your message');
      }
    } finally {
      this.sending = false;
      this.updateControls();
    }
  }

  startNewConversation(sessionId) {
    this.closeConversation();
    window.history.pushState(null, '', '?c=' + encodeURIComponent(sessionId));
    this.sessionId = sessionId;
    this.sessions.select(sessionId);
    this.setTitle('New chat');
    const conversation = this.makeConversation(sessionId);
    conversation.fresh = true;
    this.openStream(conversation);
    return conversation;
  }

  async stop() {
    const conversation = this.conversation;
    if (!conversation || this.stopping) return;
    this.stopping = true;
    this.updateControls();
    try {
      for (const message of conversation.streaming) {
        try {
          await this.api.cancel(message.id, conversation.sessionId);
          // Cancelled before any worker took it, by another server than this
          // stream's: no event of it reaches this stream, while the stored
          // reply says it was stopped (asked a few times: storing may lag).
          const askHistory = (tries) => setTimeout(() => {
            if (this.conversation !== conversation || message.status !== 'streaming') return;
            this.scheduleHistory(0);
            if (tries > 1) askHistory(tries - 1);
          }, CANCEL_GRACE_MS);
          askHistory(3);
        } catch (e) {
          if (!(e instanceof ApiError && e.status === 404)) {
            this.showApiError(e, 'stopping the reply');
            continue;
          }
          // No server runs it: it ended meanwhile (its last events are on
          // their way), or it was lost with a server that restarted.
          setTimeout(() => {
            if (this.conversation !== conversation || message.status !== 'streaming') return;
            conversation.endLost(message);
            this.scheduleHistory(0);
          }, CANCEL_GRACE_MS);
        }
      }
    } finally {
      this.stopping = false;
      this.updateControls();
    }
  }

  updateControls() {
    const conversation = this.conversation;
    const running = !!conversation && conversation.streaming.length > 0;
    const blocked = Date.now() < this.sendBlockedUntil;
    // The button in focus is about to hide or be disabled (Send while a message
    // goes out or a reply runs, Stop when it ends): the composer takes the
    // focus, not the page's body.
    const focused = document.activeElement;
    const sendGoes = running || this.sending || blocked;
    if ((focused === $('send') && sendGoes) || (focused === $('stop') && (!running || this.stopping))) $('composer').focus();
    $('send').hidden = running;
    $('send').disabled = this.sending || blocked || !!this.composerProblem;
    $('stop').hidden = !running;
    $('stop').disabled = this.stopping;
    $('empty-chat').hidden = !!conversation && !conversation.isEmpty;
    $('load-earlier').hidden = !conversation || !conversation.nextBefore;
    if (blocked) {
      clearTimeout(this.unblockTimer);
      this.unblockTimer = setTimeout(() => this.updateControls(), this.sendBlockedUntil - Date.now() + 50);
    }
  }

  announce(message) {
    const what = message.status === 'cancelled' ? 'The reply was stopped.' : message.status === 'error'
      ? 'The reply failed.' : 'Reply: ' + message.text.slice(0, 400);
    $('announcer').textContent = what;
  }

  // The bytes of the POST /api/chat body but for its message text: a new
  // chat's id is not known yet, and none the server makes is longer.
  chatBodyBytes() {
    return jsonBytes(this.api.chatBody({
      sessionId: this.sessionId || 'x'.repeat(40),
      message: '',
      provider: $('provider').value,
      model: $('model').value.trim(),
    }));
  }

  // The composer's text changed: it grows with it, and Send is off while the
  // text is over a size limit, with the reason shown under the messages.
  composerChanged() {
    const composer = $('composer');
    const problem = this.limits.problem(composer.value, this.chatBodyBytes());
    if (problem !== this.composerProblem) {
      this.composerProblem = problem;
      $('composer-limit').textContent = problem || '';
      $('composer-limit').hidden = !problem;
      if (problem) composer.setAttribute('aria-invalid', 'true');
      else composer.removeAttribute('aria-invalid');
      this.updateControls();
    }
    composer.style.height = 'auto';
    composer.style.height = Math.min(composer.scrollHeight, 240) + 'px';
    composer.style.overflowY = composer.scrollHeight > 240 ? 'auto' : 'hidden';
  }

  toggleSidebar(open = !$('app').classList.contains('sidebar-open')) {
    const wasOpen = $('app').classList.contains('sidebar-open');
    // Where the keyboard was: in the list that hides now, or already out of the
    // page (Tab past the drawer's last control).
    const focusWithDrawer = $('sidebar').contains(document.activeElement) || document.activeElement === document.body;
    $('app').classList.toggle('sidebar-open', open);
    $('menu-toggle').setAttribute('aria-expanded', String(open));
    $('sidebar-scrim').hidden = !open;
    // The drawer covers the page, so it is modal: Tab and a screen reader's
    // cursor stay in it until it closes.
    for (const id of ['chat', 'skip-link']) $(id).inert = open;
    if (open) $('new-chat').focus();
    else if (wasOpen && focusWithDrawer) $('menu-toggle').focus();
  }
}

const app = new App();
app.start();
