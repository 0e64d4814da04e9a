// Reading one message: the signature banner, the unwrapped original (Email/parse of the
// postacert.eml) with its attachments, the daticert, downloads of the .eml and of the
// evidence bundle, and for a sent message the per-recipient timeline from its receipts.

import { Client } from './jmap.js';
import { h, clear, icon } from './dom.js';
import { t, dateTime, bytes, getLang } from './i18n.js';
import { prepareHtml } from './safehtml.js';
import { kindBadge } from './badges.js';

const READ_PROPS = [
  'id', 'blobId', 'threadId', 'mailboxIds', 'keywords', 'from', 'to', 'cc', 'subject',
  'receivedAt', 'sentAt', 'size', 'textBody', 'htmlBody', 'bodyValues', 'attachments', 'pec',
  'header:X-Spam-Flag:asText', 'header:X-Spam-Status:asText',
];
const PARSE_PROPS = [
  'from', 'to', 'cc', 'subject', 'sentAt', 'textBody', 'htmlBody', 'bodyValues', 'attachments',
];

function addrList(list) {
  return (list || []).map((a) => (a.name ? `${a.name} <${a.email}>` : a.email)).join(', ');
}

function field(label, value) {
  if (!value) return null;
  return [h('dt', { text: label }), h('dd', { text: value })];
}

/** The signature banner: green iff verified, red when claiming PEC unverified, neutral else. */
export function banner(pec, sent = false) {
  const v = pec?.verdict || {};
  if (sent && (!pec || pec.kind === 'ordinaria')) {
    return h('div', { class: 'alert alert-info pec-banner', 'data-verdict': 'sent' },
      h('p', { class: 'mb-0', text: t('banner.sent') }));
  }
  if (v.verified) {
    return h('div', { class: 'alert alert-success pec-banner', 'data-verdict': 'verified' },
      h('h3', { class: 'h6 mb-1', text: t('banner.ok') }),
      h('p', { class: 'mb-1', text: t('banner.okDetail', v.provider || t('unknown')) }),
      h('p', { class: 'mb-0 small', text: t('banner.cert', v.signer || t('unknown')) }));
  }
  if (!pec || pec.kind === 'ordinaria') {
    return h('div', { class: 'alert alert-info pec-banner', 'data-verdict': 'ordinary' },
      h('p', { class: 'mb-0', text: t('banner.plain') }));
  }
  return h('div', { class: 'alert alert-danger pec-banner', 'data-verdict': 'unverified', role: 'alert' },
    h('h3', { class: 'h6 mb-1', text: t('banner.bad') }),
    h('p', { class: 'mb-1', text: t('banner.badDetail', v.reason || t('unknown')) }),
    v.signer ? h('p', { class: 'mb-0 small', text: t('banner.signer', v.signer) }) : null);
}

function daticert(dc) {
  if (!dc) return null;
  const dest = (dc.destinatari || []).map(
    (d) => `${d.address} (${d.tipo === 'esterno' ? t('dc.esterno') : t('dc.certificato')})`,
  );
  return h('details', { class: 'daticert mt-3', open: true },
    h('summary', { class: 'h6', text: t('dc.title') }),
    h('dl', { class: 'dl-grid' },
      field(t('dc.tipo'), dc.tipo),
      field(t('dc.errore'), dc.errore),
      field(t('dc.mittente'), dc.mittente),
      field(t('dc.destinatari'), dest.join('; ')),
      field(t('dc.risposte'), dc.risposte),
      field(t('dc.oggetto'), dc.oggetto),
      field(t('dc.gestore'), dc.gestoreEmittente),
      field(t('dc.data'), dc.data ? `${dateTime(dc.data)} (${dc.data})` : null),
      field(t('dc.identificativo'), dc.identificativo),
      field(t('dc.msgid'), dc.msgid),
      field(t('dc.ricevuta'), dc.ricevuta),
      field(t('dc.consegna'), dc.consegna),
      field(t('dc.erroreEsteso'), dc.erroreEsteso)));
}

