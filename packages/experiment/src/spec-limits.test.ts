import { describe, expect, it } from 'vitest';
import { expandGrid, plannedCellCount } from './grid.ts';
import { SPEC_LIMITS } from './limits.ts';
import { SpecError, parseSpec, validateSpec } from './spec.ts';

const base = { name: 'limits', dataset: { kind: 'mnist' } };

function specError(run: () => unknown): SpecError {
  try {
    run();
  } catch (error) {
    expect(error).toBeInstanceOf(SpecError);
    return error as SpecError;
  }
  throw new Error('expected a SpecError');
}

describe('spec limits (issue 9)', () => {
  it('counts the cells expandGrid makes, without making them', () => {
    for (const arms of [
      ['baseA'],
      ['baseB', 'AnB'],
      ['BnB', 'BnB+', 'AnB+', 'RnB'],
      ['baseA', 'baseB', 'AnA', 'BnA+'],
    ]) {
      for (const repeats of [1, 3]) {
        const spec = validateSpec({ ...base, arms, repeats, layers: [1, 4, 7] });
        expect(plannedCellCount(spec)).toBe(expandGrid(spec).cells.length);
      }
    }
  });

  it('bounds repeats, naming the field (a huge value was "Invalid array length")', () => {
    for (const repeats of [SPEC_LIMITS.maxRepeats + 1, 1_000_000, 2 ** 53]) {
      const error = specError(() => parseSpec(`name: r\ndataset: { kind: mnist }\nrepeats: ${repeats}\n`, 'r.yaml'));
      expect(error.issues[0]!.path).toBe('repeats');
      expect(error.issues[0]!.line).toBe(3);
    }
  });

  it('refuses a grid over the cell limit before expanding it, naming the field', () => {
    const arms = ['baseA', 'baseB', 'BnB', 'BnB+', 'AnB', 'AnB+', 'AnA', 'BnA', 'AnA+', 'BnA+', 'RnA', 'RnB'];
    const spec = validateSpec({ ...base, arms, layers: [1, 2, 3, 4, 5, 6, 7], repeats: SPEC_LIMITS.maxRepeats });
    expect(plannedCellCount(spec)).toBeGreaterThan(SPEC_LIMITS.maxCells);
    const started = performance.now();
    const error = specError(() => expandGrid(spec));
    expect(performance.now() - started).toBeLessThan(50);
    expect(error.issues[0]!.path).toBe('repeats');
    expect(error.message).toMatch(/repeats: the grid has \d+ cells .* at most 5000/);
  });

  it('reports a billion-laughs document as a SpecError with its line, not a bare ReferenceError', () => {
    const levels = ['a: &a [x, x, x, x, x, x, x, x, x, x]'];
    for (let i = 1; i < 9; i++) {
      const prev = String.fromCharCode(96 + i);
      const name = String.fromCharCode(97 + i);
      levels.push(
        `${name}: &${name} [*${prev}, *${prev}, *${prev}, *${prev}, *${prev}, *${prev}, *${prev}, *${prev}, *${prev}, *${prev}]`,
      );
    }
    const text = `name: lol\ndataset: { kind: mnist }\n${levels.join('\n')}\n`;
    const error = specError(() => parseSpec(text, 'lol.yaml'));
    expect(error.message).toMatch(
      /^invalid sweep spec lol\.yaml \(1 problem\):\n {2}lol\.yaml:11:\d+: the YAML aliases expand more than 100 times/,
    );
  });
});
