// A real OpenID provider (oidc-provider) for the gateway's SMART end-to-end
// tests (e2e/smart_*_test.go). It listens on 127.0.0.1 only.
//
//   node test/smart/provider.mjs
//
// Environment:
//   SMART_PORT           port to listen on (default 0: any free port)
//   SMART_CONFIG         the JSON configuration (default testdata/oidc/provider.json)
//   SMART_ADMIN_TOKEN    bearer token of the /admin endpoints (required)
//
// When it is ready it prints one line to stdout: "ready <issuer>".
//
// What it shows, as a provider SMART apps would meet:
//   - resource indicators (RFC 8707): the resource is a PFR's FHIR base (or the
//     management API's apex); a SMART `aud` parameter stands for `resource`
//     when the app sends none; access tokens are RS256 JWTs whose aud is the
//     resource and whose scope holds the granted SMART scopes;
//   - client_credentials (client_secret_basic), authorization_code with PKCE
//     S256 (required for public clients), refresh tokens for offline_access;
//   - a scripted login and consent (no dev interactions): GET
//     /interaction/{uid} is a small HTML page whose <main data-prompt="...">
//     names the prompt and whose <form action> is where to POST;
//   - the launch context: the token response carries `patient` (the PFR's
//     Patient id, registered with POST /admin/launch-context) whenever the
//     granted scope includes launch/patient.
//
// Admin endpoints (Authorization: Bearer $SMART_ADMIN_TOKEN), for the tests:
//   POST /admin/keys/rotate           add a new RS256 key and sign with it from now on
//   POST /admin/keys/retire?kid=KID   remove a key from the JWKS (and from signing)
//   POST /admin/launch-context        {"resource": FHIR base, "patient": Patient id}
// Key changes rebuild the provider instance in place (same port, same issuer);
// grants, sessions and tokens live in oidc-provider's process-wide memory
// adapter and survive it.

import { generateKeyPairSync, randomBytes, randomUUID, timingSafeEqual } from 'node:crypto';
import { readFileSync } from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import Provider, { errors } from 'oidc-provider';

const here = path.dirname(fileURLToPath(import.meta.url));
const configPath = process.env.SMART_CONFIG || path.join(here, '..', '..', 'testdata', 'oidc', 'provider.json');
const settings = JSON.parse(readFileSync(configPath, 'utf8'));
const adminToken = process.env.SMART_ADMIN_TOKEN || '';
if (adminToken.length < 16) {
  console.error('SMART_ADMIN_TOKEN must be set (at least 16 characters)');
  process.exit(2);
}
const fhirBasePattern = new RegExp(settings.resources.fhirBase);
const managementAPI = settings.resources.managementAPI;

/** launchPatients maps a PFR's FHIR base to its Patient id. */
const launchPatients = new Map();

/** signingKeys are private JWKs, newest first: the first one signs. */
let signingKeys = [newSigningKey()];

function newSigningKey() {
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  return { ...privateKey.export({ format: 'jwk' }), kid: `rsa-${randomUUID()}`, alg: 'RS256', use: 'sig' };
}

// The public app is "native" (RFC 8252): its loopback redirect URI
// http://127.0.0.1/callback matches on any port, so each test owns its own.
const { clients } = settings;

const cookieKeys = [randomBytes(32).toString('base64url')];

/** resourceServer describes a resource the provider issues tokens for. */
function resourceServer(resource, client) {
  let scope;
  if (resource === managementAPI) {
    scope = ''; // the management API needs no SMART scope
  } else if (fhirBasePattern.test(resource)) {
    scope = settings.resourceScopes;
  } else {
    throw new errors.InvalidTarget(`unknown resource ${resource}`);
  }
  // A client is granted only the SMART scopes configured for it.
  const allowed = new Set((settings.clientResourceScopes[client?.clientId] || '').split(' '));
  scope = scope.split(' ').filter((s) => allowed.has(s)).join(' ');
  return {
    scope,
    audience: resource,
    accessTokenFormat: 'jwt',
    accessTokenTTL: settings.accessTokenTTL,
    jwt: { sign: { alg: 'RS256' } },
  };
}

