// The webmail in a real browser (Debian's chromium, driven by playwright-core) against two
// real pecd providers that exchange PEC. Run by tests/webmail_browser.rs, which starts the
// providers and passes, in the environment:
//   PECD_A_URL, PECD_A_USER, PECD_A_PASS   the sender's provider and mailbox
//   PECD_B_URL, PECD_B_USER, PECD_B_PASS   the recipient's provider and mailbox
//   PECD_SCREENSHOTS                       where to write one PNG per screen
// Each step prints "ok - <what>"; the last line is "N passed, 0 failed" (exit 0), or the
// script prints the failure and exits 1.

import assert from 'node:assert/strict';
import { chromium } from 'playwright-core';
import fs from 'node:fs';
import { CHROMIUM, axe, shooter, Api, until } from './lib.mjs';

process.env.NODE_TLS_REJECT_UNAUTHORIZED = '0'; // the providers' dev CA, for the set-up client
const env = (k) => {
  const v = process.env[k];
  if (!v) throw new Error(`${k} is not set`);
  return v;
};
const A = { url: env('PECD_A_URL'), user: env('PECD_A_USER'), pass: env('PECD_A_PASS') };
const B = { url: env('PECD_B_URL'), user: env('PECD_B_USER'), pass: env('PECD_B_PASS') };
const shot = shooter(process.env.PECD_SCREENSHOTS || 'target/webmail-screenshots');
const stamp = Date.now().toString(36);

let passed = 0;
let failed = 0;
const axeFailures = [];
function ok(what) {
  passed += 1;
  console.log(`ok - ${what}`);
}
async function step(what, f) {
  try {
    await f();
    ok(what);
  } catch (e) {
    failed += 1;
    console.log(`not ok - ${what}\n  ${String(e.stack || e).split('\n').join('\n  ')}`);
    e.reported = true;
    throw e;
  }
}
async function checkAxe(page, name) {
  // The message's own HTML (sandboxed, scriptless iframe) is the sender's content, not the
  // webmail's; axe cannot run inside it (no scripts there) and chromium's tab dies trying.
  const bad = await axe(page, name, ['iframe.message-frame']);
  if (bad.length) {
    failed += 1;
    axeFailures.push(`${name}: ${bad.map((v) => v.id).join(', ')}`);
    console.log(`not ok - axe: serious or critical violations on ${name}`);
  } else {
    ok(`axe: no serious or critical violation on ${name}`);
  }
}

const browser = await chromium.launch({
  executablePath: CHROMIUM,
  headless: true,
  args: [
    '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
    '--disable-dev-shm-usage',
  ],
});

async function newPage(name) {
  // One context per user: both providers are on "localhost", and cookies ignore ports.
  const context = await browser.newContext({
    ignoreHTTPSErrors: true, viewport: { width: 1400, height: 900 }, locale: 'it-IT',
  });
  const page = await context.newPage();
  page.errors = [];
  page.on('pageerror', (e) => page.errors.push(e.message));
  page.on('console', (m) => {
    if (m.type() !== 'error' || /401 \(Unauthorized\)/.test(m.text())) return;
    // The CSP refusing a hostile message's handlers (seen while it is parsed into an inert
    // document) or loads (inside the srcdoc frame) is the defence working, not an error.
    const where = m.location()?.url || '';
    if (/Content Security Policy/.test(m.text()) && (where === 'about:srcdoc' || where.endsWith('/safehtml.js'))) {
      page.cspBlocked = (page.cspBlocked || 0) + 1;
      return;
    }
    page.errors.push(`${name}: ${m.text()}`);
  });
  page.on('dialog', (d) => {
    page.errors.push(`${name}: unexpected dialog ${d.message()}`);
    d.dismiss().catch(() => {});
  });
  return page;
}

async function login(page, who) {
  await page.goto(who.url);
  await page.waitForSelector('#login-view:not([hidden])');
  await page.fill('#login-user', who.user);
  await page.fill('#login-pass', who.pass);
  await page.press('#login-pass', 'Enter');
  await page.waitForSelector('#mail-view:not([hidden])');
  await page.waitForSelector('#folder-list button.folder');
}

async function openFolder(page, role) {
  await page.click(`#folder-list button[data-role="${role}"]`);
  await page.waitForSelector(`#folder-list button[data-role="${role}"][aria-current="page"]`);
}

function listItem(page, text) {
  return page.locator('#message-list button.msg', { hasText: text });
}

const apiA = new Api(A.url, A.user, A.pass);
const apiB = new Api(B.url, B.user, B.pass);
const subject = `Richiesta documenti ${stamp}`;
const pa = await newPage('A');
const pb = await newPage('B');