function attachmentList(client, atts) {
  const list = (atts || []).filter((a) => a.blobId);
  if (!list.length) return null;
  return h('section', { class: 'attachments mt-3', 'aria-label': t('reader.attachments') },
    h('h4', { class: 'h6', text: t('reader.attachments') }),
    h('ul', { class: 'file-list' }, list.map((a) => {
      const name = a.name || 'allegato';
      return h('li', {},
        h('a', {
          href: client.downloadUrl(a.blobId, name, a.type),
          download: name,
          class: 'attachment-link',
        }, icon('it-clip', 'icon-sm me-1'), h('span', { text: name })),
        h('span', { class: 'small text-muted ms-2', text: `${a.type || ''} ${bytes(a.size)}` }));
    })));
}

/** The body: the HTML part in a sandboxed iframe, else the text part as preformatted text. */
function body(email) {
  const values = email.bodyValues || {};
  const html = (email.htmlBody || []).find((p) => p.type === 'text/html' && values[p.partId]);
  const text = (email.textBody || []).map((p) => values[p.partId]?.value).filter(Boolean).join('\n');
  if (html) {
    const wrap = h('div', { class: 'html-body' });
    const render = (allowRemote) => {
      const { srcdoc, blocked } = prepareHtml(values[html.partId].value, allowRemote, (alt) => t('reader.imgBlocked', alt));
      clear(wrap);
      if (blocked && !allowRemote) {
        wrap.appendChild(h('div', { class: 'remote-note' },
          h('span', { class: 'small', text: t('reader.remoteBlocked') }),
          h('button', {
            type: 'button', class: 'btn btn-sm btn-outline-primary ms-2',
            onclick: () => render(true),
          }, t('reader.remoteShow'))));
      }
      const frame = h('iframe', {
        class: 'message-frame',
        sandbox: 'allow-popups allow-popups-to-escape-sandbox',
        referrerpolicy: 'no-referrer',
        title: t('reader.htmlTitle'),
      });
      frame.srcdoc = srcdoc;
      wrap.appendChild(frame);
    };
    render(false);
    return wrap;
  }
  return h('pre', { class: 'text-body', text: text || '' });
}

function headerBlock(m) {
  return h('dl', { class: 'dl-grid msg-head' },
    field(t('reader.from'), addrList(m.from)),
    field(t('reader.to'), addrList(m.to)),
    field(t('reader.cc'), addrList(m.cc)),
    field(t('reader.date'), dateTime(m.sentAt || m.receivedAt)));
}

export class Reader {
  constructor(client, root, { onOpenMessage, roleOf }) {
    this.client = client;
    this.root = root;
    this.onOpenMessage = onOpenMessage;
    this.roleOf = roleOf;
    this.current = null;
  }

  async open(id) {
    const r = await this.client.call([
      ['Email/get', {
        accountId: this.client.viewing, ids: [id], properties: READ_PROPS,
        fetchHTMLBodyValues: true, fetchTextBodyValues: true, maxBodyValueBytes: 1048576,
      }, 'g'],
    ]);
    const email = Client.args(r, 'g').list[0];
    if (!email) throw new Error('not found');
    this.current = email;
    let original = null;
    if (email.pec?.postacertBlobId) {
      try {
        const p = await this.client.call([
          ['Email/parse', {
            accountId: this.client.viewing, blobIds: [email.pec.postacertBlobId],
            properties: PARSE_PROPS, fetchHTMLBodyValues: true, fetchTextBodyValues: true,
          }, 'p'],
        ]);
        original = Client.args(p, 'p').parsed?.[email.pec.postacertBlobId] || null;
      } catch {
        original = null;
      }
    }
    this.render(email, original);
    if (!email.keywords?.$seen) {
      this.client.call([['Email/set', {
        accountId: this.client.viewing, update: { [id]: { 'keywords/$seen': true } },
      }, 's']]).catch(() => {});
    }
    if (this.showsTimeline(email)) await this.timeline(email);
    return email;
  }