function buildProvider(issuer) {
  const provider = new Provider(issuer, {
    clients,
    jwks: { keys: signingKeys },
    cookies: { keys: cookieKeys },
    scopes: settings.oidcScopes,
    claims: { openid: ['sub'], fhirUser: ['fhirUser'] },
    // SMART apps name the FHIR server with `aud`; `launch` is the EHR launch.
    extraParams: ['aud', 'launch'],
    findAccount: async (_ctx, id) => (Object.hasOwn(settings.users, id)
      ? { accountId: id, claims: async () => ({ sub: id }) }
      : undefined),
    interactions: { url: (_ctx, interaction) => `/interaction/${interaction.uid}` },
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      resourceIndicators: {
        enabled: true,
        // Without a resource parameter, SMART's aud is the resource.
        defaultResource: async (ctx, _client, oneOf) => {
          if (oneOf) return oneOf[0];
          return ctx.oidc.params?.aud || undefined;
        },
        useGrantedResource: async () => true,
        getResourceServerInfo: async (_ctx, resource, client) => resourceServer(resource, client),
      },
    },
    pkce: { required: (_ctx, client) => client.clientAuthMethod === 'none' },
    formats: {
      customizers: {
        // Mimic other providers' token shapes for the clients configured so.
        jwt: async (_ctx, token, jwt) => {
          const shape = settings.tokenShapes?.[token.clientId];
          if (!shape) return;
          if (shape.audArray) jwt.payload.aud = [jwt.payload.aud, `${issuer}/me`];
          if (shape.scopeClaim === 'scp') {
            jwt.payload.scp = (jwt.payload.scope || '').split(' ').filter(Boolean);
            delete jwt.payload.scope;
          }
        },
      },
    },
    ttl: {
      AccessToken: settings.accessTokenTTL,
      ClientCredentials: settings.accessTokenTTL,
      AuthorizationCode: 60,
      Interaction: 600,
      Grant: 3600,
      Session: 3600,
      RefreshToken: 3600,
    },
    renderError: async (ctx, out) => {
      ctx.type = 'json';
      ctx.body = out;
    },
  });
  provider.use(addLaunchContext);
  return provider;
}

// addLaunchContext puts the PFR's Patient id into token responses whose
// scope includes launch/patient (SMART App Launch: "patient" in the token
// response). The resource is read from the access token's aud.
async function addLaunchContext(ctx, next) {
  await next();
  if (ctx.oidc?.route !== 'token' || ctx.status !== 200 || !ctx.body?.access_token) return;
  const granted = (ctx.body.scope || '').split(' ');
  if (!granted.includes('launch/patient')) return;
  const payload = JSON.parse(Buffer.from(ctx.body.access_token.split('.')[1], 'base64url').toString());
  const audiences = Array.isArray(payload.aud) ? payload.aud : [payload.aud];
  for (const aud of audiences) {
    if (launchPatients.has(aud)) {
      ctx.body = { ...ctx.body, patient: launchPatients.get(aud), need_patient_banner: false };
      return;
    }
  }
}

// ---- HTTP: admin, interactions, then the provider itself ----

async function readForm(req) {
  const body = await readBody(req);
  return Object.fromEntries(new URLSearchParams(body));
}

async function readBody(req) {
  const chunks = [];
  let size = 0;
  for await (const chunk of req) {
    size += chunk.length;
    if (size > 64 * 1024) throw new Error('request body too large');
    chunks.push(chunk);
  }
  return Buffer.concat(chunks).toString('utf8');
}

function send(res, status, type, body) {
  res.writeHead(status, { 'Content-Type': type, 'Cache-Control': 'no-store' });
  res.end(body);
}

function sendJSON(res, status, value) {
  send(res, status, 'application/json', JSON.stringify(value));
}

