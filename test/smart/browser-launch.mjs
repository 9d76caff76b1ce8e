// A SMART app in a real browser: headless Chromium (Debian's `chromium`,
// driven with puppeteer-core) runs a page built on fhirclient.js's browser
// bundle that launches standalone against a PFR whose authorization server
// is the gateway's own. The person logs in, unticks one scope on the
// consent page and allows; the app reads the Patient and Observations, and
// tries the unticked type. e2e/authz_browser_test.go runs it.
//
// Environment:
//   FHIR_BASE   the PFR's FHIR base (the app's iss)
//   APP_USER    the account to log in as (a development account)
//   UNTICK      the scope to untick on the consent page
//   SCOPE       the scope the app asks for
//   DENIED_TYPE the resource type the app tries although it was unticked
//   CHROMIUM    the browser binary (default /usr/bin/chromium)
//   SPKI        base64 SHA-256 of the gateway CA's public key: certificates
//               chaining to it are accepted (--ignore-certificate-errors-spki-list)
//   SHOT_DIR    where the screenshots go (login, consent, app)
//   SHOT_PREFIX their names' prefix (default smart-)
//   LOGIN       "dev" (the gateway's development-account form) or
//               "provider:<user>:<password>" (oidc-provider's form)
//   NODE_EXTRA_CA_CERTS  the gateway's CA, for the registration call
//
// It registers the app (RFC 7591) at the registration endpoint the PFR's
// smart-configuration names, then drives the browser. On success it prints
// one line "result <JSON>".

import { mkdirSync, readFileSync } from 'node:fs';
import dns from 'node:dns';
import http from 'node:http';
import https from 'node:https';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import puppeteer from 'puppeteer-core';

const here = path.dirname(fileURLToPath(import.meta.url));
const env = (name, def) => {
  const v = process.env[name] ?? def;
  if (v === undefined) fail(new Error(`${name} is required`));
  return v;
};
const fhirBase = env('FHIR_BASE');
const user = env('APP_USER');
const untick = env('UNTICK');
const scope = env('SCOPE');
const deniedType = env('DENIED_TYPE');
const chromium = env('CHROMIUM', '/usr/bin/chromium');
const spki = env('SPKI');
const shotDir = env('SHOT_DIR');
const login = env('LOGIN', 'dev');
const shotPrefix = env('SHOT_PREFIX', 'smart-');

let browser;
let profile;
function fail(err) {
  process.stderr.write(`browser launch failed: ${err.stack || err}\n`);
  cleanup().finally(() => process.exit(1));
}
async function cleanup() {
  try { if (browser) await browser.close(); } catch { /* already gone */ }
  if (profile) rmSync(profile, { recursive: true, force: true });
}
setTimeout(() => fail(new Error('browser launch timed out')), 100_000).unref();

const fhirClientJS = readFileSync(path.join(here, 'node_modules', 'fhirclient', 'build', 'fhir-client.js'));

// The app: two static pages and fhirclient's browser bundle.
const launchPage = (clientId) => `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Launch</title>
<script src="/fhir-client.js"></script></head><body><p>Launching…</p>
<script>
FHIR.oauth2.authorize({
  iss: ${JSON.stringify(fhirBase)}, clientId: ${JSON.stringify(clientId)},
  scope: ${JSON.stringify(scope)}, redirectUri: "app.html", pkceMode: "required"
}).catch(e => { document.body.textContent = "authorize failed: " + e; });
</script></body></html>`;

const appPage = `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>My health app</title>
<script src="/fhir-client.js"></script>
<style>body{font-family:sans-serif;margin:2rem} pre{background:#f4f4f4;padding:1rem}</style></head>
<body><h1>My health app</h1><p id="status">Loading…</p><pre id="result" hidden></pre>
<script>
(async () => {
  const client = await FHIR.oauth2.ready();
  const patient = await client.patient.read();
  const obs = await client.request("Observation?patient=" + client.patient.id, { flat: true });
  let denied = null;
  try {
    await client.request(${JSON.stringify(deniedType)} + "?patient=" + client.patient.id);
    denied = { status: 200 };
  } catch (e) {
    denied = { status: e.status || (e.response && e.response.status) || 0, message: String(e.message || e) };
  }
  const result = {
    patient, launchPatient: client.patient.id, serverUrl: client.state.serverUrl,
    tokenScope: client.state.tokenResponse.scope, accessToken: client.state.tokenResponse.access_token,
    refreshToken: client.state.tokenResponse.refresh_token || "",
    idToken: !!client.state.tokenResponse.id_token,
    observations: obs.map(o => o.code && o.code.coding && o.code.coding[0].code), denied,
  };
  document.getElementById("status").textContent = "Read " + obs.length + " observations of " +
    (patient.name && patient.name[0] ? (patient.name[0].given || []).join(" ") + " " + patient.name[0].family : patient.id) +
    "; " + ${JSON.stringify(deniedType)} + ": " + denied.status;
  document.getElementById("result").textContent = JSON.stringify(result);
})().catch(e => { document.getElementById("status").textContent = "failed: " + e; document.getElementById("result").textContent = JSON.stringify({ error: String(e) }); });
</script></body></html>`;

