// The settings page's rules on incoming messages: the list (each with a plain-language
// summary and a remove button) and a form adding one. The whole list is saved at once
// (POST /auth/filters); the server checks every rule and explains refusals in Italian.

import { h, clear, $, announce } from './dom.js';
import { t, getLang } from './i18n.js';
import { Client, HttpError } from './jmap.js';

export class Rules {
  constructor(client) {
    this.client = client;
    this.rules = [];
    this.labels = {}; // folder name → what the user sees
    $('#rules-form').addEventListener('submit', (e) => this.add(e));
  }

  async refresh() {
    let r;
    try {
      r = await this.client.rules();
    } catch {
      $('#rules').hidden = true;
      return;
    }
    this.rules = r.rules;
    $('#rules').hidden = false;
    await this.folders();
    this.render();
  }

  async folders() {
    const sel = clear($('#rule-folder'));
    sel.appendChild(h('option', { value: '' }, t('rules.noMove')));
    const r = await this.client.call([['Mailbox/get', { accountId: this.client.accountId }, 'm']]);
    for (const m of Client.args(r, 'm').list) {
      if (m.role === 'inbox') continue;
      const label = m.role && t(`folder.${m.role}`) !== `folder.${m.role}` ? t(`folder.${m.role}`) : m.name;
      this.labels[m.name] = label;
      sel.appendChild(h('option', { value: m.name }, label));
    }
  }

  describe(r) {
    const parts = [];
    for (const f of ['subject', 'from', 'to']) if (r[f]) parts.push(t(`rules.sum.${f}`, r[f]));
    if (r.kind) parts.push(t(`rules.sum.kind.${r.kind}`));
    const acts = [];
    if (r.folder) acts.push(t('rules.sum.folder', this.labels[r.folder] || r.folder));
    if (r.markRead) acts.push(t('rules.sum.read'));
    if (r.flag) acts.push(t('rules.sum.flag'));
    if (r.notify) acts.push(t('rules.sum.notify'));
    return `${parts.length ? parts.join(', ') : t('rules.sum.all')} → ${acts.join(', ')}`;
  }

  render() {
    const ul = clear($('#rule-list'));
    $('#rules-empty').hidden = this.rules.length > 0;
    this.rules.forEach((r, i) => {
      ul.appendChild(h('li', {},
        h('span', { class: 'card-who' }, h('strong', {}, r.name), h('br'), h('span', { class: 'small' }, this.describe(r))),
        h('button', {
          type: 'button',
          class: 'btn btn-sm btn-outline-danger',
          'aria-label': t('rules.removeOf', r.name),
          onclick: () => this.save(this.rules.filter((_, j) => j !== i), t('rules.removed', r.name)),
        }, t('cards.remove'))));
    });
  }

  result(kind, text, field) {
    const box = clear($('#rules-result'));
    box.appendChild(h('div', { class: `alert alert-${kind}`, role: kind === 'danger' ? 'alert' : 'status' }, text));
    $('#rule-name').removeAttribute('aria-invalid');
    if (field) {
      $(field).setAttribute('aria-invalid', 'true');
      $(field).focus();
    }
  }

  async save(rules, done) {
    try {
      const r = await this.client.setRules(rules);
      this.rules = r.rules;
    } catch (ex) {
      const why = ex instanceof HttpError && getLang() === 'it' && ex.motivo ? ex.motivo : ex.message;
      return this.result('danger', t('rules.refused', why));
    }
    this.render();
    announce(done);
    this.result('success', done);
    return true;
  }

  async add(e) {
    e.preventDefault();
    const name = $('#rule-name').value.trim();
    if (!name) return this.result('danger', t('rules.needName'), '#rule-name');
    const rule = { name };
    const text = $('#rule-text').value.trim();
    if (text) rule[$('#rule-field').value] = text;
    if ($('#rule-kind').value) rule.kind = $('#rule-kind').value;
    if ($('#rule-folder').value) rule.folder = $('#rule-folder').value;
    if ($('#rule-read').checked) rule.markRead = true;
    if ($('#rule-flag').checked) rule.flag = true;
    if ($('#rule-notify').checked) rule.notify = true;
    if (!rule.folder && !rule.markRead && !rule.flag && !rule.notify) return this.result('danger', t('rules.needAction'), '#rule-folder');
    if (await this.save([...this.rules, rule], t('rules.added', name))) {
      for (const id of ['#rule-name', '#rule-text']) $(id).value = '';
      $('#rule-read').checked = false;
      $('#rule-flag').checked = false;
      $('#rule-notify').checked = false;
    }
  }
}
