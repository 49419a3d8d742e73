// The official TypeScript MCP SDK client (@modelcontextprotocol/sdk, StreamableHTTP transport
// with an OAuthClientProvider) against a protected endpoint: the 401, discovery, dynamic client
// registration, the authorization request, then a headless person who signs in and approves on
// the real login and consent forms (fetch with cookies kept by hand, as tests/support.py's
// HeadlessUser does), finishAuth with the code, a fresh connection, tools/list and tools/call.
// The script only observes; tests/e2e/test_ts_sdk_client.py asserts.
//
// Usage: node ts_sdk_client.mjs '<json>' with
//   {endpoint, username, password, redirectUri, clientMetadataUrl?, timeoutMs?}
// Prints one JSON line on stdout; exit status 0 when the tool call came back.

import { toolsRequire } from './tools.mjs';

const { Client } = toolsRequire('@modelcontextprotocol/sdk/client/index.js');
const { StreamableHTTPClientTransport } = toolsRequire(
  '@modelcontextprotocol/sdk/client/streamableHttp.js');
const { UnauthorizedError } = toolsRequire('@modelcontextprotocol/sdk/client/auth.js');

const opts = JSON.parse(process.argv[2]);
const timeoutMs = opts.timeoutMs ?? 60_000;
const stepMs = Math.min(15_000, timeoutMs);
const report = { ok: false };

function finish(code) {
  process.stdout.write(JSON.stringify(report) + '\n', () => process.exit(code));
}

const watchdog = setTimeout(() => {
  report.error = `timed out after ${timeoutMs} ms`;
  finish(3);
}, timeoutMs);
watchdog.unref();

/** Everything the SDK asks its host application to keep, in memory. */
class MemoryProvider {
  constructor(redirectUri) {
    this.redirectUri = redirectUri;
    this.stateValue = crypto.randomUUID();
    this.saved = {};
    this.authorizationUrls = [];
  }

  get redirectUrl() { return this.redirectUri; }

  // CIMD: when set, the SDK uses this https URL as its client_id (no registration).
  get clientMetadataUrl() { return opts.clientMetadataUrl; }

  get clientMetadata() {
    return {
      client_name: 'TypeScript SDK e2e', redirect_uris: [this.redirectUri],
      grant_types: ['authorization_code', 'refresh_token'], response_types: ['code'],
      token_endpoint_auth_method: 'none', application_type: 'native',
    };
  }

  state() { return this.stateValue; }
  clientInformation() { return this.saved.client; }
  saveClientInformation(info) { this.saved.client = info; }
  tokens() { return this.saved.tokens; }
  saveTokens(tokens) { this.saved.tokens = tokens; }
  redirectToAuthorization(url) { this.authorizationUrls.push(url.href); }
  saveCodeVerifier(verifier) { this.saved.verifier = verifier; }
  codeVerifier() { return this.saved.verifier; }
  saveDiscoveryState(state) { this.saved.discovery = state; }
  discoveryState() { return this.saved.discovery; }
  invalidateCredentials(scope) { (report.invalidated ??= []).push(scope); }
}

