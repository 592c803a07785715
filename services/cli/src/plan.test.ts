// `transferlab sweep plan` as a user runs it, with the calibration read from a per-machine cache
// seeded here (injected figures), so the forecast can be checked against the cost model.
import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { expandGrid, halfSizesOf, parseSpec, sweepCost } from '@transferlab/experiment';
import { type Calibration, type CalibrationJob, calibrationKey, machineFacts } from '@transferlab/runner';

const run = promisify(execFile);
const bin = fileURLToPath(new URL('../bin/transferlab.js', import.meta.url));

const SPEC = `
name: plan-tiny
dataset: { kind: mnist }
split: { kind: random, trainPerClass: 30, valPerClass: 10, testPerClass: 10 }
net: { kind: small, width: 0.25 }
training: { batchSize: 16, maxEpochs: 2, augment: false }
layers: [1, 2]
arms: [baseA, baseB, AnB, BnB+]
repeats: 1
concurrency: 2
`;

describe('transferlab sweep plan', () => {
  it('prints the cells with their dependencies and forecasts from the cached calibration, finished cells free', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'tl-plan-'));
    await writeFile(join(dir, 'tiny.yaml'), SPEC);
    const cache = join(dir, 'cache');
    const job: CalibrationJob = {
      net: { kind: 'small', width: 0.25, dropout: 0.5, init: 'he' },
      inputShape: [28, 28, 1],
      classes: 5,
      batchSize: 16,
      augment: undefined,
      warmup: 3,
      steps: 20,
    };
    const env = { ...process.env, TRANSFERLAB_CACHE: cache, TRANSFERLAB_BACKEND: 'wasm' };
    const machine = { ...machineFacts(), backendAsked: 'wasm' };
    const key = calibrationKey(job, 2, machine);
    const throughput = {
      backend: 'wasm',
      trainImagesPerSecond: 50,
      forwardImagesPerSecond: 200,
      pipelineImagesPerSecond: 5000,
      evalImagesPerSecond: 400,
      layerFlopShare: [0.4, 0.3, 0.1, 0.1, 0.05, 0.03, 0.015, 0.005],
      netSeconds: 0.5,
      checkpointSeconds: 0.2,
    };
    const seeded: Calibration = {
      key,
      file: '',
      cached: true,
      measuredAt: '2026-12-04T00:00:00Z',
      processes: 2,
      machine,
      throughput,
    };
    await mkdir(join(cache, 'calibration'), { recursive: true });
    await writeFile(join(cache, 'calibration', `${key}.json`), JSON.stringify(seeded));
    // One finished cell in the store: the plan counts it free.
    const spec = parseSpec(SPEC, 'tiny.yaml');
    const plan = expandGrid(spec);
    const baseA = plan.cells.find((cell) => cell.name === 'baseA seed=1')!;
    await mkdir(join(dir, 'store', 'cells', baseA.id), { recursive: true });
    await writeFile(join(dir, 'store', 'cells', baseA.id, 'result.json'), '{}');

    const { stdout } = await run(process.execPath, [bin, 'sweep', 'plan', 'tiny.yaml', '--store', 'store', '--json'], {
      cwd: dir,
      env,
      timeout: 120_000,
    });
    const printed = JSON.parse(stdout) as {
      wallSeconds: number;
      computeSeconds: number;
      cells: Array<{ name: string; reused: boolean; deps: string[] }>;
      calibration: Calibration;
    };
    expect(printed.calibration.cached).toBe(true);
    const expected = sweepCost({
      cells: plan.cells,
      sizes: new Map(
        plan.splits.map((task) => [
          task.id,
          halfSizesOf({ classes: 10, trainPerClass: 6000, testPerClass: 1000 }, spec.split),
        ]),
      ),
      throughput,
      reused: new Set([baseA.id]),
      concurrency: 2,
      // Each split reads the whole dataset (10 classes, 7000 images each) at 20 µs an image.
      splitSeconds: plan.splits.length * 10 * 7000 * 20e-6,
    });
    expect(printed.wallSeconds).toBeCloseTo(expected.wallSeconds, 6);
    expect(printed.computeSeconds).toBeCloseTo(expected.computeSeconds, 6);
    expect(printed.cells.find((cell) => cell.name === 'baseA seed=1')?.reused).toBe(true);
    expect(printed.cells.find((cell) => cell.name === 'AnB n=1 seed=1')?.deps).toEqual([baseA.id]);

    const table = await run(process.execPath, [bin, 'sweep', 'plan', 'tiny.yaml', '--store', 'store'], {
      cwd: dir,
      env,
      timeout: 120_000,
    });
    expect(table.stdout).toMatch(/AnB n=1 seed=1\s+baseA seed=1\s+conv1\s/);
    expect(table.stdout).toMatch(/baseA seed=1\s+-\s+-\s+reused/);
    expect(table.stdout).toMatch(/wall time: .* on 2 worker process\(es\)/);

    // The cheap first look: only the base nets, the second baseB and the measures are planned.
    const first = await run(
      process.execPath,
      [bin, 'sweep', 'plan', 'tiny.yaml', '--store', 'store', '--json', '--only-measures'],
      { cwd: dir, env, timeout: 120_000 },
    );
    const cheap = JSON.parse(first.stdout) as { wallSeconds: number; cells: Array<{ name: string }> };
    expect(cheap.cells.map((cell) => cell.name).sort()).toEqual([
      'baseA seed=1',
      'baseB seed=1',
      'baseB2 seed=1',
      'measureB seed=1',
    ]);
    expect(cheap.wallSeconds).toBeLessThan(printed.wallSeconds);
  }, 180_000);
});
