// fhir-kit-client, a third-party FHIR client, against the embedded store.
// Run against a running store: PFR_STORE_URL=http://127.0.0.1:8089/fhir npm test
// PFR_STORE_PARTITION names the partition header value (default "1").
import { test } from 'node:test';
import assert from 'node:assert/strict';
import Client from 'fhir-kit-client';

const baseUrl = process.env.PFR_STORE_URL;
if (!baseUrl) {
  throw new Error('set PFR_STORE_URL to the store FHIR base, e.g. http://127.0.0.1:8089/fhir');
}
const partition = process.env.PFR_STORE_PARTITION || '1';
const client = new Client({ baseUrl, customHeaders: { 'X-Request-Partition-IDs': partition } });
// A family name no earlier run used, so searches count only this run.
const family = `Kit${Date.now()}${Math.floor(Math.random() * 1e6)}`;

async function status(promise) {
  try {
    await promise;
    return 200;
  } catch (err) {
    return err.response?.status;
  }
}

test('capability statement', async () => {
  const cs = await client.capabilityStatement();
  assert.equal(cs.resourceType, 'CapabilityStatement');
  assert.equal(cs.fhirVersion, '4.0.1');
  const patient = cs.rest[0].resource.find((r) => r.type === 'Patient');
  assert.ok(patient.interaction.some((i) => i.code === 'history-instance'));
});

test('create, read, update, history, delete', async () => {
  const created = await client.create({
    resourceType: 'Patient',
    body: { resourceType: 'Patient', name: [{ family, given: ['Ada'] }], gender: 'female' },
  });
  assert.equal(created.resourceType, 'Patient');
  assert.ok(created.id);
  assert.equal(created.meta.versionId, '1');

  const read = await client.read({ resourceType: 'Patient', id: created.id });
  assert.deepEqual(read.name, created.name);

  const updated = await client.update({
    resourceType: 'Patient',
    id: created.id,
    body: { ...read, gender: 'other' },
  });
  assert.equal(updated.meta.versionId, '2');
  assert.equal(updated.gender, 'other');

  const v1 = await client.vread({ resourceType: 'Patient', id: created.id, version: '1' });
  assert.equal(v1.gender, 'female');

  const history = await client.history({ resourceType: 'Patient', id: created.id });
  assert.equal(history.type, 'history');
  assert.equal(history.total, 2);
  assert.deepEqual(history.entry.map((e) => e.resource.meta.versionId), ['2', '1']);

  await client.delete({ resourceType: 'Patient', id: created.id });
  assert.equal(await status(client.read({ resourceType: 'Patient', id: created.id })), 410);
  const after = await client.history({ resourceType: 'Patient', id: created.id });
  assert.equal(after.total, 3);
});

test('search with paging', async () => {
  for (let i = 0; i < 5; i += 1) {
    await client.create({
      resourceType: 'Patient',
      body: { resourceType: 'Patient', name: [{ family: `${family}Many`, given: [`N${i}`] }] },
    });
  }
  let page = await client.search({ resourceType: 'Patient', searchParams: { family: `${family}Many`, _count: 2 } });
  assert.equal(page.type, 'searchset');
  assert.equal(page.total, 5);
  const seen = new Set();
  for (let pages = 0; page; pages += 1) {
    assert.ok(pages < 5, 'paging does not end');
    for (const e of page.entry || []) {
      assert.ok(!seen.has(e.resource.id), `saw ${e.resource.id} twice`);
      seen.add(e.resource.id);
    }
    page = await client.nextPage(page);
  }
  assert.equal(seen.size, 5);

  const none = await client.search({ resourceType: 'Patient', searchParams: { family: `${family}Nobody` } });
  assert.equal(none.total, 0);
});

