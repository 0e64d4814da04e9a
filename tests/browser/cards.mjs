// Smart cards (CNS) in a real browser (Debian's chromium, playwright-core): the owner,
// logged in with the password, associates a card by uploading its certificate in the
// settings page; the login page of the ordinary listener links to the card listener;
// there, the browser presents the card (playwright's client-certificate option) and
// "Accedi con smart card" opens the mailbox. axe-core checks each screen. Run by
// tests/cards.rs with, in the environment:
//   PECD_URL, PECD_CARD_URL          the ordinary and the smart-card web listener
//   PECD_USER, PECD_PASS             the mailbox and its password
//   PECD_CARD_CERT, PECD_CARD_KEY    the card's certificate and key (PEM files)
//   PECD_SCREENSHOTS                 where to write one PNG per screen (cards-*.png)
// Prints "ok - <what>" per step; the last line is "N passed, 0 failed" (exit 0).

import assert from 'node:assert/strict';
import { chromium } from 'playwright-core';
import { CHROMIUM, runner } from './lib.mjs';

const env = (k) => {
  const v = process.env[k];
  if (!v) throw new Error(`${k} is not set`);
  return v;
};
const URL_ = env('PECD_URL');
const CARD_URL = env('PECD_CARD_URL');
const USER = env('PECD_USER');
const PASS = env('PECD_PASS');
const CERT = env('PECD_CARD_CERT');
const KEY = env('PECD_CARD_KEY');
const { step, checkAxe, shot, unexpected, finish } = runner('cards');

const browser = await chromium.launch({
  executablePath: CHROMIUM,
  headless: true,
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
    '--disable-dev-shm-usage'],
});
const errors = [];
async function newPage(options = {}) {
  const context = await browser.newContext({
    ignoreHTTPSErrors: true, viewport: { width: 1400, height: 900 }, locale: 'it-IT', ...options,
  });
  const page = await context.newPage();
  page.on('pageerror', (e) => errors.push(e.message));
  page.on('console', (m) => {
    if (m.type() === 'error' && !/\b(401|403|422)\b/.test(m.text())) errors.push(m.text());
  });
  return page;
}

try {
  const page = await newPage();
  await step('the owner associates a card from the settings page', async () => {
    await page.goto(URL_);
    await page.waitForSelector('#login-view:not([hidden])');
    await page.fill('#login-user', USER);
    await page.fill('#login-pass', PASS);
    await page.press('#login-pass', 'Enter');
    await page.waitForSelector('#mail-view:not([hidden])');
    await page.click('#account-btn');
    await page.waitForSelector('#cards:not([hidden])');
    assert.equal(await page.isVisible('#cards-empty'), true);
    await page.setInputFiles('#cards-file', CERT);
    await page.click('#cards-form button[type="submit"]');
    await page.waitForSelector('#cards-result .alert-danger');
    assert.match(await page.textContent('#cards-result'), /password attuale/i);
    await page.fill('#cards-pass', PASS);
    await page.click('#cards-form button[type="submit"]');
    await page.waitForSelector('#card-list li');
    assert.match(await page.textContent('#card-list'), /RSSMRA80A01H501U/);
    await shot(page, '01-associated');
  });
  await checkAxe(page, 'settings with a card');

  await step('a key that is not a card certificate is refused with the reason', async () => {
    await page.setInputFiles('#cards-file', KEY);
    await page.fill('#cards-pass', PASS);
    await page.click('#cards-form button[type="submit"]');
    await page.waitForSelector('#cards-result .alert-danger');
    assert.match(await page.textContent('#cards-result'), /certificato leggibile/);
    assert.equal(await page.getAttribute('#cards-file', 'aria-invalid'), 'true');
  });

  await step('the login page of the ordinary listener links to the card listener', async () => {
    await page.click('#logout');
    await page.waitForSelector('#login-view:not([hidden])');
    await page.waitForSelector('#card-login-link:not([hidden])');
    const href = await page.getAttribute('#card-login-link', 'href');
    assert.equal(new URL(href).port, new URL(CARD_URL).port);
    await shot(page, '02-login-with-card-link');
  });
  await checkAxe(page, 'login with the card link');

  const cardPage = await newPage({
    clientCertificates: [{ origin: CARD_URL, certPath: CERT, keyPath: KEY }],
  });
  await step('with the card in the browser, "Accedi con smart card" opens the mailbox', async () => {
    await cardPage.goto(CARD_URL);
    await cardPage.waitForSelector('#card-login-btn:not([hidden])');
    await shot(cardPage, '03-card-login');
    await cardPage.click('#card-login-btn');
    await cardPage.waitForSelector('#mail-view:not([hidden])');
    assert.equal(await cardPage.textContent('#whoami'), USER);
  });

  await step('no script error', async () => {
    assert.deepEqual(errors, []);
  });
} catch (e) {
  unexpected(e);
} finally {
  await browser.close();
}
process.exit(finish());
