// The owner's settings page: the password change (forced after a login with a provisional
// password, when nothing else is reachable) and the smart cards (CNS) associated with the
// mailbox. The server checks everything and answers with the reason in Italian
// (`motivo`); here only the password confirmation is checked.

import { h, clear, $, announce } from './dom.js';
import { t, getLang, dateTime } from './i18n.js';
import { HttpError } from './jmap.js';
import { Rules } from './rules.js';
import { Notices } from './notices.js';

function reason(ex) {
  const raw = getLang() === 'it' && ex.motivo ? ex.motivo : ex.message;
  return raw.charAt(0).toUpperCase() + raw.slice(1);
}

export class Account {
  constructor(client, { onChanged }) {
    this.client = client;
    this.onChanged = onChanged;
    this.forced = false;
    $('#pw-form').addEventListener('submit', (e) => this.submit(e));
    $('#cards-form').addEventListener('submit', (e) => this.addCard(e));
    this.rules = new Rules(client);
    this.notices = new Notices(client);
  }

  async refreshCards() {
    let r;
    try {
      r = await this.client.listCards();
    } catch {
      $('#cards').hidden = true;
      return;
    }
    $('#cards').hidden = !r.enabled && !r.cards.length;
    const ul = clear($('#card-list'));
    $('#cards-empty').hidden = r.cards.length > 0;
    for (const c of r.cards) {
      const issuer = /(?:^|, )CN=([^,]+)/.exec(c.issuer)?.[1] || c.issuer;
      ul.appendChild(h('li', {},
        h('span', { class: 'card-who' },
          h('strong', {}, t('cards.cf', c.codice_fiscale)),
          h('br'), h('span', { class: 'small text-muted' }, t('cards.issued', issuer, dateTime(c.not_after)))),
        h('button', {
          type: 'button',
          class: 'btn btn-sm btn-outline-danger',
          'aria-label': t('cards.removeOf', c.codice_fiscale),
          onclick: () => this.removeCard(c),
        }, t('cards.remove'))));
    }
  }

  cardResult(kind, text, field) {
    const box = clear($('#cards-result'));
    box.appendChild(h('div', { class: `alert alert-${kind}`, role: kind === 'danger' ? 'alert' : 'status' }, text));
    for (const id of ['#cards-file', '#cards-pass']) $(id).removeAttribute('aria-invalid');
    if (field) {
      $(field).setAttribute('aria-invalid', 'true');
      $(field).focus();
    }
  }

  async cardChange(body, done) {
    try {
      await this.client.changeCards(body);
    } catch (ex) {
      if (ex instanceof HttpError && ex.type === 'urn:pecd:error:wrongPassword') {
        return this.cardResult('danger', t('pw.wrong'), '#cards-pass');
      }
      if (ex instanceof HttpError && ex.type === 'urn:pecd:error:cardRefused') {
        return this.cardResult('danger', t('cards.refused', reason(ex)), body.add ? '#cards-file' : null);
      }
      return this.cardResult('danger', t('pw.error', ex.message));
    }
    $('#cards-pass').value = '';
    $('#cards-file').value = '';
    await this.refreshCards();
    announce(done);
    this.cardResult('success', done);
  }

  async addCard(e) {
    e.preventDefault();
    const file = $('#cards-file').files[0];
    if (!file) return this.cardResult('danger', t('cards.pick'), '#cards-file');
    const currentPassword = $('#cards-pass').value;
    if (!currentPassword) return this.cardResult('danger', t('cards.needPassword'), '#cards-pass');
    const pem = await file.text();
    await this.cardChange({ currentPassword, add: pem }, t('cards.added'));
  }

  async removeCard(c) {
    const currentPassword = $('#cards-pass').value;
    if (!currentPassword) return this.cardResult('danger', t('cards.needPassword'), '#cards-pass');
    await this.cardChange({ currentPassword, remove: c.sha256 }, t('cards.removed', c.codice_fiscale));
  }

  open(forced) {
    this.forced = forced;
    $('#account-forced').hidden = !forced;
    $('#account-back').hidden = forced;
    // On first access this page is only the choice of a password: say so.
    $('#account-title').textContent = t(forced ? 'account.firstTitle' : 'account.title');
    $('#pw-current-label').textContent = t(forced ? 'pw.provisional' : 'pw.current');
    $('#pw-user').value = this.client.username || '';
    for (const id of ['#pw-current', '#pw-new', '#pw-confirm']) $(id).value = '';
    clear($('#pw-result'));
    clear($('#cards-result'));
    clear($('#notices-result'));
    document.title = `${t('account.title')} – pecd`;
    if (forced) {
      $('#cards').hidden = true;
      $('#rules').hidden = true;
      $('#notices').hidden = true;
    } else {
      this.refreshCards();
      this.rules.refresh();
      this.notices.refresh();
    }
    $('#pw-current').focus();
  }

  result(kind, text, field) {
    const box = clear($('#pw-result'));
    box.appendChild(h('div', { class: `alert alert-${kind}`, role: kind === 'danger' ? 'alert' : 'status' }, text));
    for (const id of ['#pw-current', '#pw-new', '#pw-confirm']) $(id).removeAttribute('aria-invalid');
    if (field) {
      $(field).setAttribute('aria-invalid', 'true');
      $(field).focus();
    }
  }

  async submit(e) {
    e.preventDefault();
    const current = $('#pw-current').value;
    const next = $('#pw-new').value;
    if (!current) return this.result('danger', t('pw.missing'), '#pw-current');
    if (!next) return this.result('danger', t('pw.missing'), '#pw-new');
    if (next !== $('#pw-confirm').value) return this.result('danger', t('pw.mismatch'), '#pw-confirm');
    try {
      await this.client.changePassword(current, next);
    } catch (ex) {
      if (ex instanceof HttpError && ex.type === 'urn:pecd:error:wrongPassword') {
        return this.result('danger', t('pw.wrong'), '#pw-current');
      }
      if (ex instanceof HttpError && ex.type === 'urn:pecd:error:weakPassword') {
        return this.result('danger', t('pw.weak', reason(ex)), '#pw-new');
      }
      if (ex instanceof HttpError && ex.status === 429) return this.result('danger', t('login.locked'));
      return this.result('danger', t('pw.error', ex.message));
    }
    for (const id of ['#pw-current', '#pw-new', '#pw-confirm']) $(id).value = '';
    announce(t('pw.done'));
    const wasForced = this.forced;
    this.forced = false;
    $('#account-forced').hidden = true;
    $('#account-back').hidden = false;
    $('#account-title').textContent = t('account.title');
    $('#pw-current-label').textContent = t('pw.current');
    this.result('success', t('pw.done'));
    if (wasForced) await this.onChanged();
    else {
      this.refreshCards();
      this.rules.refresh();
      this.notices.refresh();
    }
  }
}
