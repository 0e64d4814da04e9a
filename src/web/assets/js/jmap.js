// The webmail's only way to the server: login endpoints and JMAP (RFC 8620/8621) on the
// same origin. Cookie auth; every POST carries the session's X-CSRF-Token.

export const USING = [
  'urn:ietf:params:jmap:core',
  'urn:ietf:params:jmap:mail',
  'urn:ietf:params:jmap:submission',
  'urn:ietf:params:jmap:quota',
  'urn:pecd:params:jmap:pec',
];
export const PEC = 'urn:pecd:params:jmap:pec';

export class HttpError extends Error {
  constructor(status, detail, type, motivo) {
    super(detail || `HTTP ${status}`);
    this.status = status;
    this.type = type;
    this.motivo = motivo; // the reason in Italian, where the server gives one
  }
}

async function problem(res) {
  let detail = res.statusText;
  let type;
  let motivo;
  try {
    const j = await res.json();
    detail = j.detail || j.description || detail;
    type = j.type;
    motivo = j.motivo;
  } catch {
    /* not JSON */
  }
  return new HttpError(res.status, detail, type, motivo);
}

function fill(template, vars) {
  return template.replace(/\{(\w+)\}/g, (_, k) => encodeURIComponent(vars[k] ?? ''));
}

export class Client {
  constructor() {
    this.csrf = null;
    this.accountId = null; // the mailbox's own account: mail is written here
    this.viewAccountId = null; // the account being read, when it is another (the archive)
    this.username = null;
    this.session = null;
    this.mustChangePassword = false;
    this.onUnauthorized = () => {};
  }

  adopt(me) {
    this.csrf = me.csrfToken;
    this.accountId = me.accountId;
    this.username = me.username;
    this.mustChangePassword = !!me.mustChangePassword;
  }

