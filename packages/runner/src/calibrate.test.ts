import { mkdtemp, readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  type CalibrationJob,
  type CalibrationResult,
  busyWhenMeasured,
  calibrate,
  calibrationKey,
  meanOf,
} from './calibrate.ts';

const job: CalibrationJob = {
  net: { kind: 'small', width: 0.125, dropout: 0.5, init: 'he' },
  inputShape: [28, 28, 1],
  classes: 5,
  batchSize: 8,
  augment: undefined,
  warmup: 1,
  steps: 2,
};

const figures = (train: number): CalibrationResult => ({
  backend: 'wasm',
  trainImagesPerSecond: train,
  forwardImagesPerSecond: 4 * train,
  pipelineImagesPerSecond: 100 * train,
  evalImagesPerSecond: 5 * train,
  layerFlopShare: [0.3, 0.3, 0.1, 0.1, 0.1, 0.05, 0.04, 0.01],
  netSeconds: 0.2,
  checkpointSeconds: 0.1,
});

describe('calibration', () => {
  it('measures once, then reads the figures from the per-machine cache until asked again', async () => {
    const cacheDir = await mkdtemp(join(tmpdir(), 'tl-calibration-'));
    let runs = 0;
    const measure = async (_job: CalibrationJob, processes: number) => {
      runs += 1;
      return Array.from({ length: processes }, (_, i) => figures(100 * (i + 1)));
    };
    const first = await calibrate({ job, processes: 2, cacheDir, measure });
    expect(first.cached).toBe(false);
    // Two processes at 100 and 200 img/s: time per image averaged, 133 img/s.
    expect(first.throughput.trainImagesPerSecond).toBeCloseTo(400 / 3, 6);
    const again = await calibrate({ job, processes: 2, cacheDir, measure });
    expect(again.cached).toBe(true);
    expect(again.throughput).toEqual(first.throughput);
    expect(runs).toBe(1);
    expect(JSON.parse(await readFile(first.file, 'utf8')).key).toBe(first.key);
    await calibrate({ job, processes: 2, cacheDir, measure, refresh: true });
    expect(runs).toBe(2);
    // Another batch size or process count is another key.
    expect(calibrationKey({ ...job, batchSize: 16 }, 2)).not.toBe(calibrationKey(job, 2));
    expect(calibrationKey(job, 1)).not.toBe(calibrationKey(job, 2));
  });

  it('records the load it was measured under, and says when that was a busy machine', async () => {
    const cacheDir = await mkdtemp(join(tmpdir(), 'tl-calibration-'));
    const measure = async () => [figures(100)];
    const busy = await calibrate({ job, processes: 1, cacheDir, measure, loadAverage: () => 64 });
    expect(busy.loadAverage).toBe(64);
    expect(busyWhenMeasured(busy)).toMatch(/^measured under a load average of 64\.0 on \d+ thread\(s\).*--recalibrate/);
    // The cache keeps what it was measured under.
    expect(busyWhenMeasured(await calibrate({ job, processes: 1, cacheDir, measure }))).toBe(busyWhenMeasured(busy));
    const quiet = await calibrate({ job, processes: 1, cacheDir, measure, refresh: true, loadAverage: () => 0.2 });
    expect(busyWhenMeasured(quiet)).toBeUndefined();
    const { loadAverage: _, ...older } = quiet;
    expect(busyWhenMeasured(older)).toBeUndefined();
  });

  it('refuses processes that ended up on different backends', () => {
    expect(() => meanOf([figures(1), { ...figures(1), backend: 'tensorflow' }])).toThrow(/different backends/);
  });

  it('measures a tiny net for real in a child process', async () => {
    const cacheDir = await mkdtemp(join(tmpdir(), 'tl-calibration-'));
    const progress: string[] = [];
    // Enough steps that the forward/step comparison stands above timer noise on a busy machine.
    const real = { ...job, batchSize: 16, steps: 6 };
    const result = await calibrate({ job: real, processes: 1, cacheDir, onProgress: (line) => progress.push(line) });
    const t = result.throughput;
    for (const rate of [t.trainImagesPerSecond, t.forwardImagesPerSecond, t.evalImagesPerSecond]) {
      expect(rate).toBeGreaterThan(0);
      expect(Number.isFinite(rate)).toBe(true);
    }
    // A forward pass alone is cheaper than a training step.
    expect(t.forwardImagesPerSecond).toBeGreaterThan(t.trainImagesPerSecond);
    expect(t.layerFlopShare).toHaveLength(8);
    expect(t.layerFlopShare.reduce((sum, share) => sum + share, 0)).toBeCloseTo(1, 9);
    expect(progress.some((line) => /train step/.test(line))).toBe(true);
  }, 120_000);
});
