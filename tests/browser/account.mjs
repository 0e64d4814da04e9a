// The owner's settings page in a real browser (Debian's chromium, playwright-core): a
// login with a provisional password lands on the forced password change and nowhere
// else; a mismatch and a weak password are refused with Italian reasons tied to their
// field; the change by keyboard alone opens the mail; the settings page is reachable
// from the header and goes back; rules and arrival notices are set up there. axe-core
// checks each screen. Run by tests/passwords.rs:
//   PECD_URL, PECD_USER, PECD_PASS   the provider and a mailbox with a provisional password
//   PECD_NEW_PASS                    the new password to choose
//   PECD_SCREENSHOTS                 where to write one PNG per screen (account-*.png)
// Prints "ok - <what>" per step; the last line is "N passed, 0 failed" (exit 0).

import assert from 'node:assert/strict';
import { launch, runner } from './lib.mjs';

const env = (k) => {
  const v = process.env[k];
  if (!v) throw new Error(`${k} is not set`);
  return v;
};
const URL_ = env('PECD_URL');
const USER = env('PECD_USER');
const PASS = env('PECD_PASS');
const NEW = env('PECD_NEW_PASS');
const { step, checkAxe, shot, unexpected, finish } = runner('account');

const b = await launch();
const page = await b.context.newPage();
const errors = [];
page.on('pageerror', (e) => errors.push(e.message));
page.on('console', (m) => {
  // 401/403/422 answers are expected in these steps; the page handles them.
  if (m.type() === 'error' && !/\b(401|403|422)\b/.test(m.text())) errors.push(m.text());
});