function escapeHTML(s) {
  return String(s).replace(/[&<>"']/g, (ch) => `&#${ch.charCodeAt(0)};`);
}

function isAdmin(req) {
  const got = Buffer.from(req.headers.authorization || '');
  const want = Buffer.from(`Bearer ${adminToken}`);
  return got.length === want.length && timingSafeEqual(got, want);
}

let provider;
let providerCallback;

function rebuild(issuer) {
  provider = buildProvider(issuer);
  providerCallback = provider.callback();
}

async function handleAdmin(req, res, url, issuer) {
  if (!isAdmin(req)) return sendJSON(res, 401, { error: 'admin token required' });
  if (req.method !== 'POST') return sendJSON(res, 405, { error: 'POST only' });
  switch (url.pathname) {
    case '/admin/keys/rotate': {
      const key = newSigningKey();
      signingKeys = [key, ...signingKeys];
      rebuild(issuer);
      return sendJSON(res, 200, { kid: key.kid, kids: signingKeys.map((k) => k.kid) });
    }
    case '/admin/keys/retire': {
      const kid = url.searchParams.get('kid');
      const rest = signingKeys.filter((k) => k.kid !== kid);
      if (rest.length === signingKeys.length) return sendJSON(res, 404, { error: `no key ${kid}` });
      if (rest.length === 0) return sendJSON(res, 409, { error: 'the last key cannot be retired' });
      signingKeys = rest;
      rebuild(issuer);
      return sendJSON(res, 200, { kids: signingKeys.map((k) => k.kid) });
    }
    case '/admin/launch-context': {
      const { resource, patient } = JSON.parse(await readBody(req));
      if (!fhirBasePattern.test(resource || '') || !/^[A-Za-z0-9\-.]{1,64}$/.test(patient || '')) {
        return sendJSON(res, 400, { error: 'want {"resource": a PFR FHIR base, "patient": a Patient id}' });
      }
      launchPatients.set(resource, patient);
      return sendJSON(res, 200, { resource, patient });
    }
    default:
      return sendJSON(res, 404, { error: 'unknown admin endpoint' });
  }
}

// interactionPage renders the current prompt as a form a script can fill.
function interactionPage(uid, details, message = '') {
  const { prompt, params } = details;
  const action = prompt.name === 'login' ? 'login' : 'confirm';
  const fields = prompt.name === 'login'
    ? '<input name="username"> <input name="password" type="password">'
    : `<p>${escapeHTML(params.client_id)} asks for: ${escapeHTML(params.scope || '')}</p>`;
  return `<!doctype html><title>${escapeHTML(prompt.name)}</title>
<main data-prompt="${escapeHTML(prompt.name)}">
<p class="error">${escapeHTML(message)}</p>
<form method="post" action="/interaction/${escapeHTML(uid)}/${action}">${fields}<button>Continue</button></form>
<form method="post" action="/interaction/${escapeHTML(uid)}/abort"><button>Cancel</button></form>
</main>`;
}

async function handleInteraction(req, res, uid, action) {
  const details = await provider.interactionDetails(req, res);
  if (details.uid !== uid) return send(res, 400, 'text/plain', 'interaction mismatch');
  if (req.method === 'GET' && !action) {
    return send(res, 200, 'text/html; charset=utf-8', interactionPage(uid, details));
  }
  if (req.method !== 'POST') return send(res, 405, 'text/plain', 'POST only');
  const form = await readForm(req);
  switch (action) {
    case 'login': {
      if (details.prompt.name !== 'login') return send(res, 400, 'text/plain', 'not a login prompt');
      const user = settings.users[form.username];
      const ok = user && Object.hasOwn(settings.users, form.username)
        && Buffer.byteLength(form.password || '') === Buffer.byteLength(user.password)
        && timingSafeEqual(Buffer.from(form.password || ''), Buffer.from(user.password));
      if (!ok) {
        return send(res, 401, 'text/html; charset=utf-8', interactionPage(uid, details, 'invalid username or password'));
      }
      return provider.interactionFinished(req, res, { login: { accountId: form.username } }, { mergeWithLastSubmission: false });
    }
    case 'confirm': {
      if (details.prompt.name !== 'consent') return send(res, 400, 'text/plain', 'not a consent prompt');
      const { accountId } = details.session;
      const grant = details.grantId
        ? await provider.Grant.find(details.grantId)
        : new provider.Grant({ accountId, clientId: details.params.client_id });
      const missing = details.prompt.details;
      if (missing.missingOIDCScope) grant.addOIDCScope(missing.missingOIDCScope.join(' '));
      if (missing.missingOIDCClaims) grant.addOIDCClaims(missing.missingOIDCClaims);
      for (const [resource, scopes] of Object.entries(missing.missingResourceScopes || {})) {
        grant.addResourceScope(resource, scopes.join(' '));
      }
      const grantId = await grant.save();
      return provider.interactionFinished(req, res, { consent: { grantId } }, { mergeWithLastSubmission: true });
    }
    case 'abort':
      return provider.interactionFinished(req, res, {
        error: 'access_denied', error_description: 'the user cancelled',
      }, { mergeWithLastSubmission: false });
    default:
      return send(res, 404, 'text/plain', 'unknown interaction action');
  }
}

const server = http.createServer(async (req, res) => {
  try {
    const url = new URL(req.url, server.issuer);
    if (url.pathname.startsWith('/admin/')) return await handleAdmin(req, res, url, server.issuer);
    const m = /^\/interaction\/([A-Za-z0-9_-]+)(?:\/(login|confirm|abort))?$/.exec(url.pathname);
    if (m) return await handleInteraction(req, res, m[1], m[2]);
    return providerCallback(req, res);
  } catch (err) {
    if (!res.headersSent) sendJSON(res, 400, { error: 'request_failed', error_description: String(err.message || err) });
    else res.destroy();
  }
});

server.listen(Number(process.env.SMART_PORT || 0), '127.0.0.1', () => {
  const { port } = server.address();
  server.issuer = `http://127.0.0.1:${port}`;
  rebuild(server.issuer);
  process.stdout.write(`ready ${server.issuer}\n`);
});

// The tests end the provider with SIGTERM or by closing its stdin (so it
// never outlives a test process that died).
function stop() {
  server.close(() => process.exit(0));
  server.closeAllConnections();
  setTimeout(() => process.exit(0), 1000).unref();
}
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
process.stdin.on('end', stop);
process.stdin.resume();
