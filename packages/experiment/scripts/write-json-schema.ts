// Writes docs/sweep-spec.schema.json from the zod schema; a test fails when the two drift.
// Run: node_modules/.bin/tsx packages/experiment/scripts/write-json-schema.ts
import { writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { specJsonSchemaText } from '../src/spec.ts';

const target = fileURLToPath(new URL('../../../docs/sweep-spec.schema.json', import.meta.url));
writeFileSync(target, specJsonSchemaText());
console.log(`wrote ${target}`);
