// In-memory FHIR R4 server for the calcinosis-cds tests: Medplum's FhirRouter + MemoryRepository (npm,
// pinned 5.2.13) behind our own node:http wrapper.
// "A.2" in comments cites ../shared/reference/real-components.md section A.2 (Medplum gotchas).
// Run with `node --experimental-websocket server.mjs` on Node 20: @medplum/core 5.x references the global
// WebSocket at import time (A.2), which Node 20 only defines behind that flag.
import http from 'node:http';
import { parseArgs } from 'node:util';
import { getStatus, isCreated, normalizeOperationOutcome } from '@medplum/core';
import { FhirRouter, MemoryRepository } from '@medplum/fhir-router';
import { indexDefinitions, narrowSearchParameterExpressions } from './search-parameters.mjs';

const MAX_BODY_BYTES = 64 * 1024 * 1024; // Synthea bundles reach ~4 MB; this only stops runaway uploads.
const FHIR_JSON = 'application/fhir+json; charset=utf-8';

function fail(message) { process.stderr.write(`fhir-test-server: ${message}\n`); process.exit(2); }
function intOption(name, raw) {
  if (!/^\d+$/.test(String(raw))) fail(`--${name} must be a non-negative integer, got ${JSON.stringify(raw)}`);
  return Number(raw);
}
const { values: args } = parseArgs({ options: {
  port: { type: 'string', default: process.env.FHIR_TEST_SERVER_PORT ?? '8090' },
  'latency-ms': { type: 'string', default: process.env.FHIR_TEST_SERVER_LATENCY_MS ?? '0' },
  'require-token': { type: 'string', default: process.env.FHIR_TEST_SERVER_REQUIRE_TOKEN ?? '' },
} });
const port = intOption('port', args.port);
const latencyMs = intOption('latency-ms', args['latency-ms']);
const requiredToken = args['require-token'];
if (port > 65535) fail(`--port must be at most 65535, got ${port}`);

const profiles = indexDefinitions();
// Issue 7: per-type expressions for shared search parameters (Medplum's own choice of union members): searches
// ~10x faster with byte-identical results; search-parameters.mjs has the profile, check-search-equivalence.mjs
// the proof.
narrowSearchParameterExpressions();

// The CapabilityStatement lists the base R4 resource types only (not Medplum's own Bot, Project, ...).
const R4_RESOURCE_TYPES = profiles[1].entry.map((e) => e.resource)
  .filter((sd) => sd.kind === 'resource' && !sd.abstract).map((sd) => sd.type);
const router = new FhirRouter();
const repo = new MemoryRepository();
// {method, url, authorization_present, status, processing_ms} per /fhir request; never the token itself.
const seen = [];

function capabilityStatement(base) {
  // The router has no /metadata (A.2). rest[0].security must exist or the SMART launcher adds no OAuth URIs.
  const interaction = ['read', 'vread', 'update', 'patch', 'delete', 'history-instance', 'create',
    'search-type'].map((code) => ({ code }));
  return { resourceType: 'CapabilityStatement', status: 'active', date: new Date().toISOString(),
    kind: 'instance', fhirVersion: '4.0.1', format: ['json'],
    software: { name: 'calcinosis-cds FHIR test server (Medplum fhir-router 5.2.13, in memory)' },
    implementation: { description: 'Test-only in-memory FHIR R4 server', url: base },
    rest: [{ mode: 'server',
      security: { cors: true, description: requiredToken ? 'Bearer token required' : 'Open (no auth)',
        service: [{ coding: [{ system: 'http://terminology.hl7.org/CodeSystem/restful-security-service',
          code: 'SMART-on-FHIR' }] }] },
      resource: R4_RESOURCE_TYPES.map((type) => ({ type, interaction })),
      interaction: [{ code: 'transaction' }, { code: 'batch' }] }] };
}

function send(res, status, body, headers = {}, timing = undefined) {
  const text = body === undefined ? undefined : JSON.stringify(body);
  if (timing) headers = { ...headers, 'Server-Timing': serverTiming(timing, status) };
  res.writeHead(status, { 'Content-Type': FHIR_JSON, ...headers });
  res.end(text);
}
// Issue 7: how long this server worked on a /fhir request (body, router, JSON), apart from the added latency,
// so a benchmark can tell the FHIR server's share of a no-prefetch hook call from the service's. It does not
// include time spent waiting for the single Node thread while other requests are processed.
function serverTiming(timing, status) {
  const processing = performance.now() - timing.started;
  if (timing.entry) Object.assign(timing.entry, { status, processing_ms: Number(processing.toFixed(3)) });
  return `processing;dur=${processing.toFixed(3)}, latency;dur=${latencyMs}`;
}
function outcome(code, text) {
  return { resourceType: 'OperationOutcome', issue: [{ severity: 'error', code, details: { text } }] };
}