  showsTimeline(email) {
    return this.isSent(email) || email.pec?.kind === 'accettazione';
  }

  isSent(email) {
    return Object.keys(email.mailboxIds || {}).some((m) => this.roleOf(m) === 'sent');
  }

  /**
   * The spam filter's verdict, for an anomaly envelope only: the provider builds those and
   * puts the verdict on them itself, while a certified envelope's outer headers come from
   * the sending provider and could claim anything.
   */
  spamVerdict(email) {
    if (email.pec?.kind !== 'anomalia') return null;
    const status = email['header:X-Spam-Status:asText'];
    if (!status) return null;
    const score = /score=(-?[\d.]+)/.exec(status)?.[1];
    const required = /required=(-?[\d.]+)/.exec(status)?.[1];
    if (score == null || required == null) return null;
    const spam = (email['header:X-Spam-Flag:asText'] || '').trim().toUpperCase() === 'YES';
    const fmt = (v) => v.replace('.', getLang() === 'it' ? ',' : '.');
    return h('p', {
      class: `spam-verdict small ${spam ? 'alert alert-warning py-2' : 'text-muted'}`,
      'data-spam': spam ? 'yes' : 'no',
      text: t(spam ? 'reader.spam' : 'reader.notSpam', fmt(score), fmt(required)),
    });
  }

  render(email, original) {
    const root = clear(this.root);
    const sent = this.isSent(email);
    const subject = (original?.subject ?? email.subject) || t('reader.noSubject');
    root.appendChild(h('article', { class: 'message', 'data-email-id': email.id },
      h('div', { class: 'd-flex flex-wrap align-items-center gap-2 mb-2' }, kindBadge(email.pec, sent)),
      h('h3', { class: 'h4 msg-subject', id: 'msg-subject', text: subject }),
      banner(email.pec, sent),
      this.spamVerdict(email),
      h('div', { class: 'downloads mb-3' },
        h('a', {
          class: 'btn btn-sm btn-outline-primary me-2 mb-1', href: this.client.downloadUrl(email.blobId, 'messaggio.eml', 'message/rfc822'),
          download: 'messaggio.eml', id: 'dl-eml',
        }, icon('it-download', 'icon-sm icon-primary me-1'), t('reader.downloadEml')),
        email.pec && email.pec.kind !== 'ordinaria'
          ? h('a', {
            class: 'btn btn-sm btn-outline-primary mb-1', href: this.client.evidenceUrl(email.id),
            download: 'evidenze.zip', id: 'dl-evidence',
          }, icon('it-file-compressed', 'icon-sm icon-primary me-1'), t('reader.downloadEvidence'))
          : null),
      h('div', { id: 'timeline-slot' }),
      original
        ? h('section', { class: 'original', 'aria-labelledby': 'orig-title' },
          h('h4', { class: 'h6 section-title', id: 'orig-title', text: t('reader.original') }),
          headerBlock(original),
          body(original),
          attachmentList(this.client, original.attachments))
        : h('section', { class: 'original', 'aria-labelledby': 'msg-subject' },
          headerBlock(email),
          body(email),
          attachmentList(this.client, email.attachments)),
      daticert(email.pec?.daticert)));
  }

  /** Refreshes the timeline of the open message, if it has one (after a push event). */
  async refresh() {
    if (this.current && this.showsTimeline(this.current)) await this.timeline(this.current);
  }

