// Issue 9: property-based fuzzing of sweep specs. Every text either parses into a spec whose
// grid expands within the limits, or is refused with a SpecError whose every problem has a field
// path or a line: never a bare TypeError, RangeError ("Invalid array length") or ReferenceError.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { SPEC_LIMITS, SpecError, expandGrid, parseSpec, plannedCellCount } from '@transferlab/experiment';
import { specText } from './support/spec-arbitrary.ts';

export const SPEC_FUZZ_RUNS = 2500;

describe('sweep spec fuzz', () => {
  it(`parses ${SPEC_FUZZ_RUNS} hostile specs with no crash, each refusal naming a field or a line`, () => {
    const seen = { valid: 0, invalid: 0, crashes: 0 };
    fc.assert(
      fc.property(specText, (text) => {
        let spec;
        try {
          spec = parseSpec(text, 'fuzz.yaml');
        } catch (error) {
          if (!(error instanceof SpecError)) {
            seen.crashes++;
            throw error;
          }
          seen.invalid++;
          for (const issue of error.issues) {
            // A document that is not a mapping at all has no field to name: its problem is the top.
            const located = issue.path !== '' || issue.line !== undefined || /at the top/.test(issue.message);
            expect(located, error.message).toBe(true);
          }
          expect(error.message.length).toBeLessThan(100_000);
          return;
        }
        try {
          const plan = expandGrid(spec);
          expect(plan.cells.length).toBe(plannedCellCount(spec));
          expect(plan.cells.length).toBeLessThanOrEqual(SPEC_LIMITS.maxCells);
          seen.valid++;
        } catch (error) {
          if (!(error instanceof SpecError)) {
            seen.crashes++;
            throw error;
          }
          seen.invalid++;
          expect(error.issues.every((issue) => issue.path !== '')).toBe(true);
        }
      }),
      { numRuns: SPEC_FUZZ_RUNS, seed: Number(process.env.TRANSFERLAB_FUZZ_SEED ?? Date.now() % 2 ** 31) },
    );
    console.log(
      `spec fuzz: ${SPEC_FUZZ_RUNS} cases, ${seen.valid} valid, ${seen.invalid} refused, ${seen.crashes} crashes`,
    );
    expect(seen.valid).toBeGreaterThan(SPEC_FUZZ_RUNS / 20);
    expect(seen.invalid).toBeGreaterThan(SPEC_FUZZ_RUNS / 20);
  }, 120_000);
});
