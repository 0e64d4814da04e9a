// Shared helpers of the browser tests: Debian's chromium driven by playwright-core, axe
// checks, screenshots, and a small JMAP client (Node's fetch) for setting up data.
import { chromium } from 'playwright-core';
import { AxeBuilder } from '@axe-core/playwright';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

export const CHROMIUM = process.env.PECD_CHROMIUM || '/usr/bin/chromium';

export async function launch() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pecd-chromium-'));
  const context = await chromium.launchPersistentContext(dir, {
    executablePath: CHROMIUM,
    headless: true,
    ignoreHTTPSErrors: true,
    viewport: { width: 1400, height: 900 },
    locale: 'it-IT',
    args: [
      '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
      '--disable-dev-shm-usage',
    ],
  });
  return {
    context,
    async close() {
      await context.close();
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Runs axe (WCAG 2.0/2.1 A and AA); returns the serious and critical violations. */
export async function axe(page, name, exclude = []) {
  let b = new AxeBuilder({ page }).withTags(['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa']);
  for (const e of exclude) b = b.exclude(e);
  const r = await b.analyze();
  const bad = r.violations.filter((v) => v.impact === 'serious' || v.impact === 'critical');
  const minor = r.violations.filter((v) => !bad.includes(v));
  console.log(`axe ${name}: ${r.passes.length} rules pass, ${bad.length} serious/critical, ${minor.length} minor/moderate${minor.length ? ` (${minor.map((v) => v.id).join(', ')})` : ''}`);
  for (const v of bad) {
    console.log(`  ${v.impact} ${v.id}: ${v.help}`);
    for (const n of v.nodes.slice(0, 5)) console.log(`    ${n.target.join(' ')} — ${n.failureSummary?.split('\n').join(' ')}`);
  }
  return bad;
}

export function shooter(dir) {
  fs.mkdirSync(dir, { recursive: true });
  for (const f of fs.readdirSync(dir)) {
    if (f.endsWith('.png')) fs.rmSync(path.join(dir, f));
  }
  return async (page, name) => {
    const file = path.join(dir, `${name}.png`);
    await page.screenshot({ path: file, fullPage: false });
    console.log(`screenshot ${file}`);
  };
}

export const USING = [
  'urn:ietf:params:jmap:core', 'urn:ietf:params:jmap:mail', 'urn:ietf:params:jmap:submission',
  'urn:ietf:params:jmap:quota', 'urn:pecd:params:jmap:pec',
];

/** A JMAP client over Node's fetch with HTTP Basic (the API clients' way). */
export class Api {
  constructor(base, user, password) {
    this.base = base.replace(/\/$/, '');
    this.auth = `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}`;
    this.user = user;
  }
  async session() {
    const r = await fetch(`${this.base}/jmap/session`, { headers: { Authorization: this.auth } });
    if (!r.ok) throw new Error(`session: ${r.status} ${await r.text()}`);
    this.s = await r.json();
    this.acc = this.s.primaryAccounts['urn:ietf:params:jmap:mail'];
    return this.s;
  }
  async call(methodCalls) {
    if (!this.s) await this.session();
    const r = await fetch(`${this.base}/jmap/api`, {
      method: 'POST',
      headers: { Authorization: this.auth, 'Content-Type': 'application/json' },
      body: JSON.stringify({ using: USING, methodCalls }),
    });
    const text = await r.text();
    if (!r.ok) throw new Error(`api: ${r.status} ${text}`);
    return JSON.parse(text).methodResponses;
  }
  async mailbox(role) {
    const [[, a]] = await this.call([['Mailbox/get', { accountId: this.acc }, '0']]);
    return a.list.find((m) => m.role === role).id;
  }
  /** Sends a PEC message through the access point; returns the EmailSubmission/set answer. */
  async send(email) {
    const drafts = await this.mailbox('drafts');
    const sent = await this.mailbox('sent');
    const e = { from: [{ email: this.user }], mailboxIds: { [drafts]: true }, keywords: { $draft: true, $seen: true }, ...email };
    const r = await this.call([
      ['Email/set', { accountId: this.acc, create: { d: e } }, '0'],
      ['EmailSubmission/set', {
        accountId: this.acc, create: { s: { identityId: 'I0', emailId: '#d' } },
        onSuccessUpdateEmail: { '#s': { [`mailboxIds/${drafts}`]: null, [`mailboxIds/${sent}`]: true, 'keywords/$draft': null } },
      }, '1'],
    ]);
    const sub = r.find((x) => x[0] === 'EmailSubmission/set');
    if (!sub || !sub[1].created?.s) throw new Error(`send refused: ${JSON.stringify(r)}`);
    return sub[1];
  }
  async query(filter) {
    const r = await this.call([
      ['Email/query', { accountId: this.acc, filter, sort: [{ property: 'receivedAt', isAscending: false }] }, 'q'],
      ['Email/get', { accountId: this.acc, '#ids': { resultOf: 'q', name: 'Email/query', path: '/ids' }, properties: ['id', 'blobId', 'subject', 'pec', 'mailboxIds', 'threadId'] }, 'g'],
    ]);
    return r[1][1].list;
  }
  async download(blobId) {
    const url = this.s.downloadUrl.replace('{accountId}', this.acc).replace('{blobId}', blobId).replace('{name}', 'm.eml').replace('{type}', 'message/rfc822');
    const r = await fetch(`${this.base}${url}`, { headers: { Authorization: this.auth } });
    if (!r.ok) throw new Error(`download: ${r.status}`);
    return Buffer.from(await r.arrayBuffer());
  }
  async upload(bytes, type) {
    const url = this.s.uploadUrl.replace('{accountId}', this.acc);
    const r = await fetch(`${this.base}${url}`, { method: 'POST', headers: { Authorization: this.auth, 'Content-Type': type }, body: bytes });
    if (!r.ok) throw new Error(`upload: ${r.status} ${await r.text()}`);
    return r.json();
  }
}

/** Polls `f` until it returns a truthy value, or fails after `ms`. */
export async function until(what, f, ms = 30000) {
  const end = Date.now() + ms;
  let last;
  while (Date.now() < end) {
    try {
      last = await f();
      if (last) return last;
    } catch (e) {
      last = e;
    }
    await new Promise((r) => setTimeout(r, 250));
  }
  throw new Error(`timed out waiting for ${what} (last: ${last instanceof Error ? last.message : JSON.stringify(last)})`);
}

/**
 * The step bookkeeping of a browser test: `step(what, f)` prints "ok - what" or
 * "not ok - what" (and rethrows), `checkAxe(page, name)` counts axe's verdict,
 * `shot(page, name)` saves `<dir>/<prefix>-<name>.png`, `finish()` prints the summary line
 * and returns the exit code.
 */
export function runner(prefix) {
  const dir = process.env.PECD_SCREENSHOTS || 'target/webmail-screenshots';
  fs.mkdirSync(dir, { recursive: true });
  const r = { passed: 0, failed: 0 };
  r.shot = async (page, name) => {
    const file = path.join(dir, `${prefix}-${name}.png`);
    await page.screenshot({ path: file });
    console.log(`screenshot ${file}`);
  };
  r.step = async (what, f) => {
    try {
      await f();
      r.passed += 1;
      console.log(`ok - ${what}`);
    } catch (e) {
      r.failed += 1;
      console.log(`not ok - ${what}\n  ${String(e.stack || e).split('\n').join('\n  ')}`);
      e.reported = true;
      throw e;
    }
  };
  r.checkAxe = async (page, name) => {
    const bad = await axe(page, name);
    if (bad.length) {
      r.failed += 1;
      console.log(`not ok - axe: serious or critical violations on ${name}`);
    } else {
      r.passed += 1;
      console.log(`ok - axe: no serious or critical violation on ${name}`);
    }
  };
  r.unexpected = (e) => {
    if (!e.reported) {
      r.failed += 1;
      console.log(`not ok - ${String(e.stack || e).split('\n').join('\n  ')}`);
    }
  };
  r.finish = () => {
    console.log(`${r.passed} passed, ${r.failed} failed`);
    return r.failed ? 1 : 0;
  };
  return r;
}