  async login(username, password) {
    const res = await fetch('/auth/login', {
      method: 'POST',
      credentials: 'same-origin',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ username, password }),
    });
    if (!res.ok) throw await problem(res);
    this.adopt(await res.json());
    // With a provisional password only the password change is open.
    if (!this.mustChangePassword) await this.loadSession();
  }

  /** The owner's password change; the session goes on (unrestricted) after it. */
  async changePassword(currentPassword, newPassword) {
    const res = await fetch('/auth/password', {
      method: 'POST',
      credentials: 'same-origin',
      headers: { 'Content-Type': 'application/json', 'X-CSRF-Token': this.csrf || '' },
      body: JSON.stringify({ currentPassword, newPassword }),
    });
    if (!res.ok) throw await problem(res);
    this.mustChangePassword = false;
    await this.loadSession();
  }

  /** Where smart-card login is: `{here, port}` (port null when it is off). */
  async cardOptions() {
    const res = await fetch('/auth/options', { credentials: 'same-origin' });
    if (!res.ok) return { here: false, port: null };
    return (await res.json()).card || { here: false, port: null };
  }

  /** Logs in with the smart card the browser presented (card listener only). */
  async cardLogin(username) {
    const res = await fetch('/auth/card', {
      method: 'POST',
      credentials: 'same-origin',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify(username ? { username } : {}),
    });
    if (!res.ok) throw await problem(res);
    this.adopt(await res.json());
    await this.loadSession();
  }

  /** GET of an /auth/ resource of the owner, as JSON. */
  async getJson(path) {
    const res = await fetch(path, { credentials: 'same-origin' });
    if (!res.ok) throw await problem(res);
    return res.json();
  }

  /** POST of a JSON body to an /auth/ resource of the owner (CSRF token), as JSON. */
  async postJson(path, body) {
    const res = await fetch(path, {
      method: 'POST',
      credentials: 'same-origin',
      headers: { 'Content-Type': 'application/json', 'X-CSRF-Token': this.csrf || '' },
      body: JSON.stringify(body),
    });
    if (!res.ok) throw await problem(res);
    return res.json();
  }

  rules() { return this.getJson('/auth/filters'); }

  setRules(rules) { return this.postJson('/auth/filters', { rules }); }

  notifications() { return this.getJson('/auth/notifications'); }

  /** `{add}`, `{confirm, code}`, `{remove}` or `{receipts, anomalies}`. */
  changeNotifications(body) { return this.postJson('/auth/notifications', body); }

  listCards() { return this.getJson('/auth/cards'); }

  /** `{currentPassword, add: PEM}` or `{currentPassword, remove: sha256}`. */
  changeCards(body) { return this.postJson('/auth/cards', body); }

  /** Resumes an existing cookie session; false when there is none. */
  async resume() {
    const res = await fetch('/auth/me', { credentials: 'same-origin' });
    if (res.status === 401) return false;
    if (!res.ok) throw await problem(res);
    this.adopt(await res.json());
    if (!this.mustChangePassword) await this.loadSession();
    return true;
  }

  async logout() {
    try {
      await fetch('/auth/logout', {
        method: 'POST',
        credentials: 'same-origin',
        headers: { 'X-CSRF-Token': this.csrf || '' },
      });
    } finally {
      this.csrf = null;
      this.accountId = null;
      this.viewAccountId = null;
      this.session = null;
    }
  }

  async loadSession() {
    const res = await fetch('/jmap/session', { credentials: 'same-origin' });
    if (!res.ok) throw await problem(res);
    this.session = await res.json();
    this.accountId =
      this.session.primaryAccounts?.['urn:ietf:params:jmap:mail'] || this.accountId;
  }

  /** The account whose folder is on screen: the archive's, or the mailbox's own. */
  get viewing() {
    return this.viewAccountId || this.accountId;
  }

  /** The mailbox's own account (the one mail is sent from). */
  get primaryAccountId() {
    return this.session?.primaryAccounts?.['urn:ietf:params:jmap:mail'] || this.accountId;
  }

  /** The security archive's account: the read-only one, if the server offers it. */
  get archiveAccountId() {
    const acc = this.session?.accounts || {};
    return Object.keys(acc).find((id) => acc[id].isReadOnly) || null;
  }

  get pecCapability() {
    return this.session?.capabilities?.[PEC] || {};
  }

  get accountCapabilities() {
    return this.session?.accounts?.[this.accountId]?.accountCapabilities || {};
  }

  /** One JMAP request; returns the method responses as a map callId → [name, args]. */
  async call(methodCalls) {
    const res = await fetch(this.session?.apiUrl || '/jmap/api', {
      method: 'POST',
      credentials: 'same-origin',
      headers: { 'Content-Type': 'application/json', 'X-CSRF-Token': this.csrf || '' },
      body: JSON.stringify({ using: USING, methodCalls }),
    });
    if (res.status === 401) {
      this.onUnauthorized();
      throw await problem(res);
    }
    if (!res.ok) throw await problem(res);
    const body = await res.json();
    const out = {};
    for (const [name, args, id] of body.methodResponses) {
      if (name === 'error') {
        const e = new Error(args.description || args.type);
        e.type = args.type;
        out[id] = ['error', args];
        if (!out.firstError) out.firstError = e;
      } else {
        out[id] = [name, args];
      }
    }
    return out;
  }

  /** The arguments of one method response, throwing on a JMAP error. */
  static args(r, id) {
    const [name, args] = r[id] || ['error', { type: 'missing' }];
    if (name === 'error') {
      const e = new Error(args.description || args.type);
      e.type = args.type;
      throw e;
    }
    return args;
  }

  async upload(file) {
    const url = fill(this.session.uploadUrl, { accountId: this.accountId });
    const res = await fetch(url, {
      method: 'POST',
      credentials: 'same-origin',
      headers: {
        'Content-Type': file.type || 'application/octet-stream',
        'X-CSRF-Token': this.csrf || '',
      },
      body: file,
    });
    if (!res.ok) throw await problem(res);
    return res.json();
  }

  downloadUrl(blobId, name, type) {
    return fill(this.session.downloadUrl, {
      accountId: this.viewing,
      blobId,
      name: name || 'download',
      type: type || 'application/octet-stream',
    });
  }

  evidenceUrl(emailId) {
    const tpl = this.pecCapability.evidenceUrl || '/jmap/evidence/{accountId}/{emailId}';
    return fill(tpl, { accountId: this.viewing, emailId });
  }

  eventSource() {
    const url = fill(this.session.eventSourceUrl, { types: '*', closeafter: 'no', ping: '30' })
      // the template's literal "*" must not be percent-encoded away from what servers expect
      .replace('types=%2A', 'types=*');
    return new EventSource(url, { withCredentials: true });
  }
}
