// Issue 9, the fault suite: the controller SIGKILLed at 20 random points of a small sweep and
// started again each time. Every service is its own process over a real nats-server and a real
// S3 (radosgw); the controller runs each cell's trainer as a child process (the process
// executor). Nothing here trusts the controller's word:
// - cells lost: planned cells without a result.json in S3 at the end;
// - cells trained twice: the trainers' own epoch-end progress events on NATS (JetStream keeps
//   them), more than one per epoch of a cell;
// - duplicate trainers: /proc, scanned every 50 ms for `run-cell` processes of this sweep,
//   more than one alive at once for a cell; and no trainer left once the sweep is done.
// Figures on lines of their own (`controller kill:`).
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  type Bus,
  type KeyValueStore,
  S3Store,
  SWEEPS_BUCKET,
  cellKeyPrefix,
  cellProgressFilter,
  connectNatsBus,
  s3StoreOptionsFromEnv,
  sweepKey,
  waitUntilServing,
} from '@transferlab/platform';
import { cellKeys } from '@transferlab/runner';
import type { CellRecord, SweepRecord } from '@transferlab/runner/controller/records';
import { type Child, sleep, spawnTs } from './support/faults.ts';
import { REPO, type RealServers, realServers } from './support/servers.ts';
import { type Services, TINY_SPEC, startServices } from './support/services.ts';

const run = promisify(execFile);
const CONTROLLER = join(REPO, 'services/controller/src/main.ts');
const CLI = join(REPO, 'services/cli/bin/transferlab.js');
// 20 in CI; TRANSFERLAB_FAULT_KILLS lowers it for a quick look on a busy machine.
const KILLS = Number(process.env.TRANSFERLAB_FAULT_KILLS ?? 20);

let servers: RealServers;
let services: Services;
let bus: Bus;
let kv: KeyValueStore;

beforeAll(async () => {
  servers = await realServers();
  // Everything but the controller, which the test starts and kills itself.
  services = await startServices({
    servers,
    name: 'controller-kill',
    only: ['dataset-splitter', 'transplanter', 'evaluator'],
  });
  bus = await connectNatsBus({ servers: services.env.TRANSFERLAB_NATS_URL!, name: 'controller-kill-test' });
  kv = await bus.kv(SWEEPS_BUCKET);
}, 240_000);

afterAll(async () => {
  await bus?.close();
  await services?.stop();
  await servers?.stop();
}, 60_000);

/** Trainer processes of `sweepId` alive now, by cell id (from /proc). */
async function trainersBySweep(sweepId: string): Promise<Map<string, number[]>> {
  const found = new Map<string, number[]>();
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const args = await readFile(`/proc/${entry}/cmdline`, 'utf8')
      .then((text) => text.split('\0'))
      .catch(() => [] as string[]);
    const at = args.indexOf('run-cell');
    if (at < 0 || args[args.indexOf('--sweep-id') + 1] !== sweepId) continue;
    const cellId = args[args.indexOf('--cell-id') + 1]!;
    found.set(cellId, [...(found.get(cellId) ?? []), Number(entry)]);
  }
  return found;
}

function startController(): Child {
  return spawnTs(CONTROLLER, [], {
    ...services.env,
    TRANSFERLAB_PORT: String(services.ports.controller),
    TRANSFERLAB_METRICS_PORT: 'off',
    TRANSFERLAB_MAX_TRAINERS: '2',
  });
}

async function cellStates(sweepId: string): Promise<CellRecord[]> {
  const records: CellRecord[] = [];
  for (const key of await kv.keys(cellKeyPrefix(sweepId))) {
    const record = (await kv.getJson<CellRecord>(key))?.value;
    if (record) records.push(record);
  }
  return records;
}

