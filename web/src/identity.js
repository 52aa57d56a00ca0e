// Who the page speaks as.
//
// AUTH_MODE=none: the API trusts the user_id it is given, so the page asks for
// a name once and keeps it in localStorage (every tab of this browser is the
// same person). AUTH_MODE=jwt: the page holds a bearer token for this tab only
// (sessionStorage, gone when the tab closes) and names itself by the token's
// subject, which is what the server will check it against.

const USER_KEY = 'chatd.user_id';
const TOKEN_KEY = 'chatd.token';

export const ID_PATTERN = /^[A-Za-z0-9_-]{1,128}$/;

// Storage can be disabled or full; the page then works for this load only.
function read(storage, key) {
  try {
    return storage.getItem(key) || '';
  } catch {
    return '';
  }
}

function write(storage, key, value) {
  try {
    if (value) storage.setItem(key, value);
    else storage.removeItem(key);
  } catch {
    // kept in memory only
  }
}

// The `sub` claim of a JWT, read without checking the signature: the server
// checks it; the page only needs a name to show and to send as user_id.
export function tokenSubject(token) {
  const payload = token.split('.')[1];
  if (!payload) return '';
  try {
    const base64 = payload.replace(/-/g, '+').replace(/_/g, '/');
    const bytes = Uint8Array.from(atob(base64.padEnd(Math.ceil(base64.length / 4) * 4, '=')), (c) => c.charCodeAt(0));
    const claims = JSON.parse(new TextDecoder().decode(bytes));
    return typeof claims.sub === 'string' ? claims.sub : '';
  } catch {
    return '';
  }
}

// A name as typed ("Ada Lovelace") as an identifier the API accepts ("Ada-Lovelace").
export function userIdFromName(name) {
  return name.trim().replace(/\s+/g, '-').replace(/[^A-Za-z0-9_-]/g, '').slice(0, 128);
}

export class Identity {
  constructor() {
    this.authMode = 'none';
    this.userId = read(localStorage, USER_KEY);
    this.token = read(sessionStorage, TOKEN_KEY);
  }

  setAuthMode(mode) {
    this.authMode = mode === 'jwt' ? 'jwt' : 'none';
  }

  get signedIn() {
    return this.authMode === 'jwt' ? this.token !== '' : this.userId !== '';
  }

  // The user_id sent with requests: the chosen name, or the token's subject
  // when it is a valid identifier (else none: the server takes it from the token).
  get requestUserId() {
    if (this.token) {
      const subject = tokenSubject(this.token);
      return ID_PATTERN.test(subject) ? subject : '';
    }
    return this.userId;
  }

  get displayName() {
    return this.token ? tokenSubject(this.token) || 'token holder' : this.userId;
  }

  useName(name) {
    const id = userIdFromName(name);
    if (!ID_PATTERN.test(id)) return false;
    this.userId = id;
    write(localStorage, USER_KEY, id);
    return true;
  }

  useToken(token) {
    this.token = token.trim();
    write(sessionStorage, TOKEN_KEY, this.token);
  }

  forgetToken() {
    this.useToken('');
  }

  signOut() {
    this.forgetToken();
    this.userId = '';
    write(localStorage, USER_KEY, '');
  }
}
