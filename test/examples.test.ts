import { readFile, readdir } from 'node:fs/promises';
import { isAbsolute, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { TREND_WINDOW, expandGrid, lastPhaseStart, parseSpec, splitComparisonProblems } from '@transferlab/experiment';
import { describe, expect, it } from 'vitest';

const root = fileURLToPath(new URL('..', import.meta.url));
const examples = join(root, 'examples');
const files = (await readdir(examples)).filter((name) => name.endsWith('.yaml'));

describe('examples', () => {
  it('are there', () => {
    expect(files).toEqual(
      expect.arrayContaining(['cifar10-cpu.yaml', 'cifar10-random.yaml', 'demo-mnist.yaml', 'imagenet-paper.yaml']),
    );
  });

  for (const name of files) {
    it(`${name} is a valid spec on the sound protocol that names no path outside the repository`, async () => {
      const spec = parseSpec(await readFile(join(examples, name), 'utf8'), name);
      expect(spec.repeats).toBeGreaterThanOrEqual(3);
      // One schedule for every net: no base overrides, no early stopping.
      expect(spec.base).toEqual({});
      expect(spec.training.patience).toBeUndefined();
      expect(spec.arms).toContain('controlB');
      const plan = expandGrid(spec);
      expect(new Set(plan.cells.map((cell) => cell.training.maxEpochs)).size).toBe(1);
      // The still-improving test reads the last TREND_WINDOW epochs: they should share the
      // smallest rate, or a rate drop inside the window reads as "still improving". The demo's
      // 4 epochs are set by its 10-minute limit instead.
      if (name !== 'demo-mnist.yaml') {
        const { maxEpochs, schedule } = spec.training;
        expect(maxEpochs - lastPhaseStart(maxEpochs, schedule)).toBeGreaterThanOrEqual(TREND_WINDOW);
      }
      const dataset = spec.dataset as { kind: string; path?: string };
      // The cluster preset names the folder a cluster mounts; every other example reads the
      // catalog or ships its data.
      if (name !== 'imagenet-paper.yaml' && dataset.path !== undefined) {
        const at = resolve(examples, dataset.path);
        expect(isAbsolute(dataset.path) || relative(root, at).startsWith('..')).toBe(false);
      }
    });
  }

  it('cifar10-manmade-natural differs from cifar10-cpu only in its halves, so their transfer drops compare', async () => {
    const read = async (name: string) => parseSpec(await readFile(join(examples, name), 'utf8'), name);
    expect(splitComparisonProblems(await read('cifar10-manmade-natural.yaml'), await read('cifar10-cpu.yaml'))).toEqual(
      [],
    );
  });
});
