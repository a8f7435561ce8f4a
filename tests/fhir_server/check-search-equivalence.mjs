// Proof for search-parameters.mjs (issue 7): Medplum's router answers every query with the same bytes before and
// after the per-type search parameter expressions, and every narrowed expression yields the same typed values.
//
//   node --experimental-websocket check-search-equivalence.mjs CORPUS.json [--modes per-type,first-member,no-dedup]
//
// CORPUS.json: {"bundles": [transaction/batch Bundles], "queries": ["Observation?patient=...", ...],
//               "sample_per_type": 60}
// One process and one MemoryRepository: the data (ids, versionIds, lastUpdated) is loaded once, each query runs
// through router.handleRequest with the published expressions, then again after narrowing, and the two answers
// (status + JSON body) must be equal strings. Modes `first-member` and `no-dedup` narrow deliberately wrongly
// (first union member; no `| {}`), so the test can show this check fails when it should; each mode starts again
// from the published expressions. Prints one JSON object per mode on stdout ({mode: summary}); exits 2 on bad
// input, otherwise 0 (the caller judges the counts).
import fs from 'node:fs';
import { parseArgs } from 'node:util';
import { evalFhirPathTyped, getExpressionForResourceType, getStatus, globalSchema, normalizeOperationOutcome,
  parseFhirPath, toTypedValue } from '@medplum/core';
import { FhirRouter, MemoryRepository } from '@medplum/fhir-router';
import { indexDefinitions, narrowSearchParameterExpressions, perTypeExpression } from './search-parameters.mjs';

const { values: args, positionals } = parseArgs({ allowPositionals: true,
  options: { modes: { type: 'string', default: 'per-type' } } });
function fail(message) { process.stderr.write(`check-search-equivalence: ${message}\n`); process.exit(2); }

function leftmostUnionMember(atom) {
  return atom.operator === '|' ? leftmostUnionMember(atom.left) : atom;
}
const MODES = {
  'per-type': perTypeExpression,
  'first-member': (type, sp) => (perTypeExpression(type, sp) === undefined ? undefined
    : leftmostUnionMember(parseFhirPath(sp.expression).child).toString()),
  'no-dedup': (type, sp) => perTypeExpression(type, sp)?.replace(/ \| \{\}$/, ''),
};
const modes = args.modes.split(',');
for (const mode of modes) if (!MODES[mode]) fail(`unknown mode ${mode}; use ${Object.keys(MODES).join(', ')}`);
if (positionals.length !== 1) fail('usage: check-search-equivalence.mjs CORPUS.json [--modes MODE,...]');
const corpus = JSON.parse(fs.readFileSync(positionals[0], 'utf8'));

indexDefinitions();
const router = new FhirRouter();
const repo = new MemoryRepository();
const request = (method, url, body) => ({ method, url, query: {}, params: {}, body, headers: {},
  config: { transactions: true } });

for (const [index, bundle] of (corpus.bundles ?? []).entries()) {
  const [outcome, result] = await router.handleRequest(request('POST', '', bundle), repo);
  const failed = (result?.entry ?? []).filter((e) => !String(e.response?.status).startsWith('2'));
  if (getStatus(outcome) >= 300 || failed.length) fail(`bundle ${index} not loaded: ${JSON.stringify(outcome)}`);
}

async function answers() {
  const started = performance.now();
  const out = [];
  for (const query of corpus.queries ?? []) {
    const [outcome, resource] = await router.handleRequest(request('GET', query), repo)
      .catch((err) => [normalizeOperationOutcome(err)]);
    out.push(JSON.stringify({ status: getStatus(outcome), body: resource ?? outcome }));
  }
  return { out, ms: performance.now() - started };
}

// Up to sample_per_type stored resources of every type, spread evenly over what was loaded.
const samples = [];
for (const type of Object.keys(globalSchema.types)) {
  const stored = (await repo.search({ resourceType: type })).entry?.map((e) => e.resource) ?? [];
  const step = Math.max(1, Math.ceil(stored.length / (corpus.sample_per_type ?? 60)));
  for (let i = 0; i < stored.length; i += step) samples.push(stored[i]);
}
// Every (sampled resource, shared parameter of its type) pair, with the published expression.
const pairs = [];
for (const resource of samples) {
  for (const [code, sp] of Object.entries(globalSchema.types[resource.resourceType].searchParams ?? {})) {
    if (perTypeExpression(resource.resourceType, sp) !== undefined) pairs.push({ resource, code, original: sp.expression });
  }
}
const typedValues = (expression, resource) => JSON.stringify(evalFhirPathTyped(expression, [toTypedValue(resource)]));

// search-parameters.mjs picks the members itself (parsing each expression once): it must pick what Medplum's
// getExpressionForResourceType picks, for every indexed (type, parameter).
const selectionMismatches = [];
let selections = 0;
for (const [type, schema] of Object.entries(globalSchema.types)) {
  for (const [code, sp] of Object.entries(schema.searchParams ?? {})) {
    const ours = perTypeExpression(type, sp);
    if (ours === undefined) continue;
    selections += 1;
    if (ours !== `${getExpressionForResourceType(type, sp.expression)} | {}`) selectionMismatches.push(`${type}.${code}`);
  }
}

const before = await answers();
const valuesBefore = pairs.map((p) => typedValues(p.original, p.resource));
const published = Object.fromEntries(Object.entries(globalSchema.types)
  .map(([type, schema]) => [type, { ...schema.searchParams }]));
const queries = corpus.queries ?? [];
const report = {};
for (const mode of modes) {
  for (const [type, params] of Object.entries(published)) {
    if (globalSchema.types[type].searchParams) globalSchema.types[type].searchParams = { ...params };
  }
  const narrowed = narrowSearchParameterExpressions(MODES[mode]);
  const after = await answers();
  const valuesAfter = pairs.map((p) => typedValues(
    globalSchema.types[p.resource.resourceType].searchParams[p.code].expression, p.resource));
  const queryMismatches = queries.map((query, i) => ({ query, before: before.out[i], after: after.out[i] }))
    .filter((m) => m.before !== m.after)
    .map((m) => ({ query: m.query.slice(0, 200), before: m.before.slice(0, 300), after: m.after.slice(0, 300) }));
  const expressionMismatches = pairs.map((p, i) => ({ p, i })).filter(({ i }) => valuesBefore[i] !== valuesAfter[i])
    .map(({ p }) => ({ type: p.resource.resourceType, id: p.resource.id, code: p.code }));
  report[mode] = {
    narrowed,
    medplum_selections: selections,
    medplum_selection_mismatches: selectionMismatches.slice(0, 20),
    queries: queries.length,
    queries_with_entries: before.out.filter((text) => JSON.parse(text).body.entry?.length).length,
    query_mismatches: queryMismatches.length,
    query_mismatch_examples: queryMismatches.slice(0, 5),
    expression_checks: pairs.length,
    expression_checks_with_values: valuesBefore.filter((text) => text !== '[]').length,
    expression_types: [...new Set(pairs.map((p) => p.resource.resourceType))].sort(),
    expression_mismatches: expressionMismatches.length,
    expression_mismatch_examples: expressionMismatches.slice(0, 5),
    search_ms_before: Number(before.ms.toFixed(1)),
    search_ms_after: Number(after.ms.toFixed(1)),
  };
}
process.stdout.write(`${JSON.stringify(report)}\n`);
