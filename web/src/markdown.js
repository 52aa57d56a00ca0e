// Replies as Markdown (marked), made safe (DOMPurify).
//
// A model's output is untrusted text. Raw HTML in it is shown as text, never
// parsed: marked's html renderer escapes it. DOMPurify then removes whatever
// else could run (javascript: links, event attributes), and its result is the
// only HTML this page ever assigns: the Content-Security-Policy requires
// Trusted Types, and DOMPurify's policy is the one allowed.

import { Marked } from 'marked';
import DOMPurify from 'dompurify';

const ESCAPES = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' };

function escapeHtml(text) {
  return text.replace(/[&<>"']/g, (c) => ESCAPES[c]);
}

// Images a reply may show: data: URLs only. Any address, chatd's own too, is a
// request the reader never asked for (one to /api/sse would open a stream).
function inlineImage(href) {
  return /^data:image\//i.test(href);
}

const marked = new Marked({
  gfm: true,
  breaks: true,
  walkTokens(token) {
    if (token.type === 'link') for (const t of token.tokens || []) if (t.type === 'image') t.insideLink = true;
  },
  renderer: {
    html({ text }) {
      return escapeHtml(text);
    },
    // An image by address is a link to it: the page never fetches what a
    // reply names (a model can be led to put the conversation into an image's
    // address).
    image({ href, title, text, insideLink }) {
      if (inlineImage(href)) return false;
      const label = 'Image: ' + (text || href);
      // Inside a link, the image is that link's text: a link in a link is none.
      if (insideLink) return escapeHtml(label);
      const hint = title ? ' title="' + escapeHtml(title) + '"' : '';
      return '<a class="image-link" href="' + escapeHtml(href) + '"' + hint + '>' + escapeHtml(label) + '</a>';
    },
  },
});

const PURIFY_CONFIG = {
  USE_PROFILES: { html: true },
  FORBID_TAGS: ['style', 'form', 'input', 'button', 'textarea', 'select', 'option', 'iframe'],
  FORBID_ATTR: ['style', 'id', 'name'],
  RETURN_TRUSTED_TYPE: true,
};

// Links open elsewhere and tell the target nothing about this page.
DOMPurify.addHook('afterSanitizeAttributes', (node) => {
  if (node.tagName === 'A' && node.hasAttribute('href')) {
    node.setAttribute('target', '_blank');
    node.setAttribute('rel', 'noopener noreferrer nofollow');
  }
});

// Fills `element` with `text` rendered, and a copy button on each code block.
export function renderMarkdown(element, text) {
  element.innerHTML = DOMPurify.sanitize(marked.parse(text), PURIFY_CONFIG);
  for (const pre of element.querySelectorAll('pre')) {
    const frame = document.createElement('div');
    frame.className = 'code-block';
    const copy = document.createElement('button');
    copy.type = 'button';
    copy.className = 'copy-code';
    copy.dataset.testid = 'copy-code';
    copy.textContent = 'Copy';
    copy.setAttribute('aria-label', 'Copy this code');
    pre.replaceWith(frame);
    frame.append(copy, pre);
  }
}

// The click handler of every copy button, set once on the message list.
export function handleCopyClick(event) {
  const button = event.target.closest('button.copy-code');
  if (!button) return;
  const code = button.parentElement.querySelector('pre');
  const done = (label) => {
    button.textContent = label;
    setTimeout(() => {
      button.textContent = 'Copy';
    }, 1500);
  };
  if (!navigator.clipboard) return done('Copy failed');
  navigator.clipboard.writeText(code ? code.textContent : '').then(
    () => done('Copied'),
    () => done('Copy failed'),
  );
}
