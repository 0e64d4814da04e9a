// The webmail: login, folders with unread counts and the quota meter, the message list
// (badges, sorting, paging, search) and push through EventSource. Reading and composing
// live in reader.js and compose.js.

import { Client, HttpError } from './jmap.js';
import { h, clear, $, announce } from './dom.js';
import { t, applyI18n, setLang, getLang, bytes, dateTime } from './i18n.js';
import { Reader } from './reader.js';
import { Composer } from './compose.js';
import { kindBadge } from './badges.js';
import { Account } from './account.js';

const PAGE = 20;
const ROLE_ORDER = ['inbox', 'sent', 'drafts', 'archive', 'junk', 'trash'];
const ROLE_ICON = { inbox: 'it-inbox', sent: 'it-upload', drafts: 'it-pencil', trash: 'it-delete', junk: 'it-ban', archive: 'it-box' };

const client = new Client();
const state = {
  mailboxes: [],
  current: null, // mailbox id
  account: null, // the account of `current`: the mailbox's own, or its security archive's
  archive: [], // the security archive's mailboxes (Ricevuti, Inviati)
  archiveQuota: null, // the security archive's Quota (its own size)
  position: 0,
  total: 0,
  ascending: false,
  search: null, // {field, q}
  selected: null,
  events: null,
  lastInboxUnread: null,
};

let reader;
let composer;
let account;

function show(view) {
  $('#login-view').hidden = view !== 'login';
  $('#mail-view').hidden = view !== 'mail';
  $('#account-view').hidden = view !== 'account';
  $('#logout').hidden = view === 'login';
  $('#whoami').hidden = view === 'login';
  $('#account-btn').hidden = view !== 'mail';
}

/** The settings page; `forced` after a login with a provisional password. */
function openAccount(forced) {
  show('account');
  $('#whoami').textContent = client.username;
  account.open(forced);
}

/** Where a logged-in user lands: the mail, or the forced password change. */
async function enter() {
  if (client.mustChangePassword) openAccount(true);
  else await enterMail();
}

function folderName(m) {
  return m.role && t(`folder.${m.role}`) !== `folder.${m.role}` ? t(`folder.${m.role}`) : m.name;
}

function inArchive() {
  return !!state.account && state.account === client.archiveAccountId;
}

function archiveName(m) {
  const k = `archive.${m.name}`;
  return t(k) !== k ? t(k) : m.name;
}

function roleOf(id) {
  return state.mailboxes.find((m) => m.id === id)?.role || null;
}

function mailboxByRole(role) {
  return state.mailboxes.find((m) => m.role === role)?.id;
}

// ---- login -------------------------------------------------------------------------

async function onLogin(e) {
  e.preventDefault();
  const err = $('#login-error');
  err.hidden = true;
  const user = $('#login-user').value.trim();
  const pass = $('#login-pass').value;
  if (!user || !pass) {
    err.textContent = t('login.missing');
    err.hidden = false;
    (user ? $('#login-pass') : $('#login-user')).focus();
    return;
  }
  try {
    await client.login(user, pass);
    $('#login-pass').value = '';
    await enter();
  } catch (ex) {
    err.textContent = ex instanceof HttpError && ex.status === 401
      ? t('login.bad')
      : ex instanceof HttpError && ex.status === 429 ? t('login.locked')
      : ex instanceof HttpError && ex.status === 503 ? t('login.unavailable') : t('login.error', ex.message);
    err.hidden = false;
    $('#login-pass').setAttribute('aria-describedby', 'login-error');
    $('#login-pass').focus();
  }
}

/** The smart-card way in: a button on the card listener, a link to it elsewhere. */
async function showCardLogin() {
  const o = await client.cardOptions().catch(() => ({ here: false, port: null }));
  $('#card-login').hidden = !o.here && !o.port;
  $('#card-login-btn').hidden = !o.here;
  $('#card-login-link').hidden = o.here || !o.port;
  if (o.port && !o.here) $('#card-login-link').href = `https://${location.hostname}:${o.port}/`;
}