const unescapeHtml = (s) => s.replace(/&quot;/g, '"').replace(/&#x27;/g, "'")
  .replace(/&lt;/g, '<').replace(/&gt;/g, '>').replace(/&amp;/g, '&');

/** A person without a browser: follows redirects, signs in, approves, stops at the client. */
class HeadlessUser {
  constructor(username, password) {
    Object.assign(this, { username, password, cookies: new Map(), pages: [] });
  }

  keep(res) {
    for (const raw of res.headers.getSetCookie()) {
      const [pair] = raw.split(';', 1);
      const at = pair.indexOf('=');
      this.cookies.set(pair.slice(0, at).trim(), pair.slice(at + 1));
    }
  }

  async request(url, init = {}) {
    const headers = { ...(init.headers ?? {}) };
    if (this.cookies.size) {
      headers.cookie = [...this.cookies].map(([k, v]) => `${k}=${v}`).join('; ');
    }
    const res = await fetch(url, { ...init, headers, redirect: 'manual',
      signal: AbortSignal.timeout(stepMs) });
    this.keep(res);
    return res;
  }

  async authorize(url, redirectPrefix) {
    let res = await this.request(url);
    for (let step = 0; step < 10; step++) {
      if (res.status === 302 || res.status === 303) {
        const location = new URL(res.headers.get('location'), res.url || url).href;
        if (location.startsWith(redirectPrefix)) {
          return Object.fromEntries(new URL(location).searchParams);
        }
        res = await this.request(location);
        url = location;
        continue;
      }
      const page = await res.text();
      if (res.status !== 200) throw new Error(`authorization stopped at HTTP ${res.status}: ${page.slice(0, 300)}`);
      this.pages.push(page);
      const form = page.match(/<form method="post" action="([^"]+)">([\s\S]*?)<\/form>/);
      if (!form) throw new Error(`no form on the page: ${page.slice(0, 300)}`);
      const fields = new URLSearchParams();
      for (const [, name, value] of form[2].matchAll(/<input type="hidden" name="([^"]+)" value="([^"]*)"/g)) {
        fields.set(name, unescapeHtml(value));
      }
      if (form[2].includes('name="password"')) {
        fields.set('username', this.username);
        fields.set('password', this.password);
      } else {
        fields.set('decision', 'approve');
      }
      const action = new URL(unescapeHtml(form[1]), url);
      res = await this.request(action.href, { method: 'POST', body: fields,
        headers: { origin: action.origin } });
      url = action.href;
    }
    throw new Error('too many steps in the authorization flow');
  }
}

async function connect(provider) {
  const transport = new StreamableHTTPClientTransport(new URL(opts.endpoint),
    { authProvider: provider });
  const client = new Client({ name: 'bastion-ts-e2e', version: '1.0.0' });
  await client.connect(transport, { timeout: stepMs });
  return { client, transport };
}

async function main() {
  const provider = new MemoryProvider(opts.redirectUri);
  const first = new StreamableHTTPClientTransport(new URL(opts.endpoint),
    { authProvider: provider });
  try {
    await new Client({ name: 'bastion-ts-e2e', version: '1.0.0' })
      .connect(first, { timeout: stepMs });
    throw new Error('the endpoint accepted a client without a token');
  } catch (err) {
    if (!(err instanceof UnauthorizedError)) throw err;
  }
  report.authorizationUrl = provider.authorizationUrls[0];
  report.clientId = provider.saved.client?.client_id;
  report.issuer = provider.saved.discovery?.authorizationServerMetadata?.issuer;

  const user = new HeadlessUser(opts.username, opts.password);
  const answer = await user.authorize(report.authorizationUrl, opts.redirectUri);
  report.callback = { ...answer, code: answer.code ? '<present>' : undefined };
  report.stateMatches = answer.state === provider.stateValue;
  report.consentPage = user.pages.find((p) => p.includes('Allow')) ?? null;
  if (!answer.code) throw new Error(`no code in the redirect: ${JSON.stringify(answer)}`);

  await first.finishAuth(answer.code);
  report.tokenScope = provider.saved.tokens?.scope;
  report.hasRefreshToken = Boolean(provider.saved.tokens?.refresh_token);

  const { client, transport } = await connect(provider);
  try {
    report.protocolVersion = transport.protocolVersion ?? null;
    report.tools = (await client.listTools(undefined, { timeout: stepMs })).tools
      .map((t) => t.name);
    const result = await client.callTool({ name: 'add', arguments: { a: 2, b: 3 } },
      undefined, { timeout: stepMs });
    report.addResult = result.structuredContent ?? result.content;
    report.ok = true;
  } finally {
    await client.close().catch(() => {});
  }
}

main().then(() => finish(0), (err) => {
  report.error = String(err && err.stack ? err.stack : err);
  finish(1);
});