async function readBody(req) {
  const chunks = []; let size = 0;
  for await (const chunk of req) {
    size += chunk.length;
    if (size > MAX_BODY_BYTES) throw new Error(`request body exceeds ${MAX_BODY_BYTES} bytes`);
    chunks.push(chunk);
  }
  return Buffer.concat(chunks).toString('utf8');
}
function parseBody(text, contentType, isSearch) {
  if (isSearch) {
    // A.2: POST [type]/_search wants `body` as an object of params; clients send them form-encoded.
    return paramsToObject(new URLSearchParams(text));
  }
  if (!text) return undefined;
  if (contentType.startsWith('application/x-www-form-urlencoded')) {
    throw new Error('form-encoded bodies are only accepted by POST [type]/_search; send FHIR JSON');
  }
  try { return JSON.parse(text); } catch (err) { throw new Error(`body is not valid JSON: ${err.message}`); }
}
function paramsToObject(params, into = {}) {
  for (const [key, value] of params) into[key] = key in into ? [].concat(into[key], value) : value;
  return into;
}

async function handleFhir(req, res, url, base) {
  const entry = { method: req.method, url: url.pathname + url.search,
    authorization_present: Boolean(req.headers.authorization) };
  seen.push(entry);
  // The latency is added before the work: concurrent requests all wait, then share the one Node thread.
  if (latencyMs) await new Promise((resolve) => setTimeout(resolve, latencyMs));
  const timing = { started: performance.now(), entry };
  if (requiredToken && req.headers.authorization !== `Bearer ${requiredToken}`) {
    const challenge = { 'WWW-Authenticate': 'Bearer' };
    return send(res, 401, outcome('login', 'Missing or invalid bearer token'), challenge, timing);
  }
  const path = url.pathname.slice('/fhir'.length).replace(/^\/+|\/+$/g, '');
  if (req.method === 'GET' && path === 'metadata') return send(res, 200, capabilityStatement(base), {}, timing);
  const isSearch = req.method === 'POST' && path.endsWith('/_search');
  let body;
  try {
    body = parseBody(await readBody(req), req.headers['content-type'] ?? '', isSearch);
  } catch (err) { return send(res, 400, outcome('invalid', err.message), {}, timing); }
  // FHIR allows search params in the URL and the body at once; the router reads only the body here.
  if (isSearch) body = paramsToObject(url.searchParams, body);
  // A.2: the router wants `url` (path + query, relative to the base), not `pathname`; transactions are opt-in.
  const [result, resource] = await router.handleRequest({ method: req.method, url: path + url.search,
    query: paramsToObject(url.searchParams), params: {}, body, headers: req.headers,
    config: { transactions: true } }, repo).catch((err) => [normalizeOperationOutcome(err)]);
  const headers = {};
  if (resource?.resourceType === 'Bundle' && resource.type === 'searchset') {
    for (const e of resource.entry ?? []) e.fullUrl ??= `${base}/${e.resource.resourceType}/${e.resource.id}`;
  }
  if (resource?.meta?.versionId) headers.ETag = `W/"${resource.meta.versionId}"`;
  if (isCreated(result) && resource?.id) {
    const version = resource.meta?.versionId ? `/_history/${resource.meta.versionId}` : '';
    headers.Location = `${base}/${resource.resourceType}/${resource.id}${version}`;
  }
  return send(res, getStatus(result), resource ?? result, headers, timing);
}

const server = http.createServer(async (req, res) => {
  // Permissive CORS: browser clients (CDS Hooks sandbox, SMART apps) call this server directly.
  res.setHeader('Access-Control-Allow-Origin', req.headers.origin ?? '*');
  res.setHeader('Access-Control-Allow-Methods', 'GET, POST, PUT, PATCH, DELETE, OPTIONS');
  res.setHeader('Access-Control-Allow-Headers', req.headers['access-control-request-headers']
    ?? 'Authorization, Content-Type, Accept, Prefer, If-Match, If-None-Exist');
  res.setHeader('Access-Control-Expose-Headers', 'Location, ETag, Content-Location, Server-Timing');
  res.setHeader('Vary', 'Origin');
  let url;
  try {
    url = new URL(req.url, `http://${req.headers.host}`); // fullUrl/Location use the host the client used
  } catch { url = new URL(req.url, `http://127.0.0.1:${server.address().port}`); }
  try {
    if (req.method === 'OPTIONS') return send(res, 204);
    if (url.pathname === '/__requests' && req.method === 'GET') {
      return send(res, 200, seen, { 'Content-Type': 'application/json' });
    }
    if (url.pathname === '/__requests' && req.method === 'DELETE') { seen.length = 0; return send(res, 204); }
    if (url.pathname === '/fhir' || url.pathname.startsWith('/fhir/')) {
      return await handleFhir(req, res, url, `${url.origin}/fhir`);
    }
    return send(res, 404, outcome('not-found', `No route for ${req.method} ${url.pathname}; FHIR is at /fhir`));
  } catch (err) {
    process.stderr.write(`fhir-test-server: unexpected error on ${req.method} ${url.pathname}: ${err.stack}\n`);
    if (res.headersSent) res.destroy(); else send(res, 500, outcome('exception', String(err.message)));
  }
});

server.listen(port, '127.0.0.1', () => {
  process.stdout.write(`${JSON.stringify({ listening: server.address().port })}\n`);
});
for (const signal of ['SIGINT', 'SIGTERM']) process.on(signal, () => process.exit(0));