async function onCardLogin() {
  const err = $('#login-error');
  err.hidden = true;
  try {
    await client.cardLogin($('#login-user').value.trim());
    await enter();
  } catch (ex) {
    err.textContent = ex instanceof HttpError && ex.status === 401
      ? (/no smart-card/.test(ex.message) ? t('card.none') : t('card.refused'))
      : t('login.error', ex.message);
    err.hidden = false;
    $('#card-login-btn').focus();
  }
}

function toLogin(message) {
  if (state.events) {
    state.events.close();
    state.events = null;
  }
  show('login');
  const err = $('#login-error');
  if (message) {
    err.textContent = message;
    err.hidden = false;
  } else {
    err.hidden = true;
  }
  document.title = `${t('login.title')} – pecd`;
  showCardLogin();
  $('#login-user').focus();
}

async function enterMail() {
  show('mail');
  $('#whoami').textContent = client.username;
  composer.describeLimits();
  await refreshFolders();
  state.current = mailboxByRole('inbox') || state.mailboxes[0]?.id;
  await selectFolder(state.current, false);
  startEvents();
  $('#main').focus();
}

// ---- folders and quota ---------------------------------------------------------------

async function refreshFolders() {
  const acc = client.primaryAccountId;
  const archive = client.archiveAccountId;
  const calls = [
    ['Mailbox/get', { accountId: acc }, 'm'],
    ['Quota/get', { accountId: acc }, 'q'],
  ];
  if (archive) {
    calls.push(['Mailbox/get', { accountId: archive }, 'a']);
    calls.push(['Quota/get', { accountId: archive }, 'aq']);
  }
  const r = await client.call(calls);
  const order = ['Ricevuti', 'Inviati'];
  try {
    // Its folders under the root, the received ones first.
    state.archive = archive
      ? Client.args(r, 'a').list.filter((m) => m.parentId)
        .sort((a, b) => order.indexOf(a.name) - order.indexOf(b.name))
      : [];
  } catch {
    state.archive = [];
  }
  try {
    state.archiveQuota = archive ? Client.args(r, 'aq').list?.[0] || null : null;
  } catch {
    state.archiveQuota = null;
  }
  state.mailboxes = Client.args(r, 'm').list.slice().sort((a, b) => {
    const ia = ROLE_ORDER.indexOf(a.role);
    const ib = ROLE_ORDER.indexOf(b.role);
    return (ia < 0 ? 99 : ia) - (ib < 0 ? 99 : ib) || (a.sortOrder || 0) - (b.sortOrder || 0) || a.name.localeCompare(b.name);
  });
  renderFolders();
  let quota = null;
  try {
    quota = Client.args(r, 'q').list?.[0];
  } catch {
    quota = null;
  }
  renderQuota(quota);
  const inbox = state.mailboxes.find((m) => m.role === 'inbox');
  if (inbox) {
    if (state.lastInboxUnread != null && inbox.unreadEmails > state.lastInboxUnread) announce(t('new.mail'));
    state.lastInboxUnread = inbox.unreadEmails;
  }
}

