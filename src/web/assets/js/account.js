// The owner's settings page: the password change (forced after a login with a provisional
// password, when nothing else is reachable). The server checks the strength rule and
// answers with the reason in Italian (`motivo`); here only the confirmation is checked.

import { h, clear, $, announce } from './dom.js';
import { t, getLang } from './i18n.js';
import { HttpError } from './jmap.js';

export class Account {
  constructor(client, { onChanged }) {
    this.client = client;
    this.onChanged = onChanged;
    this.forced = false;
    $('#pw-form').addEventListener('submit', (e) => this.submit(e));
  }

  open(forced) {
    this.forced = forced;
    $('#account-forced').hidden = !forced;
    $('#account-back').hidden = forced;
    $('#pw-user').value = this.client.username || '';
    for (const id of ['#pw-current', '#pw-new', '#pw-confirm']) $(id).value = '';
    clear($('#pw-result'));
    document.title = `${t('account.title')} – pecd`;
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
        const raw = getLang() === 'it' && ex.motivo ? ex.motivo : ex.message;
        const why = raw.charAt(0).toUpperCase() + raw.slice(1);
        return this.result('danger', t('pw.weak', why), '#pw-new');
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
    this.result('success', t('pw.done'));
    if (wasForced) await this.onChanged();
  }
}