describe('the controller killed at random points of a sweep', () => {
  it('loses no cell, trains none twice and never runs two trainers for a cell', async () => {
    const address = `127.0.0.1:${services.ports.controller}`;
    let controller = startController();
    const killLast = (): boolean => controller.child.kill('SIGKILL');
    process.once('exit', killLast);
    await waitUntilServing(address, 60_000);
    const specDir = await mkdtemp(join(tmpdir(), 'tl-controller-kill-'));
    await writeFile(join(specDir, 'tiny.yaml'), TINY_SPEC);
    const started = await run(process.execPath, [CLI, 'sweep', 'start', '-f', 'tiny.yaml', '--server', address], {
      cwd: specDir,
      env: { ...process.env, ...services.env },
    }).finally(() => rm(specDir, { recursive: true, force: true }));
    const sweepId = /(?:^|\s)([a-z0-9-]+-[0-9a-f]{8})\s*$/.exec(started.stdout)?.[1];
    expect(sweepId, started.stdout).toBeDefined();

    // Trainers per cell, watched from outside the controller for the whole test.
    let mostAtOnce = 0;
    const pids = new Set<number>();
    let watching = true;
    const watcher = (async () => {
      while (watching) {
        for (const cellPids of (await trainersBySweep(sweepId!)).values()) {
          mostAtOnce = Math.max(mostAtOnce, cellPids.length);
          for (const pid of cellPids) pids.add(pid);
        }
        await sleep(50);
      }
    })();

    const phases: string[] = [];
    let kills = 0;
    try {
      for (; kills < KILLS; kills++) {
        await sleep(Math.random() * 3000);
        const sweep = (await kv.getJson<SweepRecord>(sweepKey(sweepId!)))?.value;
        if (sweep && ['succeeded', 'failed', 'cancelled'].includes(sweep.state)) break;
        const states = (await cellStates(sweepId!)).map((record) => record.state);
        const active = states.filter((state) => !['pending', 'succeeded'].includes(state));
        phases.push(
          sweep?.state === 'splitting' ? 'splitting' : active.length > 0 ? [...new Set(active)].join('+') : 'between',
        );
        controller.child.kill('SIGKILL');
        await controller.exited;
        controller = startController();
        await waitUntilServing(address, 60_000);
      }
      // The last controller runs the sweep to its end.
      const until = Date.now() + 240_000;
      let state = '';
      while (Date.now() < until) {
        state = (await kv.getJson<SweepRecord>(sweepKey(sweepId!)))?.value.state ?? '';
        if (['succeeded', 'failed', 'cancelled'].includes(state)) break;
        await sleep(250);
      }
      expect(state, `the sweep did not succeed:\n${controller.output().slice(-5000)}`).toBe('succeeded');
    } finally {
      controller.child.kill('SIGTERM');
      await controller.exited;
      process.off('exit', killLast);
      await sleep(1000);
      watching = false;
      await watcher;
    }

    // Cells lost: planned, but no result in the store.
    const records = await cellStates(sweepId!);
    const store = new S3Store(s3StoreOptionsFromEnv({ ...process.env, ...services.env }));
    let lost = 0;
    for (const record of records) if (!(await store.stat(cellKeys.result(record.cell.id)))) lost++;

    // Trained twice: the trainers' epoch-end events, per cell and epoch.
    const epochEnds = new Map<string, number>();
    const replay = await bus.subscribe(
      cellProgressFilter(sweepId),
      (message) => {
        const progress = message.json<{ epochDone?: boolean; epoch?: number }>();
        if (!progress.epochDone) return;
        const key = `${message.subject.split('.').pop()}/${progress.epoch}`;
        epochEnds.set(key, (epochEnds.get(key) ?? 0) + 1);
      },
      { deliver: 'all' },
    );
    await sleep(2000);
    await replay.unsubscribe();
    const trainedCells = new Set([...epochEnds.keys()].map((key) => key.split('/')[0]));
    const twice = [...epochEnds.values()].filter((count) => count > 1).length;
    const left = [...(await trainersBySweep(sweepId!)).values()].flat();

    console.log(`controller kill: ${kills} kill points tried (SIGKILL, then a new controller)`);
    console.log(
      `controller kill: at ${[...new Set(phases)].map((p) => `${p} x${phases.filter((q) => q === p).length}`).join(', ')}`,
    );
    console.log(`controller kill: ${records.length} cells planned, ${lost} lost, ${twice} epochs trained twice`);
    console.log(
      `controller kill: ${pids.size} trainer processes in all, at most ${mostAtOnce} at once for one cell, ${left.length} left at the end`,
    );
    expect(records).toHaveLength(6);
    expect(lost).toBe(0);
    expect(trainedCells.size, 'every cell reported its epoch').toBe(6);
    expect(twice).toBe(0);
    expect(mostAtOnce).toBe(1);
    expect(left).toEqual([]);
  }, 600_000);
});