function renderFolders() {
  const ul = clear($('#folder-list'));
  for (const m of state.mailboxes) {
    const name = folderName(m);
    const current = m.id === state.current && !inArchive();
    ul.appendChild(h('li', {},
      h('button', {
        type: 'button',
        class: `folder${current ? ' active' : ''}`,
        'aria-current': current ? 'page' : null,
        'data-role': m.role || '',
        'data-mailbox': m.id,
        onclick: () => selectFolder(m.id, true),
      },
      h('span', { class: 'folder-name', text: name }),
      m.unreadEmails
        ? h('span', { class: 'badge rounded-pill unread-count', 'data-unread': String(m.unreadEmails) },
          String(m.unreadEmails), h('span', { class: 'visually-hidden', text: ` ${t('folder.unread', m.unreadEmails).replace(/^\d+ /, '')}` }))
        : null)));
  }
  const al = clear($('#archive-list'));
  // Shown from the first use (its folders come with the first copy); hidden only when
  // the mailbox has no archive (size 0) and nothing in it.
  const aq = state.archiveQuota;
  // Copies already kept stay visible even if the archive was since turned off (size 0).
  $('#archive-section').hidden = state.archive.length === 0 && !(aq && aq.hardLimit);
  $('#archive-empty').hidden = state.archive.length > 0;
  $('#archive-quota').textContent = aq && aq.hardLimit ? t('archive.quota', ...usage(aq)) : '';
  for (const m of state.archive) {
    const current = m.id === state.current && inArchive();
    al.appendChild(h('li', {},
      h('button', {
        type: 'button',
        class: `folder${current ? ' active' : ''}`,
        'aria-current': current ? 'page' : null,
        'data-archive': m.name,
        'data-mailbox': m.id,
        onclick: () => selectFolder(m.id, true, client.archiveAccountId),
      },
      h('span', { class: 'folder-name', text: archiveName(m) }),
      h('span', { class: 'visually-hidden', text: ` (${t('archive.title')})` }))));
  }
}

/** A quota's used and limit as text, and the percentage used. */
function usage(q) {
  const used = q.used || 0;
  const limit = q.hardLimit || q.limit || 0;
  const pct = limit ? Math.min(100, Math.round((used * 1000) / limit) / 10) : 0;
  return [bytes(used), bytes(limit), pct];
}

function renderQuota(q) {
  const bar = $('#quota-bar');
  const fill = $('#quota-fill');
  if (!q) {
    $('#quota-text').textContent = '';
    return;
  }
  const [, , pct] = usage(q);
  const used = q.used || 0;
  const limit = q.hardLimit || q.limit || 0;
  fill.style.width = `${Math.max(pct, used ? 1 : 0)}%`;
  bar.setAttribute('aria-valuenow', String(pct));
  const text = limit ? t('quota.text', bytes(used), bytes(limit), pct) : t('quota.unlimited', bytes(used));
  bar.setAttribute('aria-valuetext', text);
  $('#quota-text').textContent = text;
  fill.classList.toggle('bg-danger', pct >= 90);
}

// ---- message list --------------------------------------------------------------------

/** Shows folder `id` of account `accountId` (the mailbox's own when not given). */
async function selectFolder(id, focusList, accountId) {
  state.current = id;
  state.account = accountId || client.primaryAccountId;
  client.viewAccountId = accountId || null;
  $('#archive-note').hidden = !inArchive();
  state.position = 0;
  state.search = null;
  $('#search-q').value = '';
  renderFolders();
  await refreshList();
  closeCompose();
  // the reader showed a message of another folder: back to the placeholder
  state.selected = null;
  reader.current = null;
  clear($('#reader-body'));
  $('#reader-placeholder').hidden = false;
  $('#reader-title').textContent = t('reader.none');
  if (focusList) {
    const first = $('#message-list button.msg');
    (first || $('#list-title')).focus?.();
  }
}

function listTitle() {
  let name;
  if (inArchive()) {
    const m = state.archive.find((x) => x.id === state.current);
    name = `${t('archive.title')} — ${m ? archiveName(m) : ''}`;
  } else {
    const m = state.mailboxes.find((x) => x.id === state.current);
    name = m ? folderName(m) : '';
  }
  return state.search ? `${name} — ${t('search.results', state.search.q)}` : name;
}

