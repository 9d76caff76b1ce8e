// fhir-kit-client against a PFR with a token from the gateway's built-in
// authorization server only (e2e/authz_fhirkit_test.go gets the token
// through the authorization code flow and runs this).
//
// Environment: PFR_FHIR_BASE (the record's FHIR base), PFR_TOKEN (an access
// token with patient/Patient.rs patient/Observation.cruds, no Condition),
// PFR_PATIENT_ID, PFR_ISSUER (the built-in server's issuer),
// NODE_EXTRA_CA_CERTS (the gateway's CA).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import dns from 'node:dns';
import Client from 'fhir-kit-client';

// *.localhost is loopback, as browsers resolve it.
const lookup = dns.lookup;
dns.lookup = (host, options, callback) => {
  if (typeof options === 'function') [callback, options] = [options, {}];
  if (host === 'localhost' || host.endsWith('.localhost')) {
    if (options?.all) return callback(null, [{ address: '127.0.0.1', family: 4 }]);
    return callback(null, '127.0.0.1', 4);
  }
  return lookup(host, options, callback);
};

const env = (name) => {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is required`);
  return v;
};
const baseUrl = env('PFR_FHIR_BASE');
const patientId = env('PFR_PATIENT_ID');
const issuer = env('PFR_ISSUER');
const client = new Client({ baseUrl, bearerToken: env('PFR_TOKEN') });

async function status(promise) {
  try {
    await promise;
    return 200;
  } catch (err) {
    return err.response?.status;
  }
}

test('SMART discovery names the built-in server', async () => {
  const meta = await client.smartAuthMetadata();
  assert.equal(meta.authorizeUrl.href, `${issuer}/oauth/authorize`);
  // The record's own token endpoint, on its host (it issues tokens for
  // this record only).
  assert.equal(meta.tokenUrl.href, `${new URL(baseUrl).origin}/oauth/token`);
  assert.equal(meta.registerUrl.href, `${issuer}/oauth/register`);
});

test('read the Patient, search, create and read an Observation', async () => {
  const patient = await client.read({ resourceType: 'Patient', id: patientId });
  assert.equal(patient.id, patientId);
  const created = await client.create({
    resourceType: 'Observation',
    body: {
      resourceType: 'Observation', status: 'final', subject: { reference: `Patient/${patientId}` },
      code: { coding: [{ system: 'http://loinc.org', code: '8867-4' }] },
      valueQuantity: { value: 61, unit: '/min', system: 'http://unitsofmeasure.org', code: '/min' },
    },
  });
  assert.equal(created.resourceType, 'Observation');
  const found = await client.search({ resourceType: 'Observation', searchParams: { patient: patientId } });
  assert.equal(found.resourceType, 'Bundle');
  assert.ok(found.entry.some((e) => e.resource.id === created.id));
});

test('what the person did not allow is refused', async () => {
  assert.equal(await status(client.search({ resourceType: 'Condition', searchParams: { patient: patientId } })), 403);
  const anonymous = new Client({ baseUrl });
  assert.equal(await status(anonymous.read({ resourceType: 'Patient', id: patientId })), 401);
});
