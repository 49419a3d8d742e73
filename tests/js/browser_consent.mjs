// A person at a real browser: Debian's chromium, driven by playwright-core, opens an
// authorization URL, signs in, reads the consent page, keeps a screenshot, approves, and is
// sent to the client's loopback redirect URI, where a listener started here catches the
// request. The script only observes; tests/e2e/test_browser_consent.py asserts.
//
// Usage: node browser_consent.mjs '<json>' with
//   {authorizeUrl, redirectUri, username, password, screenshot, chromium?, timeoutMs?}
// Prints one JSON line on stdout: {ok, loginTitle, consentTitle, consentText, callbackUrl,
// finalUrl, cookies, console, posts (URL and Origin of each form POST), error?}. Exit status 0 when the redirect was caught.

import { mkdtempSync, rmSync } from 'node:fs';
import http from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { toolsRequire } from './tools.mjs';

const { chromium } = toolsRequire('playwright-core');

const CHROMIUM_ARGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
];

const opts = JSON.parse(process.argv[2]);
const timeoutMs = opts.timeoutMs ?? 60_000;
const stepMs = Math.min(15_000, timeoutMs);
const report = { ok: false, console: [], cookies: [] };

function finish(code) {
  process.stdout.write(JSON.stringify(report) + '\n', () => process.exit(code));
}

// Never hang: whatever happens, report and exit before the caller's own timeout.
const watchdog = setTimeout(() => {
  report.error = `timed out after ${timeoutMs} ms`;
  finish(3);
}, timeoutMs);
watchdog.unref();

/** Listen on the redirect URI's port on loopback; resolve with the first request's URL. */
function listenForRedirect(redirectUri) {
  const target = new URL(redirectUri);
  let resolve;
  const caught = new Promise((r) => { resolve = r; });
  const handler = (req, res) => {
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
    res.end('<!doctype html><title>Signed in</title><p>You can close this window.</p>');
    resolve(new URL(req.url, `${target.protocol}//${target.host}`).href);
  };
  const servers = ['127.0.0.1', '::1'].map((host) => {
    const server = http.createServer(handler);
    return new Promise((ok) => {
      server.once('error', () => ok(null)); // ::1 may be unavailable; 127.0.0.1 must not be
      server.listen(Number(target.port), host, () => ok(server));
    });
  });
  return Promise.all(servers).then((list) => {
    if (!list[0]) throw new Error(`cannot listen on 127.0.0.1:${target.port}`);
    return { caught, close: () => list.forEach((s) => s && s.close()) };
  });
}

async function main() {
  const listener = await listenForRedirect(opts.redirectUri);
  const profile = mkdtempSync(join(tmpdir(), 'bastion-chromium-'));
  let context;
  try {
    context = await chromium.launchPersistentContext(profile, {
      executablePath: opts.chromium ?? '/usr/bin/chromium',
      headless: true,
      args: CHROMIUM_ARGS,
      timeout: stepMs,
    });
    const page = context.pages()[0] ?? (await context.newPage());
    page.setDefaultTimeout(stepMs);
    page.on('console', (msg) => report.console.push(`${msg.type()}: ${msg.text()}`));
    report.posts = [];
    page.on('request', (req) => {
      if (req.method() === 'POST') {
        report.posts.push({ url: req.url(), origin: req.headers().origin ?? null });
      }
    });

    await page.goto(opts.authorizeUrl);
    report.loginTitle = await page.title();
    await page.getByLabel('Username').fill(opts.username);
    await page.getByLabel('Password').fill(opts.password);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.waitForLoadState('load');
    if ((await page.getByRole('button', { name: 'Allow' }).count()) === 0) {
      report.stuckAt = { url: page.url(), text: await page.locator('body').innerText() };
      throw new Error('no consent page after signing in');
    }
    report.consentTitle = await page.title();
    report.consentText = await page.locator('body').innerText();
    await page.screenshot({ path: opts.screenshot, fullPage: true });
    report.screenshot = opts.screenshot;
    report.cookies = (await context.cookies()).map((c) => ({
      name: c.name, domain: c.domain, path: c.path, secure: c.secure, httpOnly: c.httpOnly,
      sameSite: c.sameSite,
    }));

    const blocked = new Promise((_, fail) => {
      setTimeout(() => fail(new Error('the browser was not sent to the redirect URI')), stepMs);
      page.on('console', (msg) => {
        if (msg.text().includes('Content Security Policy')) fail(new Error(msg.text()));
      });
    });
    blocked.catch(() => {});
    await page.getByRole('button', { name: 'Allow' }).click();
    report.callbackUrl = await Promise.race([listener.caught, blocked]);
    await page.waitForLoadState('load').catch(() => {});
    report.finalUrl = page.url();
    report.ok = true;
  } finally {
    listener.close();
    if (context) await context.close().catch(() => {});
    rmSync(profile, { recursive: true, force: true });
  }
}

main().then(() => finish(0), (err) => {
  report.error = String(err && err.stack ? err.stack : err);
  finish(1);
});