async function refreshList() {
  const acc = client.viewing;
  const filter = { inMailbox: state.current };
  if (state.search) filter[state.search.field] = state.search.q;
  const r = await client.call([
    ['Email/query', {
      accountId: acc, filter, sort: [{ property: 'receivedAt', isAscending: state.ascending }],
      position: state.position, limit: PAGE, calculateTotal: true, collapseThreads: false,
    }, 'q'],
    ['Email/get', {
      accountId: acc, '#ids': { resultOf: 'q', name: 'Email/query', path: '/ids' },
      properties: ['id', 'threadId', 'mailboxIds', 'keywords', 'from', 'to', 'subject', 'receivedAt', 'preview', 'hasAttachment', 'pec'],
    }, 'g'],
  ]);
  const q = Client.args(r, 'q');
  const list = Client.args(r, 'g').list;
  const byId = new Map(list.map((m) => [m.id, m]));
  state.total = q.total ?? list.length;
  $('#list-title').textContent = listTitle();
  const sentView = roleOf(state.current) === 'sent' || roleOf(state.current) === 'drafts'
    || (inArchive() && state.archive.find((x) => x.id === state.current)?.name === 'Inviati');
  const ul = clear($('#message-list'));
  for (const id of q.ids) {
    const m = byId.get(id);
    if (!m) continue;
    const unread = !m.keywords?.$seen;
    // A certified message is listed by its original sender and subject (from the signed
    // daticert), not as "Per conto di: …" / "POSTA CERTIFICATA: …".
    const dc = m.pec?.kind === 'posta-certificata' ? m.pec.daticert : null;
    const who = sentView
      ? (m.to || []).map((a) => a.name || a.email).join(', ')
      : dc?.mittente || (m.from || []).map((a) => a.name || a.email).join(', ');
    const subj = dc?.oggetto || m.subject;
    ul.appendChild(h('li', {},
      h('button', {
        type: 'button',
        class: `msg${unread ? ' unread' : ''}${state.selected === id ? ' selected' : ''}`,
        'aria-current': state.selected === id ? 'true' : null,
        'data-email-id': id,
        'data-kind': m.pec?.kind || 'ordinaria',
        onclick: () => openMessage(id),
      },
      h('span', { class: 'msg-top' },
        h('span', { class: 'msg-who', text: who || '—' }),
        h('span', { class: 'msg-date small', text: dateTime(m.receivedAt) })),
      h('span', { class: 'msg-subject-line' },
        unread ? h('span', { class: 'visually-hidden', text: `${t('list.unread')}: ` }) : null,
        h('span', { text: subj || t('reader.noSubject') }),
        m.hasAttachment ? h('span', { class: 'visually-hidden', text: ` (${t('list.attach')})` }) : null),
      kindBadge(m.pec, roleOf(state.current) === 'sent'))));
  }
  $('#list-empty').hidden = q.ids.length > 0;
  const from = state.total ? state.position + 1 : 0;
  const to = state.position + q.ids.length;
  $('#page-info').textContent = t('pager.info', from, to, state.total);
  $('#prev-page').disabled = state.position === 0;
  $('#next-page').disabled = to >= state.total;
}

async function openMessage(id) {
  state.selected = id;
  closeCompose();
  for (const b of document.querySelectorAll('#message-list button.msg')) {
    const sel = b.dataset.emailId === id;
    b.classList.toggle('selected', sel);
    if (sel) {
      b.setAttribute('aria-current', 'true');
      b.classList.remove('unread');
    } else {
      b.removeAttribute('aria-current');
    }
  }
  $('#reader-placeholder').hidden = true;
  $('#reader-title').textContent = t('reader.none');
  try {
    const email = await reader.open(id);
    $('#reader-title').textContent = email.subject || t('reader.noSubject');
    $('#reader').focus();
    refreshFolders().catch(() => {});
  } catch (e) {
    clear($('#reader-body')).appendChild(h('div', { class: 'alert alert-danger', role: 'alert', text: t('reader.loadError', e.message) }));
  }
}

// ---- compose -------------------------------------------------------------------------

function openCompose() {
  composer.reset();
  $('#reader').hidden = true;
  $('#compose').hidden = false;
  $('#c-to').focus();
}

