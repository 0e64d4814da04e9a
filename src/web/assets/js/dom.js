// DOM building without innerHTML: every text goes through textContent, so message content
// can never become markup of the app document.

/** h('div', {class: 'x', onclick: fn, hidden: true}, child, 'text', [more]) */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v == null || v === false) continue;
    if (k.startsWith('on') && typeof v === 'function') {
      el.addEventListener(k.slice(2), v);
    } else if (k === 'class') {
      el.className = v;
    } else if (k === 'text') {
      el.textContent = v;
    } else if (k === 'dataset') {
      Object.assign(el.dataset, v);
    } else if (v === true) {
      el.setAttribute(k, '');
    } else {
      el.setAttribute(k, String(v));
    }
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children) {
    if (c == null || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else if (c instanceof Node) el.appendChild(c);
    else el.appendChild(document.createTextNode(String(c)));
  }
}

export function clear(el) {
  while (el.firstChild) el.removeChild(el.firstChild);
  return el;
}

export const $ = (sel, root = document) => root.querySelector(sel);

const SPRITE = '/assets/vendor/bootstrap-italia/svg/sprites.svg';
const SVG = 'http://www.w3.org/2000/svg';

/** A decorative icon from the Bootstrap Italia sprite. */
export function icon(name, cls = 'icon-sm') {
  const svg = document.createElementNS(SVG, 'svg');
  svg.setAttribute('class', `icon ${cls}`);
  svg.setAttribute('aria-hidden', 'true');
  svg.setAttribute('focusable', 'false');
  const use = document.createElementNS(SVG, 'use');
  use.setAttribute('href', `${SPRITE}#${name}`);
  svg.appendChild(use);
  return svg;
}

/** Says `text` to screen readers through the polite live region. */
export function announce(text) {
  const s = document.getElementById('status');
  s.textContent = '';
  // a fresh text node after a tick, so the same message is announced again
  setTimeout(() => {
    s.textContent = text;
  }, 50);
}
