import { describe, expect, it } from 'vitest';
import { aggregate } from './aggregate.ts';
import { figure2Spec, renderFigures } from './figures.ts';
import { expandGrid } from './grid.ts';
import { validateSpec } from './spec.ts';
import { syntheticResults } from './test-fixtures.ts';

const plan = expandGrid(
  validateSpec({
    name: 'fig',
    dataset: { kind: 'mnist' },
    arms: ['baseA', 'baseB', 'BnB', 'BnB+', 'AnB', 'AnB+', 'AnA', 'BnA', 'RnB'],
    repeats: 2,
  }),
);

function isSvg(text: string): boolean {
  return (
    text.startsWith('<svg') && text.trimEnd().endsWith('</svg>') && text.includes('xmlns="http://www.w3.org/2000/svg"')
  );
}

describe('renderFigures', () => {
  it('draws Figure 2 and Figure 3 as SVG in the paper words', async () => {
    const { figure2, figure3 } = await renderFigures(aggregate(plan, syntheticResults(plan)));
    expect(isSvg(figure2)).toBe(true);
    expect(isSvg(figure3)).toBe(true);
    for (const arm of ['baseB', 'BnB', 'BnB+', 'AnB', 'AnB+', 'RnB', 'baseA', 'AnA', 'BnA'])
      expect(figure2).toContain(`>${arm}<`);
    expect(figure2).toContain('Layer n at which network is chopped and retrained');
    expect(figure2).toContain('Test top-1 (higher is better)');
    expect(figure2).toContain('Target half B');
    expect(figure2).toContain('Target half A');
    expect(figure3).toContain('fragile co-adaptation');
    expect(figure3).toContain('representation specificity');
    expect(figure3).toContain('Transfer + fine-tuning improves generalization');
  });

  it('draws the base band across n = 0..7 and the base point at n = 0', () => {
    const spec = JSON.stringify(figure2Spec(aggregate(plan, syntheticResults(plan))));
    expect(spec).toContain('"layer":"band","arm":"baseB","n":7');
    expect(spec).toContain('"layer":"mean","arm":"baseB","n":0');
  });

  it('still renders with no results yet', async () => {
    const { figure2, figure3 } = await renderFigures(aggregate(plan, []));
    expect(isSvg(figure2)).toBe(true);
    expect(isSvg(figure3)).toBe(true);
    expect(figure2).toContain('No results to plot yet.');
    expect(figure3).toContain('No results to plot yet.');
  });
});