function serve(clientIdRef) {
  return http.createServer((req, res) => {
    const url = new URL(req.url, 'http://127.0.0.1');
    if (url.pathname === '/fhir-client.js') {
      res.writeHead(200, { 'Content-Type': 'text/javascript' }).end(fhirClientJS);
    } else if (url.pathname === '/launch.html') {
      res.writeHead(200, { 'Content-Type': 'text/html' }).end(launchPage(clientIdRef.id));
    } else if (url.pathname === '/app.html') {
      res.writeHead(200, { 'Content-Type': 'text/html' }).end(appPage);
    } else {
      res.writeHead(404).end();
    }
  });
}

// request is a JSON call over https that resolves *.localhost to loopback,
// as browsers do (NODE_EXTRA_CA_CERTS trusts the gateway's CA).
function request(method, url, body) {
  const lookup = (hostname, options, callback) => {
    if (hostname === 'localhost' || hostname.endsWith('.localhost')) {
      if (options.all) return callback(null, [{ address: '127.0.0.1', family: 4 }]);
      return callback(null, '127.0.0.1', 4);
    }
    return dns.lookup(hostname, options, callback);
  };
  return new Promise((resolve, reject) => {
    const req = https.request(url, { method, lookup, headers: { 'content-type': 'application/json', accept: 'application/json' } }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => {
        try {
          resolve({ status: res.statusCode, body: JSON.parse(Buffer.concat(chunks).toString('utf8')) });
        } catch (err) {
          reject(err);
        }
      });
    });
    req.on('error', reject);
    req.end(body === undefined ? undefined : JSON.stringify(body));
  });
}

async function register(redirectUri) {
  const conf = (await request('GET', `${fhirBase}/.well-known/smart-configuration`)).body;
  if (!conf.registration_endpoint) throw new Error('the smart-configuration names no registration_endpoint');
  const res = await request('POST', conf.registration_endpoint, {
    client_name: 'My health app', redirect_uris: [redirectUri], token_endpoint_auth_method: 'none',
    grant_types: ['authorization_code', 'refresh_token'], response_types: ['code'],
  });
  if (res.status !== 201) throw new Error(`registration: ${res.status} ${JSON.stringify(res.body)}`);
  return res.body.client_id;
}

async function main() {
  mkdirSync(shotDir, { recursive: true });
  const clientIdRef = { id: '' };
  const app = serve(clientIdRef);
  await new Promise((resolve) => app.listen(0, '127.0.0.1', resolve));
  const origin = `http://127.0.0.1:${app.address().port}`;
  clientIdRef.id = await register(`${origin}/app.html`);

  profile = mkdtempSync(path.join(os.tmpdir(), 'pfr-chromium-'));
  browser = await puppeteer.launch({
    executablePath: chromium,
    headless: true,
    userDataDir: profile,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
      `--ignore-certificate-errors-spki-list=${spki}`],
  });
  const page = await browser.newPage();
  await page.setViewport({ width: 900, height: 900 });
  page.setDefaultTimeout(30_000);
  const shot = (name) => page.screenshot({ path: path.join(shotDir, shotPrefix + name), fullPage: true });

  await page.goto(`${origin}/launch.html`);
  // Login: the gateway's development-account form, or the provider's.
  await page.waitForSelector('input[name=username]');
  await shot('login.png');
  if (login === 'dev') {
    await page.type('input[name=username]', user);
  } else {
    const [, u, p] = login.split(':');
    await page.type('input[name=username]', u);
    await page.type('input[name=password]', p);
  }
  await Promise.all([page.waitForNavigation(), page.click('form button')]);
  // oidc-provider may ask for its own consent (to log in to the gateway).
  while (!(await page.$('input[name=scope]'))) {
    if (!(await page.$('form button'))) throw new Error(`neither consent nor a form at ${page.url()}: ${await page.content()}`);
    await Promise.all([page.waitForNavigation(), page.click('form button')]);
  }
  // Consent: untick one scope, allow.
  const box = `input[name=scope][value="${untick}"]`;
  await page.waitForSelector(box);
  await page.click(box);
  if (await page.$eval(box, (el) => el.checked)) throw new Error('the scope could not be unticked');
  await shot('consent.png');
  await Promise.all([page.waitForNavigation(), page.click('button[value=approve]')]);
  // Back in the app.
  await page.waitForFunction(() => document.getElementById('result')?.textContent.length > 0, { timeout: 30_000 });
  await shot('app.png');
  const result = JSON.parse(await page.$eval('#result', (el) => el.textContent));
  result.clientId = clientIdRef.id;
  process.stdout.write(`result ${JSON.stringify(result)}\n`);
  app.close();
  await cleanup();
  process.exit(0);
}

main().catch(fail);
