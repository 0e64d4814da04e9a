// Message HTML for the sandboxed iframe (srcdoc, sandbox without allow-scripts). The
// sandbox already stops scripts, forms and navigation of the app; this module also keeps
// the message from calling home: until the user asks, every remote reference (img src and
// srcset, background, poster, <link>, url() in style) is removed, and a CSP meta tag in the
// document forbids any remote load. It returns text for srcdoc, never touching the app DOM.

// Anything but inline data or a reference to a part of the message itself is "remote":
// a relative URL would resolve against the webmail's own origin.
const REMOTE = /^(?!\s*(data:|cid:))\s*\S/i;
const URL_ATTRS = ['src', 'srcset', 'background', 'poster', 'data', 'lowsrc', 'dynsrc'];

function cspMeta(doc, allowRemote) {
  const m = doc.createElement('meta');
  m.setAttribute('http-equiv', 'Content-Security-Policy');
  m.setAttribute(
    'content',
    allowRemote
      ? "default-src 'none'; img-src data: cid: https:; style-src 'unsafe-inline'; font-src data:"
      : "default-src 'none'; img-src data: cid:; style-src 'unsafe-inline'; font-src data:",
  );
  return m;
}

/** Returns {srcdoc, blocked}: blocked counts the remote references removed. A blocked
 * image becomes a short text (`placeholder(alt)`) instead of a broken-image icon. */
export function prepareHtml(html, allowRemote, placeholder = (alt) => `[${alt}]`) {
  const doc = new DOMParser().parseFromString(html, 'text/html');
  let blocked = 0;
  // Active or navigating content has no place in a message view.
  for (const el of doc.querySelectorAll(
    'script, noscript, base, meta[http-equiv], iframe, frame, frameset, object, embed, applet, form, link',
  )) {
    if (el.tagName === 'LINK' || el.tagName === 'IFRAME' || el.tagName === 'OBJECT' || el.tagName === 'EMBED') {
      blocked += 1;
    }
    el.remove();
  }
  if (!allowRemote) {
    for (const img of doc.querySelectorAll('img')) {
      const src = img.getAttribute('src') || '';
      if (REMOTE.test(src) || REMOTE.test(img.getAttribute('srcset') || '')) {
        const alt = img.getAttribute('alt');
        img.replaceWith(doc.createTextNode(placeholder(alt ? `: ${alt}` : '')));
        blocked += 1;
      }
    }
  }
  for (const el of doc.querySelectorAll('*')) {
    for (const a of [...el.attributes]) {
      const name = a.name.toLowerCase();
      if (name.startsWith('on')) {
        el.removeAttribute(a.name);
      } else if (URL_ATTRS.includes(name)) {
        const remote = REMOTE.test(a.value);
        if (remote && !allowRemote) {
          el.removeAttribute(a.name);
          el.setAttribute(`data-blocked-${name}`, '');
          blocked += 1;
        }
      } else if (name === 'style' && /url\s*\(/i.test(a.value) && !allowRemote) {
        el.setAttribute('style', a.value.replace(/url\s*\([^)]*\)/gi, 'none'));
        blocked += 1;
      }
    }
    if (el.tagName === 'A') {
      el.setAttribute('target', '_blank');
      el.setAttribute('rel', 'noopener noreferrer');
    }
  }
  for (const st of doc.querySelectorAll('style')) {
    if (/url\s*\(|@import/i.test(st.textContent) && !allowRemote) {
      st.textContent = st.textContent.replace(/@import[^;]*;?/gi, '').replace(/url\s*\([^)]*\)/gi, 'none');
      blocked += 1;
    }
  }
  const head = doc.head || doc.documentElement.insertBefore(doc.createElement('head'), doc.body);
  head.insertBefore(cspMeta(doc, allowRemote), head.firstChild);
  const charset = doc.createElement('meta');
  charset.setAttribute('charset', 'utf-8');
  head.insertBefore(charset, head.firstChild);
  return { srcdoc: `<!doctype html>${doc.documentElement.outerHTML}`, blocked };
}
