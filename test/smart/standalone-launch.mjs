// A SMART app standalone launch with fhirclient (the SMART JS client) in
// Node, against a PFR: the app server runs on 127.0.0.1 and this script is
// also its user: it follows the redirects like a browser, logs in and
// consents on the provider's scripted pages, and lands back on the app,
// which reads the launch Patient. e2e/smart_fhirclient_test.go runs it.
//
//   FHIR_BASE=https://john.pfr.localhost:9443/fhir CA_FILE=root.crt \
//   SMART_USER=john SMART_PASSWORD=… node standalone-launch.mjs
//
// Environment: FHIR_BASE (the PFR, the app's iss), CA_FILE (PEM of the
// gateway's CA), SMART_USER, SMART_PASSWORD, CLIENT_ID (default
// pfr-smart-app), SCOPE (default "openid fhirUser launch/patient patient/*.rs").
// On success it prints one line "result <JSON>" with the Patient the app
// read, the launch context and the number of Observations it found.

import dns from 'node:dns';
import { readFileSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import tls from 'node:tls';

import smart from 'fhirclient';

const fhirBase = required('FHIR_BASE');
const user = required('SMART_USER');
const password = required('SMART_PASSWORD');
const clientId = process.env.CLIENT_ID || 'pfr-smart-app';
const scope = process.env.SCOPE || 'openid fhirUser launch/patient patient/*.rs';
const maxSteps = 20;

// Everything is bounded: the launch either finishes or the script fails.
setTimeout(() => fail(new Error('standalone launch timed out')), 45_000);

function required(name) {
  const v = process.env[name];
  if (!v) fail(new Error(`${name} is required`));
  return v;
}

function fail(err) {
  process.stderr.write(`standalone launch failed: ${err.stack || err}\n`);
  process.exit(1);
}

// fhirclient's Node build fetches with node-fetch through https.globalAgent:
// trust the gateway's CA and resolve *.localhost to loopback, as browsers do.
https.globalAgent = new https.Agent({
  ca: [...tls.rootCertificates, readFileSync(required('CA_FILE'), 'utf8')],
  lookup(hostname, options, callback) {
    if (hostname === 'localhost' || hostname.endsWith('.localhost')) {
      if (options.all) return callback(null, [{ address: '127.0.0.1', family: 4 }]);
      return callback(null, '127.0.0.1', 4);
    }
    return dns.lookup(hostname, options, callback);
  },
});

// The app: one user, so one session object stands for express-session.
const session = {};
let result;

const app = http.createServer(async (req, res) => {
  req.session = session;
  try {
    const url = new URL(req.url, 'http://127.0.0.1');
    if (url.pathname === '/launch') {
      await smart(req, res).authorize({
        iss: fhirBase, clientId, scope, redirectUri: '/callback', pkceMode: 'required',
      });
      return;
    }
    if (url.pathname === '/callback') {
      const client = await smart(req, res).ready();
      const patient = await client.patient.read();
      const observations = await client.request(`Observation?patient=${encodeURIComponent(client.patient.id)}`);
      result = {
        patient,
        launchPatient: client.patient.id,
        serverUrl: client.state.serverUrl,
        tokenScope: client.state.tokenResponse?.scope,
        observations: observations.total ?? (observations.entry || []).length,
      };
      res.writeHead(200, { 'Content-Type': 'application/json' });
      res.end(JSON.stringify(result));
      return;
    }
    res.writeHead(404).end();
  } catch (err) {
    res.writeHead(500, { 'Content-Type': 'text/plain' }).end(String(err.stack || err));
  }
});

// A browser: a cookie jar per host, redirects followed one by one, the
// provider's login and consent forms filled in.
const jar = new Map();

function cookieHeader(url) {
  const cookies = jar.get(url.host) || new Map();
  return [...cookies].map(([k, v]) => `${k}=${v}`).join('; ');
}

function storeCookies(url, res) {
  const cookies = jar.get(url.host) || new Map();
  for (const line of res.headers.getSetCookie()) {
    const [pair, ...attrs] = line.split(';');
    const i = pair.indexOf('=');
    const name = pair.slice(0, i).trim();
    const expired = attrs.some((a) => /^\s*expires=Thu, 01 Jan 1970/i.test(a) || /^\s*max-age=0\b/i.test(a));
    if (expired) cookies.delete(name);
    else cookies.set(name, pair.slice(i + 1).trim());
  }
  jar.set(url.host, cookies);
}

async function browse(start) {
  let url = new URL(start);
  let init = { method: 'GET' };
  for (let step = 0; step < maxSteps; step++) {
    const res = await fetch(url, {
      ...init, redirect: 'manual', headers: { ...init.headers, cookie: cookieHeader(url) },
    });
    storeCookies(url, res);
    const body = await res.text();
    if (res.status >= 300 && res.status < 400) {
      url = new URL(res.headers.get('location'), url);
      init = { method: 'GET' };
      continue;
    }
    if (res.status !== 200) throw new Error(`${init.method} ${url}: status ${res.status}: ${body.slice(0, 500)}`);
    if (url.pathname === '/callback') return JSON.parse(body);
    const prompt = /data-prompt="([a-z_]+)"/.exec(body);
    const action = /<form method="post" action="([^"]+)">/.exec(body);
    if (!prompt || !action) throw new Error(`${url} is neither the app nor an interaction: ${body.slice(0, 300)}`);
    const form = prompt[1] === 'login' ? { username: user, password } : {};
    url = new URL(action[1], url);
    init = {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams(form).toString(),
    };
  }
  throw new Error(`the launch did not come back to the app in ${maxSteps} steps`);
}

app.listen(0, '127.0.0.1', async () => {
  try {
    const { port } = app.address();
    await browse(`http://127.0.0.1:${port}/launch`);
    process.stdout.write(`result ${JSON.stringify(result)}\n`);
    process.exit(0);
  } catch (err) {
    fail(err);
  }
});