try {
  await step('a provisional password leads to the forced change, and only there', async () => {
    await page.goto(URL_);
    await page.waitForSelector('#login-view:not([hidden])');
    await page.fill('#login-user', USER);
    await page.fill('#login-pass', PASS);
    await page.press('#login-pass', 'Enter');
    await page.waitForSelector('#account-view:not([hidden])');
    assert.match(await page.textContent('#account-forced'), /provvisoria/);
    assert.match(await page.textContent('#account-title'), /Primo accesso/);
    assert.match(await page.textContent('label[for="pw-current"]'), /provvisoria/);
    assert.equal(await page.isHidden('#mail-view'), true);
    assert.equal(await page.isHidden('#account-back'), true, 'no way around the change');
    assert.equal(await page.evaluate(() => document.activeElement.id), 'pw-current');
    // The JMAP API stays closed meanwhile, whatever the page does.
    const r = await page.evaluate(async () => (await fetch('/jmap/session')).status);
    assert.equal(r, 403);
    await shot(page, '01-forced');
  });
  await checkAxe(page, 'forced password change');

  await step('a mismatch and a weak password are refused, tied to their field', async () => {
    await page.fill('#pw-current', PASS);
    await page.fill('#pw-new', NEW);
    await page.fill('#pw-confirm', `${NEW}x`);
    await page.press('#pw-confirm', 'Enter');
    await page.waitForSelector('#pw-result .alert-danger');
    assert.match(await page.textContent('#pw-result'), /non coincidono/);
    assert.equal(await page.getAttribute('#pw-confirm', 'aria-invalid'), 'true');
    await page.fill('#pw-new', 'corta');
    await page.fill('#pw-confirm', 'corta');
    await page.press('#pw-confirm', 'Enter');
    await page.waitForFunction(() => /almeno 10 caratteri/.test(document.querySelector('#pw-result').textContent));
    assert.equal(await page.getAttribute('#pw-new', 'aria-invalid'), 'true');
    assert.equal(await page.evaluate(() => document.activeElement.id), 'pw-new');
    await shot(page, '02-weak');
  });
  await checkAxe(page, 'refused password');

  await step('the change by keyboard alone opens the mail', async () => {
    await page.fill('#pw-new', '');
    await page.keyboard.type(NEW);
    await page.keyboard.press('Tab'); // past the rules' text to the confirmation
    await page.keyboard.type(NEW);
    await page.keyboard.press('Enter');
    await page.waitForSelector('#mail-view:not([hidden])');
    await page.waitForSelector('#folder-list button.folder');
    assert.equal(await page.isHidden('#account-view'), true);
  });

  await step('a rule is added in plain language, and one that would block PEC is refused', async () => {
    await page.click('#account-btn');
    await page.waitForSelector('#rules:not([hidden])');
    await page.waitForSelector('#rule-folder option:nth-child(2)', { state: 'attached' });
    assert.equal(await page.isVisible('#rules-empty'), true);
    // Moving every certified message into the Trash is what PEC forbids.
    await page.fill('#rule-name', 'Tutto nel cestino');
    await page.selectOption('#rule-folder', 'Trash');
    await page.click('#rules-form button[type="submit"]');
    await page.waitForSelector('#rules-result .alert-danger');
    assert.match(await page.textContent('#rules-result'), /non possono finire nel Cestino/);
    await page.fill('#rule-name', 'Fatture');
    await page.fill('#rule-text', 'fattura');
    await page.selectOption('#rule-kind', 'posta-certificata');
    const folder = await page.$eval('#rule-folder option:nth-child(2)', (o) => o.value);
    await page.selectOption('#rule-folder', folder);
    await page.click('label[for="rule-read"]');
    assert.equal(await page.isChecked('#rule-read'), true);
    await page.click('#rules-form button[type="submit"]');
    await page.waitForSelector('#rule-list li');
    const li = await page.textContent('#rule-list');
    assert.match(li, /Fatture/);
    assert.match(li, /oggetto contiene «fattura»/);
    assert.match(li, /segna come letto/);
    await shot(page, '04-rules');
    await page.click('#account-back');
    await page.waitForSelector('#mail-view:not([hidden])');
  });
  await checkAxe(page, 'rules');

  await step('an ordinary address is added for arrival notices, a PEC mailbox of ours is refused', async () => {
    await page.click('#account-btn');
    await page.waitForSelector('#notices:not([hidden])');
    assert.equal(await page.isVisible('#notices-empty'), true);
    const domain = USER.split('@')[1];
    await page.fill('#notice-address', `collega@${domain}`);
    await page.click('#notices-form button[type="submit"]');
    await page.waitForSelector('#notices-result .alert-danger');
    assert.match(await page.textContent('#notices-result'), /casella PEC di questo gestore/);
    assert.equal(await page.getAttribute('#notice-address', 'aria-invalid'), 'true');
    await page.fill('#notice-address', 'titolare@example.test');
    await page.click('#notices-form button[type="submit"]');
    await page.waitForSelector('#notice-list li');
    assert.match(await page.textContent('#notices-result'), /Codice inviato a titolare@example.test/);
    assert.match(await page.textContent('#notice-list'), /In attesa del codice/);
    // The code field is named for the address it belongs to.
    const code = page.getByLabel('Codice ricevuto da titolare@example.test');
    await code.fill('12345678');
    await page.click('.notice-confirm button');
    await page.waitForSelector('#notices-result .alert-danger');
    assert.match(await page.textContent('#notices-result'), /Il codice è errato/);
    await page.click('label[for="notice-receipts"]');
    await page.waitForFunction(() => /Preferenze degli avvisi salvate/.test(document.querySelector('#notices-result').textContent));
    await page.locator('#notices').scrollIntoViewIfNeeded();
    await shot(page, '05-notices');
    await page.click('#account-back');
    await page.waitForSelector('#mail-view:not([hidden])');
  });
  await checkAxe(page, 'notices');

  await step('the settings page is reachable from the header and goes back', async () => {
    await page.click('#account-btn');
    await page.waitForSelector('#account-view:not([hidden])');
    assert.equal(await page.isHidden('#account-forced'), true);
    assert.equal(await page.isVisible('#account-back'), true);
    await shot(page, '03-settings');
    await page.click('#account-back');
    await page.waitForSelector('#mail-view:not([hidden])');
  });
  await checkAxe(page, 'settings');

  await step('no script error', async () => {
    assert.deepEqual(errors, []);
  });
} catch (e) {
  unexpected(e);
  await shot(page, 'zz-failure').catch(() => {});
} finally {
  await b.close();
}
process.exit(finish());