function closeCompose() {
  if ($('#compose').hidden) return;
  $('#compose').hidden = true;
  $('#reader').hidden = false;
}

// ---- push ----------------------------------------------------------------------------

let pending = null;
function scheduleRefresh() {
  if (pending) return;
  pending = setTimeout(async () => {
    pending = null;
    try {
      await refreshFolders();
      await refreshList();
      await reader.refresh();
    } catch {
      /* the next event retries */
    }
  }, 250);
}

function startEvents() {
  if (state.events || typeof EventSource === 'undefined') return;
  const es = client.eventSource();
  es.addEventListener('state', (ev) => {
    try {
      const data = JSON.parse(ev.data);
      // The archive's account follows the mailbox's own state.
      if (data.changed?.[client.primaryAccountId]) scheduleRefresh();
    } catch {
      scheduleRefresh();
    }
  });
  es.addEventListener('open', () => {
    document.body.dataset.push = 'open';
  });
  state.events = es;
}

// ---- boot ----------------------------------------------------------------------------

function wire() {
  $('#lang').value = getLang();
  $('#lang').addEventListener('change', async (e) => {
    setLang(e.target.value);
    if (!$('#mail-view').hidden) {
      await refreshFolders();
      composer.describeLimits();
      await refreshList();
      if (state.selected && !$('#reader').hidden) await reader.open(state.selected).catch(() => {});
    }
  });
  $('#login-form').addEventListener('submit', onLogin);
  $('#card-login-btn').addEventListener('click', onCardLogin);
  $('#logout').addEventListener('click', async () => {
    await client.logout();
    state.selected = null;
    clear($('#reader-body'));
    toLogin();
  });
  $('#compose-btn').addEventListener('click', openCompose);
  $('#account-btn').addEventListener('click', () => openAccount(false));
  $('#account-back').addEventListener('click', async () => {
    await enterMail();
  });
  $('#c-cancel').addEventListener('click', () => {
    closeCompose();
    $('#compose-btn').focus();
  });
  $('#search-form').addEventListener('submit', async (e) => {
    e.preventDefault();
    const q = $('#search-q').value.trim();
    state.search = q ? { field: $('#search-field').value, q } : null;
    state.position = 0;
    await refreshList();
    announce(t('list.count', state.total));
  });
  $('#sort').addEventListener('change', async (e) => {
    state.ascending = e.target.value === 'asc';
    state.position = 0;
    await refreshList();
  });
  $('#prev-page').addEventListener('click', async () => {
    state.position = Math.max(0, state.position - PAGE);
    await refreshList();
  });
  $('#next-page').addEventListener('click', async () => {
    state.position += PAGE;
    await refreshList();
  });
  // Arrow keys move between messages in the list; Home/End to the ends.
  $('#message-list').addEventListener('keydown', (e) => {
    const items = [...document.querySelectorAll('#message-list button.msg')];
    const i = items.indexOf(document.activeElement);
    if (i < 0) return;
    let j = null;
    if (e.key === 'ArrowDown') j = Math.min(items.length - 1, i + 1);
    else if (e.key === 'ArrowUp') j = Math.max(0, i - 1);
    else if (e.key === 'Home') j = 0;
    else if (e.key === 'End') j = items.length - 1;
    if (j != null) {
      e.preventDefault();
      items[j].focus();
    }
  });
  client.onUnauthorized = () => toLogin(t('error.session'));
  account = new Account(client, { onChanged: enterMail });
  reader = new Reader(client, $('#reader-body'), { onOpenMessage: openMessage, roleOf });
  composer = new Composer(client, {
    mailboxByRole,
    onSent: () => {
      refreshFolders().then(refreshList).catch(() => {});
    },
  });
}

async function boot() {
  applyI18n();
  wire();
  try {
    if (await client.resume()) {
      await enter();
      return;
    }
  } catch {
    /* fall through to the login form */
  }
  toLogin();
}

boot();
