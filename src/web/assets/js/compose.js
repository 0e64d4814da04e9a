// Composing and sending a PEC message: To/Cc (Bcc explained and refused: the rules forbid
// hidden recipients), attachments within the account's limits, the delivery-receipt form
// (X-TipoRicevuta), then Email/set + EmailSubmission/set in one request; the access
// point's acceptance or refusal is shown at once.

import { Client } from './jmap.js';
import { h, clear, $, announce } from './dom.js';
import { t, bytes, dateTime, getLang } from './i18n.js';

const ADDR = /^[^\s@<>(),;:"[\]]+@[^\s@<>(),;:"[\]]+\.[^\s@<>(),;:"[\]]+$/;

function parseAddrs(s) {
  return s.split(/[,;]/).map((x) => x.trim()).filter(Boolean);
}

export class Composer {
  constructor(client, { mailboxByRole, onSent }) {
    this.client = client;
    this.mailboxByRole = mailboxByRole;
    this.onSent = onSent;
    this.files = [];
    this.form = $('#compose-form');
    this.result = $('#compose-result');
    this.form.addEventListener('submit', (e) => {
      e.preventDefault();
      this.send();
    });
    $('#c-files').addEventListener('change', (e) => {
      for (const f of e.target.files) this.files.push(f);
      e.target.value = '';
      this.renderFiles();
    });
    $('#c-bcc').addEventListener('input', () => this.checkBcc());
  }

  limits() {
    const pec = this.client.accountCapabilities['urn:pecd:params:jmap:pec'] || {};
    const core = this.client.session?.capabilities?.['urn:ietf:params:jmap:core'] || {};
    return {
      maxBytes: pec.maxMessageBytes || core.maxSizeUpload || 50 * 1024 * 1024,
      maxRecipients: pec.maxRecipients || 500,
    };
  }

  describeLimits() {
    $('#c-files-help').textContent = t('compose.limits', bytes(this.limits().maxBytes));
  }

  reset() {
    this.form.reset();
    this.files = [];
    this.renderFiles();
    clear(this.result);
    for (const id of ['c-to', 'c-cc', 'c-bcc']) {
      $(`#${id}`).removeAttribute('aria-invalid');
      $(`#${id}`).classList.remove('is-invalid');
    }
    this.describeLimits();
  }

  renderFiles() {
    const ul = clear($('#c-file-list'));
    this.files.forEach((f, i) => {
      ul.appendChild(h('li', {},
        h('span', { text: `${f.name} (${bytes(f.size)})` }),
        h('button', {
          type: 'button', class: 'btn btn-link btn-sm',
          'aria-label': t('compose.remove', f.name),
          onclick: () => {
            this.files.splice(i, 1);
            this.renderFiles();
            $('#c-files').focus();
          },
        }, '×')));
    });
  }

  checkBcc() {
    const bcc = $('#c-bcc');
    const bad = bcc.value.trim() !== '';
    bcc.classList.toggle('is-invalid', bad);
    if (bad) bcc.setAttribute('aria-invalid', 'true');
    else bcc.removeAttribute('aria-invalid');
    return !bad;
  }

  showErrors(errors, focusId) {
    clear(this.result).appendChild(h('div', { class: 'alert alert-danger', role: 'alert', id: 'compose-errors' },
      h('p', { class: 'fw-semibold mb-1', text: t('compose.errorTitle') }),
      h('ul', { class: 'mb-0' }, errors.map((e) => h('li', { text: e })))));
    if (focusId) $(`#${focusId}`).focus();
  }

  validate() {
    const errors = [];
    let focus = null;
    const mark = (id, bad) => {
      const el = $(`#${id}`);
      el.classList.toggle('is-invalid', bad);
      if (bad) el.setAttribute('aria-invalid', 'true');
      else el.removeAttribute('aria-invalid');
      if (bad && !focus) focus = id;
    };
    const to = parseAddrs($('#c-to').value);
    const cc = parseAddrs($('#c-cc').value);
    const badTo = to.filter((a) => !ADDR.test(a));
    const badCc = cc.filter((a) => !ADDR.test(a));
    mark('c-to', !to.length || badTo.length > 0);
    if (!to.length) errors.push(t('compose.errNoTo'));
    mark('c-cc', badCc.length > 0);
    for (const a of [...badTo, ...badCc]) errors.push(t('compose.errAddr', a));
    const bccOk = this.checkBcc();
    if (!bccOk) {
      errors.push(t('compose.errBcc'));
      if (!focus) focus = 'c-bcc';
    }
    const { maxBytes, maxRecipients } = this.limits();
    if (to.length + cc.length > maxRecipients) errors.push(t('compose.errTooMany', maxRecipients));
    const total = this.files.reduce((n, f) => n + f.size, 0) + $('#c-body').value.length;
    // base64 grows attachments by a third on the wire; the server has the final word
    if (total * 4 / 3 > maxBytes) {
      errors.push(t('compose.errTooBig', bytes(maxBytes)));
      if (!focus) focus = 'c-files';
    }
    return { errors, focus, to, cc };
  }

  async send() {
    const { errors, focus, to, cc } = this.validate();
    if (errors.length) {
      this.showErrors(errors, focus);
      return;
    }
    const btn = $('#c-send');
    btn.disabled = true;
    clear(this.result).appendChild(h('p', { class: 'small', role: 'status', text: t('compose.sending') }));
    try {
      const attachments = [];
      for (const f of this.files) {
        announce(t('compose.uploading', f.name));
        const up = await this.client.upload(f);
        attachments.push({
          blobId: up.blobId, type: f.type || up.type || 'application/octet-stream',
          name: f.name, disposition: 'attachment', size: up.size,
        });
      }
      const acc = this.client.accountId;
      const drafts = this.mailboxByRole('drafts');
      const sent = this.mailboxByRole('sent');
      const form = this.form.querySelector('input[name="c-form"]:checked')?.value || 'completa';
      const email = {
        mailboxIds: { [drafts]: true },
        keywords: { $draft: true, $seen: true },
        from: [{ email: this.client.username }],
        to: to.map((email) => ({ email })),
        subject: $('#c-subject').value,
        textBody: [{ partId: 't', type: 'text/plain' }],
        bodyValues: { t: { value: $('#c-body').value } },
        'header:X-TipoRicevuta:asText': form,
      };
      if (cc.length) email.cc = cc.map((e) => ({ email: e }));
      if (attachments.length) email.attachments = attachments;
      const identityId = await this.identityId();
      const r = await this.client.call([
        ['Email/set', { accountId: acc, create: { d: email } }, 'c'],
        ['EmailSubmission/set', {
          accountId: acc,
          create: { s: { identityId, emailId: '#d' } },
          onSuccessUpdateEmail: {
            '#s': { [`mailboxIds/${drafts}`]: null, [`mailboxIds/${sent}`]: true, 'keywords/$draft': null },
          },
        }, 's'],
      ]);
      const set = Client.args(r, 'c');
      if (set.notCreated?.d) {
        const e = set.notCreated.d;
        this.refused((getLang() === 'it' && e.motivo) || e.description || e.type);
        return;
      }
      const sub = Client.args(r, 's');
      if (sub.notCreated?.s) {
        const e = sub.notCreated.s;
        this.refused((getLang() === 'it' && e.motivo) || e.description || e.type);
        // the refused message is not kept as a draft (the webmail has no draft editor);
        // the provider's non-acceptance notice in the Inbox is the record of the refusal
        const draft = set.created?.d?.id;
        if (draft) {
          this.client.call([['Email/set', { accountId: acc, destroy: [draft] }, 'x']]).catch(() => {});
        }
        return;
      }
      const created = sub.created?.s || {};
      // the access point answered just now; its own time when the server gives it
      this.accepted(dateTime(created.sendAt || new Date().toISOString()));
    } catch (e) {
      this.refused(e.message);
    } finally {
      btn.disabled = false;
    }
  }

  async identityId() {
    if (this._identity) return this._identity;
    const r = await this.client.call([['Identity/get', { accountId: this.client.accountId }, 'i']]);
    const list = Client.args(r, 'i').list || [];
    const me = list.find((i) => i.email?.toLowerCase() === this.client.username?.toLowerCase()) || list[0];
    this._identity = me?.id;
    return this._identity;
  }

  accepted(id) {
    const files = this.files.length;
    this.form.reset();
    this.files = [];
    this.renderFiles();
    clear(this.result).appendChild(h('div', {
      class: 'alert alert-success', role: 'alert', id: 'send-accepted', 'data-files': String(files),
    },
    h('p', { class: 'fw-semibold mb-1', text: t('compose.accepted') }),
    h('p', { class: 'mb-0 small', text: t('compose.acceptedDetail', id) })));
    this.result.focus();
    this.onSent();
  }

  refused(reason) {
    clear(this.result).appendChild(h('div', { class: 'alert alert-danger', role: 'alert', id: 'send-refused' },
      h('p', { class: 'fw-semibold mb-1', text: t('compose.refused') }),
      h('p', { class: 'mb-0', text: t('compose.refusedDetail', reason) })));
    this.result.focus();
    this.onSent();
  }
}