try {
  // ---- login (A) -------------------------------------------------------------------
  await step('login screen is Italian by default and labelled', async () => {
    await pa.goto(A.url);
    await pa.waitForSelector('#login-view:not([hidden])');
    assert.equal(await pa.getAttribute('html', 'lang'), 'it');
    assert.equal(await pa.textContent('label[for="login-user"]'), 'Indirizzo PEC');
    await shot(pa, '01-login');
  });
  await checkAxe(pa, 'login');

  await step('a wrong password is refused with a readable message', async () => {
    await pa.fill('#login-user', A.user);
    await pa.fill('#login-pass', 'definitely-wrong');
    await pa.press('#login-pass', 'Enter');
    await pa.waitForSelector('#login-error:not([hidden])');
    assert.match(await pa.textContent('#login-error'), /password errati/);
    await shot(pa, '02-login-error');
  });

  await step('English is selectable and the choice survives a reload', async () => {
    await pa.selectOption('#lang', 'en');
    assert.equal(await pa.textContent('#login-title'), 'Log in to your PEC mailbox');
    await pa.reload();
    await pa.waitForSelector('#login-view:not([hidden])');
    assert.equal(await pa.getAttribute('html', 'lang'), 'en');
    assert.equal(await pa.textContent('#login-title'), 'Log in to your PEC mailbox');
    await pa.selectOption('#lang', 'it');
    assert.equal(await pa.textContent('#login-title'), 'Accedi alla tua casella PEC');
  });

  await step('log in with the keyboard alone', async () => {
    await pa.focus('#login-user');
    await pa.keyboard.press('Control+A');
    await pa.keyboard.type(A.user);
    await pa.keyboard.press('Tab');
    assert.equal(await pa.evaluate(() => document.activeElement.id), 'login-pass');
    await pa.keyboard.type(A.pass);
    await pa.keyboard.press('Enter');
    await pa.waitForSelector('#mail-view:not([hidden])');
    await pa.waitForSelector('#folder-list button[data-role="inbox"][aria-current="page"]');
    assert.equal(await pa.textContent('#whoami'), A.user);
    assert.match(await pa.textContent('#quota-text'), /di/);
    // The security archive is there from the first access: still empty, with its size.
    await until('archive section', async () => pa.isVisible('#archive-section'));
    assert.equal(await pa.isVisible('#archive-empty'), true);
    assert.match(await pa.textContent('#archive-quota'), /^Spazio dell’archivio: 0 B di \d/);
    await shot(pa, '03-inbox-empty');
  });
  await checkAxe(pa, 'inbox');

  // ---- compose: Bcc refused, then a real send -------------------------------------
  await step('compose explains and refuses Bcc', async () => {
    await pa.focus('#compose-btn');
    await pa.keyboard.press('Enter');
    await pa.waitForSelector('#compose:not([hidden])');
    assert.equal(await pa.evaluate(() => document.activeElement.id), 'c-to');
    assert.match(await pa.textContent('#c-bcc-help'), /non ammette destinatari nascosti/);
    await pa.fill('#c-to', B.user);
    await pa.fill('#c-bcc', 'nascosto@example.org');
    await pa.fill('#c-subject', subject);
    await pa.click('#c-send');
    await pa.waitForSelector('#compose-errors');
    assert.match(await pa.textContent('#compose-errors'), /Ccn/);
    assert.equal(await pa.evaluate(() => document.activeElement.id), 'c-bcc');
    assert.equal(await pa.getAttribute('#c-bcc', 'aria-invalid'), 'true');
    await shot(pa, '04-compose-bcc-refused');
  });
  await checkAxe(pa, 'compose');

  await step('send a PEC with an attachment and the short receipt form: accepted at once', async () => {
    await pa.fill('#c-bcc', '');
    await pa.fill('#c-body', 'Gentile Bob,\nin allegato la richiesta. Codice MARKER-ORIG.\nCordiali saluti');
    await pa.setInputFiles('#c-files', {
      name: 'richiesta.txt', mimeType: 'text/plain', buffer: Buffer.from('Allegato di prova\n'),
    });
    await pa.click('label[for="c-form-breve"]');
    assert.equal(await pa.isChecked('#c-form-breve'), true);
    await pa.click('#c-send');
    await pa.waitForSelector('#send-accepted, #send-refused', { timeout: 30000 });
    const refused = await pa.$('#send-refused');
    assert.equal(refused, null, refused ? await refused.textContent() : '');
    assert.match(await pa.textContent('#send-accepted'), /accettato/);
    await shot(pa, '05-compose-accepted');
  });

  await step("the access point's refusal is shown at once, with its reason", async () => {
    // passes the form's address check, but not the access point's (RFC 5322 dot-atom)
    await pa.fill('#c-to', 'mario..rossi@example.org');
    await pa.fill('#c-subject', `Rifiuto ${stamp}`);
    await pa.fill('#c-body', 'x');
    await pa.click('#c-send');
    await pa.waitForSelector('#send-refused', { timeout: 30000 });
    const text = await pa.textContent('#send-refused');
    assert.match(text, /NON accettato/);
    assert.match(text, /mario\.\.rossi@example\.org/);
    // in Italian, as the rest of the screen (the provider's English SMTP text is not shown)
    assert.match(text, /destinatario non valido/);
    assert.doesNotMatch(text, /Message not accepted/);
    await shot(pa, '06-compose-refused');
    await pa.click('#c-cancel');
  });

  // ---- the sender watches the status reach "consegnato" ---------------------------
  await step('the sent message shows its recipient reaching "consegnato"', async () => {
    await openFolder(pa, 'sent');
    await listItem(pa, subject).first().click();
    await pa.waitForSelector('#timeline-slot .recipient');
    const rec = pa.locator(`#timeline-slot .recipient[data-recipient="${B.user}"] .rstatus`);
    await until('status consegnato', async () => {
      if ((await rec.getAttribute('data-status')) === 'consegnato') return true;
      // push refreshes the timeline; re-open as a fallback
      await listItem(pa, subject).first().click();
      await pa.waitForTimeout(500);
      return (await rec.getAttribute('data-status')) === 'consegnato';
    }, 60000);
    assert.equal(await rec.textContent(), 'consegnato');
    const steps = await pa.locator(`#timeline-slot .recipient[data-recipient="${B.user}"] .step`).allTextContents();
    assert.ok(steps.some((s) => s.includes('Accettato')), steps.join(' | '));
    assert.ok(steps.some((s) => s.includes('Consegnato')), steps.join(' | '));
    await shot(pa, '07-sent-timeline-consegnato');
  });
  await checkAxe(pa, 'sent message with timeline');

  await step('inbox lists the receipts with their badges; search by identificativo finds them', async () => {
    await openFolder(pa, 'inbox');
    await pa.waitForSelector('#message-list button.msg[data-kind="accettazione"]');
    await pa.waitForSelector('#message-list button.msg[data-kind="avvenuta-consegna"]');
    const [acc] = (await apiA.query({ pecKind: 'accettazione' })).filter((m) => m.subject.includes(subject));
    assert.ok(acc?.pec?.identificativo, 'acceptance has an identificativo');
    await pa.selectOption('#search-field', 'pecIdentificativo');
    await pa.fill('#search-q', acc.pec.identificativo);
    await pa.press('#search-q', 'Enter');
    await until('search results', async () => (await pa.textContent('#list-title')).includes('Risultati'));
    const kinds = await pa.locator('#message-list button.msg').evaluateAll((b) => b.map((x) => x.dataset.kind));
    assert.ok(kinds.length >= 1 && kinds.every((k) => k !== 'ordinaria'), kinds.join(','));
    await shot(pa, '08-inbox-receipts-search');
    await pa.fill('#search-q', '');
    await pa.press('#search-q', 'Enter');
    await until('full list', async () => !(await pa.textContent('#list-title')).includes('Risultati'));
    // sorting: oldest first puts the acceptance of the first message on top
    const firstNewest = await pa.getAttribute('#message-list button.msg >> nth=0', 'data-email-id');
    await pa.selectOption('#sort', 'asc');
    await until('re-sorted', async () => (await pa.getAttribute('#message-list button.msg >> nth=0', 'data-email-id')) !== firstNewest);
    assert.match(await pa.textContent('#page-info'), /^1–\d+ di \d+$/);
    await pa.selectOption('#sort', 'desc');
  });
  await checkAxe(pa, 'inbox with receipts');

  // ---- the recipient reads it -------------------------------------------------------
  await step('recipient opens the certified message: green banner, original, attachment, daticert', async () => {
    await login(pb, B);
    const item = listItem(pb, subject).first();
    await item.waitFor();
    assert.equal(await item.getAttribute('data-kind'), 'posta-certificata');
    await item.click();
    await pb.waitForSelector('.pec-banner');
    assert.equal(await pb.getAttribute('.pec-banner', 'data-verdict'), 'verified');
    assert.match(await pb.textContent('.pec-banner'), /Firma del gestore verificata/);
    assert.equal(await pb.textContent('#msg-subject'), subject);
    assert.match(await pb.textContent('.original .text-body'), /MARKER-ORIG/);
    const att = pb.locator('.original a.attachment-link', { hasText: 'richiesta.txt' });
    assert.equal(await att.count(), 1);
    const href = await att.getAttribute('href');
    const res = await pb.request.get(new URL(href, B.url).toString());
    assert.equal(res.status(), 200);
    assert.match(res.headers()['content-disposition'] || '', /attachment/);
    assert.equal(await res.text(), 'Allegato di prova\n');
    assert.match(await pb.textContent('.daticert'), /posta-certificata/);
    const eml = await pb.request.get(new URL(await pb.getAttribute('#dl-eml', 'href'), B.url).toString());
    assert.equal(eml.status(), 200);
    assert.match(eml.headers()['content-disposition'] || '', /attachment/);
    assert.match(await eml.text(), /multipart\/signed/);
    const ev = await pb.request.get(new URL(await pb.getAttribute('#dl-evidence', 'href'), B.url).toString());
    assert.equal(ev.status(), 200, `evidence: ${ev.status()} ${await ev.text()}`);
    assert.match(ev.headers()['content-disposition'] || '', /attachment/);
    assert.equal((await ev.body()).subarray(0, 2).toString(), 'PK', 'a zip');
    await shot(pb, '09-received-verified');
  });
  await checkAxe(pb, 'received certified message');

  await step('the same screen in English', async () => {
    await pb.selectOption('#lang', 'en');
    await until('english banner', async () => /Provider signature verified/.test(await pb.textContent('.pec-banner')));
    await shot(pb, '10-received-verified-en');
    await pb.selectOption('#lang', 'it');
    await until('italian banner', async () => /Firma del gestore verificata/.test(await pb.textContent('.pec-banner')));
  });

  await step('the security archive keeps a read-only copy: listed and opened with its verdict', async () => {
    await pb.click('#archive-list button[data-archive="Ricevuti"]');
    await pb.waitForSelector('#archive-list button[data-archive="Ricevuti"][aria-current="page"]');
    assert.equal(await pb.isVisible('#archive-note'), true);
    assert.equal(await pb.isVisible('#archive-empty'), false);
    assert.doesNotMatch(await pb.textContent('#archive-quota'), /: 0 B di/);
    await until('archive list title', async () => /Archivio di sicurezza — Ricevuti/.test(await pb.textContent('#list-title')));
    const item = listItem(pb, subject).first();
    await item.waitFor();
    await item.click();
    await pb.waitForSelector('.pec-banner');
    assert.equal(await pb.getAttribute('.pec-banner', 'data-verdict'), 'verified');
    const ev = await pb.request.get(new URL(await pb.getAttribute('#dl-evidence', 'href'), B.url).toString());
    assert.equal(ev.status(), 200, `evidence from the archive: ${ev.status()} ${await ev.text()}`);
    await shot(pb, '10b-security-archive');
    // Writing from the archive's screen writes from the mailbox's own account.
    await pb.click('#compose-btn');
    await pb.waitForSelector('#compose:not([hidden])');
    assert.equal(await pb.isVisible('#c-to'), true);
    await pb.click('#c-cancel');
    // Back to the mailbox: the note goes, the INBOX is the mailbox's own again.
    await openFolder(pb, 'inbox');
    assert.equal(await pb.isVisible('#archive-note'), false);
  });
  await checkAxe(pb, 'security archive');

  // ---- push: new mail appears without a reload -------------------------------------
  await step('new mail appears while the page is open (EventSource, no reload)', async () => {
    await openFolder(pb, 'inbox');
    await pb.evaluate(() => { window.__noReload = 1; });
    const unread = async () => {
      const el = await pb.$('#folder-list button[data-role="inbox"] .unread-count');
      return el ? Number(await el.getAttribute('data-unread')) : 0;
    };
    const before = await unread();
    const s2 = `Secondo invio ${stamp}`;
    await apiA.send({
      to: [{ email: B.user }], subject: s2,
      textBody: [{ partId: 't', type: 'text/plain' }], bodyValues: { t: { value: 'push' } },
    });
    await listItem(pb, s2).first().waitFor({ timeout: 60000 });
    assert.equal(await pb.evaluate(() => window.__noReload), 1, 'the page was reloaded');
    const after = await until('unread count to grow', async () => ((await unread()) > before ? unread() : 0));
    assert.ok(after > before, `unread ${before} → ${after}`);
    await shot(pb, '11-new-mail-pushed');
  });

  // ---- hostile HTML --------------------------------------------------------------------
  await step('a <script> in a received HTML body never runs; remote images are blocked', async () => {
    const s3 = `HTML ostile ${stamp}`;
    const html = '<html><body><h1>Fattura</h1><p id="p">Testo visibile HTML-MARKER</p>'
      + '<script>document.body.setAttribute("data-pwned","1");try{parent.document.title="PWNED"}catch(e){};alert(1)</script>'
      + '<img src="x" onerror="document.body.setAttribute(\'data-pwned\',\'2\')">'
      + '<img src="https://tracker.example.invalid/pixel.png" alt="pixel">'
      + '</body></html>';
    await apiA.send({
      to: [{ email: B.user }], subject: s3,
      htmlBody: [{ partId: 'h', type: 'text/html' }], bodyValues: { h: { value: html } },
    });
    const remote = [];
    pb.on('request', (r) => {
      if (r.url().includes('tracker.example.invalid')) remote.push(r.url());
    });
    await listItem(pb, s3).first().waitFor({ timeout: 60000 });
    await listItem(pb, s3).first().click();
    const frameEl = await pb.waitForSelector('iframe.message-frame');
    const sandbox = await frameEl.getAttribute('sandbox');
    assert.ok(sandbox !== null && !sandbox.includes('allow-scripts') && !sandbox.includes('allow-same-origin'), sandbox);
    const frame = await frameEl.contentFrame();
    await frame.waitForSelector('#p');
    assert.match(await frame.textContent('#p'), /HTML-MARKER/);
    await pb.waitForTimeout(1000);
    assert.equal(await frame.evaluate(() => document.body.getAttribute('data-pwned')), null);
    assert.equal(await frame.evaluate(() => document.querySelectorAll('script').length), 0);
    assert.notEqual(await pb.title(), 'PWNED');
    assert.equal(await pb.evaluate(() => document.body.getAttribute('data-pwned')), null);
    assert.match(await pb.textContent('.remote-note'), /immagini remote sono bloccate/);
    assert.deepEqual(remote, []);
    assert.ok(!pb.errors.some((e) => /dialog/.test(e)), pb.errors.join('\n'));
    await shot(pb, '12-html-sandboxed');
  });
  await checkAxe(pb, 'HTML message');

  // ---- tampering ------------------------------------------------------------------------
  await step('a tampered envelope shows the red banner and the reason', async () => {
    await apiB.session();
    const [env0] = (await apiB.query({ pecKind: 'posta-certificata' })).filter((m) => m.subject.includes(subject));
    assert.ok(env0, 'the certified message is in B');
    const raw = (await apiB.download(env0.blobId)).toString('latin1');
    assert.ok(raw.includes('MARKER-ORIG'), 'marker in the signed content');
    const evil = raw.replace('MARKER-ORIG', 'MARKER-EVIL').replace(/^Subject: .*$/m, (s) => `${s} (alterato)`);
    const up = await apiB.upload(Buffer.from(evil, 'latin1'), 'message/rfc822');
    const inbox = await apiB.mailbox('inbox');
    const r = await apiB.call([['Email/import', {
      accountId: apiB.acc, emails: { k: { blobId: up.blobId, mailboxIds: { [inbox]: true }, keywords: {} } },
    }, '0']]);
    const id = r[0][1].created?.k?.id;
    assert.ok(id, JSON.stringify(r));
    const item = pb.locator(`#message-list button.msg[data-email-id="${id}"]`);
    await item.waitFor({ timeout: 30000 });
    assert.equal(await item.locator('[data-unverified]').count(), 1, 'list marks it not verified');
    await item.click();
    await pb.waitForSelector('.pec-banner[data-verdict="unverified"]');
    const text = await pb.textContent('.pec-banner');
    assert.match(text, /NON verificata/);
    assert.match(text, /Motivo: .+/);
    await shot(pb, '13-tampered-red-banner');
  });
  await checkAxe(pb, 'tampered message');

  await step('no script error on either page', async () => {
    const errs = [...pa.errors, ...pb.errors];
    assert.deepEqual(errs, []);
  });

  await step('log out returns to the login screen', async () => {
    await pb.click('#logout');
    await pb.waitForSelector('#login-view:not([hidden])');
    const me = await pb.request.get(new URL('/auth/me', B.url).toString());
    assert.equal(me.status(), 401);
  });

} catch (e) {
  if (!e.reported) {
    failed += 1;
    console.log(`not ok - ${String(e.stack || e).split('\n').join('\n  ')}`);
  }
  // take a picture of where it stopped
  await shot(pa, 'zz-failure-A').catch(() => {});
  await shot(pb, 'zz-failure-B').catch(() => {});
} finally {
  await browser.close();
}

console.log(`${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
