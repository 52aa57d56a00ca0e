// How large one message may be, as GET /api tells (CHAT_MAX_MESSAGE_CHARS and
// SERVER_MAX_BODY_BYTES). The server counts Unicode characters and the body's
// UTF-8 bytes; the page counts the same way as the user types, so a message
// it lets go is not refused for its size, and a long paste is kept whole
// (a textarea's maxlength would cut it without a word).

const encoder = new TextEncoder();

// UTF-8 bytes of `value` as JSON.
export function jsonBytes(value) {
  return encoder.encode(JSON.stringify(value)).length;
}

function characters(text) {
  let n = 0;
  for (const _ of text) n++;
  return n;
}

function count(n) {
  return n.toLocaleString('en-US');
}

export class MessageLimits {
  constructor() {
    this.maxChars = 32000;
    this.maxBytes = null; // unknown until GET /api answers
  }

  // `limits` from GET /api (absent from older servers: the defaults stay).
  set(limits) {
    if (!limits) return;
    if (Number.isInteger(limits.max_message_chars) && limits.max_message_chars > 0) this.maxChars = limits.max_message_chars;
    if (Number.isInteger(limits.max_body_bytes) && limits.max_body_bytes > 0) this.maxBytes = limits.max_body_bytes;
  }

  // null when `text` fits, else what to tell the user. `otherBytes`: the rest
  // of the request body (its JSON with an empty message).
  problem(text, otherBytes) {
    // At most 2 UTF-16 units a character: a short text needs no counting.
    if (text.length > this.maxChars) {
      const over = characters(text) - this.maxChars;
      if (over > 0) {
        return count(over) + (over === 1 ? ' character' : ' characters') + ' over the limit of ' +
          count(this.maxChars) + '. Shorten the message to send it.';
      }
    }
    // At most 6 bytes of JSON a UTF-16 unit (\u0001): a short text needs no encoding.
    if (this.maxBytes != null && text.length * 6 + otherBytes > this.maxBytes) {
      const bytes = jsonBytes(text) - jsonBytes('') + otherBytes;
      if (bytes > this.maxBytes) {
        const percent = Math.ceil((bytes / this.maxBytes) * 100);
        return 'Too large for the server: ' + percent + ' % of the ' + count(this.maxBytes) +
          ' bytes a message may take (text in some scripts takes 3 bytes a character). Shorten the message to send it.';
      }
    }
    return null;
  }
}