  async timeline(email) {
    const slot = this.root.querySelector('#timeline-slot');
    if (!slot) return;
    const acc = this.client.viewing;
    const r = await this.client.call([
      ['Thread/get', { accountId: acc, ids: [email.threadId] }, 't'],
      ['Email/get', {
        accountId: acc, '#ids': { resultOf: 't', name: 'Thread/get', path: '/list/*/emailIds' },
        properties: ['id', 'from', 'to', 'cc', 'receivedAt', 'pec', 'mailboxIds'],
      }, 'e'],
    ]);
    let mails = [];
    try {
      mails = Client.args(r, 'e').list;
    } catch {
      mails = [email];
    }
    const receipts = mails.filter((m) => m.pec && m.pec.kind !== 'ordinaria' && m.pec.kind !== 'posta-certificata');
    receipts.sort((a, b) => String(a.receivedAt).localeCompare(String(b.receivedAt)));
    const acceptance = receipts.find((m) => m.pec.kind === 'accettazione' || m.pec.kind === 'non-accettazione');
    // Recipients: as the provider certified them at acceptance, else from the headers.
    let recips = acceptance?.pec?.daticert?.destinatari;
    if (!recips?.length) {
      const src = mails.find((m) => Object.keys(m.mailboxIds || {}).some((x) => this.roleOf(x) === 'sent')) || email;
      recips = [...(src.to || []), ...(src.cc || [])].map((a) => ({ address: a.email, tipo: 'certificato' }));
    }
    const lc = (s) => String(s || '').toLowerCase();
    const domain = (s) => lc(s).split('@')[1] || '';
    const rows = recips.map((rcpt) => {
      const addr = lc(rcpt.address);
      const steps = receipts.filter((m) => {
        const k = m.pec.kind;
        if (k === 'accettazione' || k === 'non-accettazione') return true;
        const consegna = lc(m.pec.daticert?.consegna);
        if (consegna) return consegna === addr;
        if (k === 'presa-in-carico') {
          const fromDom = domain(m.from?.[0]?.email);
          return !fromDom || fromDom === domain(addr);
        }
        return false;
      });
      let status = 'inCorso';
      if (steps.some((s) => s.pec.kind === 'non-accettazione')) status = 'rifiutato';
      else if (steps.some((s) => s.pec.kind === 'avvenuta-consegna')) status = 'consegnato';
      else if (steps.some((s) => s.pec.kind === 'errore-consegna')) status = 'errore';
      else if (rcpt.tipo === 'esterno') status = 'esterno';
      return { addr: rcpt.address, status, steps };
    });
    const statusClass = { consegnato: 'st-ok', errore: 'st-bad', rifiutato: 'st-bad', inCorso: 'st-wait', esterno: 'st-wait' };
    clear(slot).appendChild(h('section', { class: 'timeline-box mb-3', 'aria-labelledby': 'tl-title' },
      h('h4', { class: 'h6 section-title', id: 'tl-title', text: t('tl.title') }),
      h('p', { class: 'small text-muted mb-2', text: t('tl.intro') }),
      h('ul', { class: 'recipients' }, rows.map((row) => h('li', { class: 'recipient', 'data-recipient': row.addr },
        h('p', { class: 'mb-1' },
          h('strong', { text: row.addr }), ' — ',
          h('span', { class: `rstatus ${statusClass[row.status]}`, 'data-status': row.status, text: t(`tl.status.${row.status}`) })),
        row.steps.length
          ? h('ol', { class: 'timeline' }, row.steps.map((s) => h('li', { class: `step step-${s.pec.kind}` },
            h('span', { class: 'step-label', text: t(`tl.${s.pec.kind}`) }),
            h('span', { class: 'step-time small text-muted', text: ` ${dateTime(s.pec.daticert?.data || s.receivedAt)}` }),
            s.pec.verdict && !s.pec.verdict.verified ? h('span', { class: 'badge kind k-bad ms-1', text: t('kind.unverified') }) : null,
            ' ',
            h('button', {
              type: 'button', class: 'btn btn-link btn-sm p-0 ms-1 step-open',
              onclick: () => this.onOpenMessage(s.id),
            }, t('tl.open'), h('span', { class: 'visually-hidden', text: `: ${t(`kind.${s.pec.kind}`)}` })))))
          : h('p', { class: 'small text-muted', text: t('tl.waiting') }))))));
  }
}