test('transaction with placeholders', async () => {
  const bundle = {
    resourceType: 'Bundle',
    type: 'transaction',
    entry: [
      {
        fullUrl: 'urn:uuid:0a1b2c3d-0000-4000-8000-000000000001',
        resource: { resourceType: 'Patient', name: [{ family: `${family}Tx` }] },
        request: { method: 'POST', url: 'Patient' },
      },
      {
        fullUrl: 'urn:uuid:0a1b2c3d-0000-4000-8000-000000000002',
        resource: {
          resourceType: 'Observation',
          status: 'final',
          code: { coding: [{ system: 'http://loinc.org', code: '8302-2' }] },
          subject: { reference: 'urn:uuid:0a1b2c3d-0000-4000-8000-000000000001' },
          valueQuantity: { value: 170, unit: 'cm', system: 'http://unitsofmeasure.org', code: 'cm' },
        },
        request: { method: 'POST', url: 'Observation' },
      },
    ],
  };
  const response = await client.transaction({ body: bundle });
  assert.equal(response.type, 'transaction-response');
  assert.deepEqual(response.entry.map((e) => e.response.status), ['201 Created', '201 Created']);
  const patientId = response.entry[0].response.location.split('/')[1];
  const obsId = response.entry[1].response.location.split('/')[1];
  const obs = await client.read({ resourceType: 'Observation', id: obsId });
  assert.equal(obs.subject.reference, `Patient/${patientId}`);

  const found = await client.search({ resourceType: 'Observation', searchParams: { subject: `Patient/${patientId}` } });
  assert.equal(found.total, 1);
  assert.equal(found.entry[0].resource.id, obsId);
});

test('errors are OperationOutcomes', async () => {
  try {
    await client.read({ resourceType: 'Patient', id: 'does-not-exist' });
    assert.fail('read of a missing resource succeeded');
  } catch (err) {
    assert.equal(err.response.status, 404);
    assert.equal(err.response.data.resourceType, 'OperationOutcome');
  }
  const other = new Client({ baseUrl, customHeaders: { 'X-Request-Partition-IDs': '987654' } });
  assert.equal(await status(other.read({ resourceType: 'Patient', id: 'x' })), 404);
});

test('patch: JSON Patch, FHIRPath Patch, If-Match', async () => {
  const created = await client.create({
    resourceType: 'Observation',
    body: { resourceType: 'Observation', status: 'preliminary', code: { text: family }, valueQuantity: { value: 5.10, unit: 'mg' } },
  });
  const patched = await client.patch({
    resourceType: 'Observation',
    id: created.id,
    JSONPatch: [{ op: 'replace', path: '/status', value: 'final' }],
    headers: { 'If-Match': 'W/"1"' },
  });
  assert.equal(patched.status, 'final');
  assert.equal(patched.meta.versionId, '2');

  const fhirPath = await client.request(`Observation/${created.id}`, {
    method: 'PATCH',
    options: { headers: { 'Content-Type': 'application/fhir+json' } },
    body: {
      resourceType: 'Parameters',
      parameter: [{
        name: 'operation',
        part: [
          { name: 'type', valueCode: 'add' },
          { name: 'path', valueString: 'Observation' },
          { name: 'name', valueString: 'note' },
          { name: 'value', valueAnnotation: { text: 'patched by fhir-kit-client' } },
        ],
      }],
    },
  });
  assert.equal(fhirPath.note[0].text, 'patched by fhir-kit-client');
  assert.equal(fhirPath.meta.versionId, '3');

  // A stale version is refused with 412; a failed test with 422.
  assert.equal(await status(client.patch({
    resourceType: 'Observation', id: created.id, JSONPatch: [], headers: { 'If-Match': 'W/"1"' },
  })), 412);
  assert.equal(await status(client.patch({
    resourceType: 'Observation', id: created.id, JSONPatch: [{ op: 'test', path: '/status', value: 'preliminary' }],
  })), 422);
  const read = await client.read({ resourceType: 'Observation', id: created.id });
  assert.equal(read.meta.versionId, '3');
});
