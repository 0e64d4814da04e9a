// The settings page's notices to ordinary addresses: the addresses (confirmed, or waiting
// for the code mailed to them, with a field to type it), a form adding one, and which
// arrivals besides certified mail are notified. The server checks everything and explains
// refusals in Italian (`motivo`).

import { h, clear, $, announce } from './dom.js';
import { t, getLang, dateTime } from './i18n.js';
import { HttpError } from './jmap.js';

export class Notices {
  constructor(client) {
    this.client = client;
    $('#notices-form').addEventListener('submit', (e) => this.add(e));
    for (const id of ['#notice-receipts', '#notice-anomalies']) {
      $(id).addEventListener('change', () => this.options());
    }
  }

  async refresh() {
    let r;
    try {
      r = await this.client.notifications();
    } catch {
      $('#notices').hidden = true;
      return;
    }
    $('#notices').hidden = false;
    this.render(r);
  }

  render(r) {
    const ul = clear($('#notice-list'));
    $('#notices-empty').hidden = r.addresses.length > 0;
    $('#notice-receipts').checked = r.receipts;
    $('#notice-anomalies').checked = r.anomalies;
    r.addresses.forEach((a, i) => {
      const state = a.confirmed
        ? h('span', { class: 'small text-success' }, t('notices.confirmed'))
        : h('span', { class: 'small text-muted' }, a.codeExpires ? t('notices.waiting', dateTime(a.codeExpires)) : t('notices.void'));
      const item = h('li', {},
        h('span', { class: 'card-who' }, h('strong', {}, a.address), h('br'), state),
        h('button', {
          type: 'button',
          class: 'btn btn-sm btn-outline-danger',
          'aria-label': t('notices.removeOf', a.address),
          onclick: () => this.change({ remove: a.address }, t('notices.removed', a.address)),
        }, t('cards.remove')));
      if (!a.confirmed && a.codeExpires) {
        const id = `notice-code-${i}`;
        item.appendChild(h('form', {
          class: 'notice-confirm',
          onsubmit: (e) => {
            e.preventDefault();
            this.change({ confirm: a.address, code: $(`#${id}`).value.trim() }, t('notices.done', a.address), `#${id}`);
          },
        },
        h('label', { for: id, class: 'visually-hidden' }, t('notices.codeOf', a.address)),
        h('input', { id, class: 'form-control form-control-sm', inputmode: 'numeric', autocomplete: 'one-time-code', maxlength: '8', placeholder: t('notices.code') }),
        h('button', { type: 'submit', class: 'btn btn-sm btn-primary' }, t('notices.confirm'))));
      }
      ul.appendChild(item);
    });
  }

  result(kind, text, field) {
    const box = clear($('#notices-result'));
    box.appendChild(h('div', { class: `alert alert-${kind}`, role: kind === 'danger' ? 'alert' : 'status' }, text));
    if (field && $(field)) {
      $(field).setAttribute('aria-invalid', 'true');
      $(field).focus();
    }
  }

  async change(body, done, field) {
    let r;
    try {
      r = await this.client.changeNotifications(body);
    } catch (ex) {
      const why = ex instanceof HttpError && getLang() === 'it' && ex.motivo ? ex.motivo : ex.message;
      return this.result('danger', t('notices.refused', why.charAt(0).toUpperCase() + why.slice(1)), field);
    }
    this.render(r);
    announce(done);
    this.result('success', done);
    return true;
  }

  async add(e) {
    e.preventDefault();
    $('#notice-address').removeAttribute('aria-invalid');
    const address = $('#notice-address').value.trim();
    if (!address) return this.result('danger', t('notices.needAddress'), '#notice-address');
    if (await this.change({ add: address }, t('notices.sent', address), '#notice-address')) {
      $('#notice-address').value = '';
    }
  }

  options() {
    this.change(
      { receipts: $('#notice-receipts').checked, anomalies: $('#notice-anomalies').checked },
      t('notices.saved'),
    );
  }
}
