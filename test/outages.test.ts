// Issue 9, the fault suite: the servers a sweep depends on go away in the middle of it. First
// nats-server is stopped for 30 s, then the S3 server (Ceph's radosgw; the monitor and OSD keep
// the objects) for 30 s, while every service runs as its own process and the controller runs
// trainers. The sweep must still succeed with every cell's result in S3: the clients reconnect
// and retry within their bounds, and a cell that fails meanwhile is retried from its checkpoint.
// Both servers are this test's own (support/faults.ts): the suite's shared ones stay up.
// Figures on lines of their own (`outage:`).
import { execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
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
  connectNatsBus,
  s3StoreOptionsFromEnv,
  sweepKey,
} from '@transferlab/platform';
import { cellKeys } from '@transferlab/runner';
import type { CellRecord, SweepRecord } from '@transferlab/runner/controller/records';
import { type OwnNats, type OwnRadosgw, ownNats, ownRadosgw, sleep } from './support/faults.ts';
import { REPO } from './support/servers.ts';
import { type Services, startServices } from './support/services.ts';

const run = promisify(execFile);
const CLI = join(REPO, 'services/cli/bin/transferlab.js');
const OUTAGE_MS = 30_000;

// Long enough that cells are still to run when each outage starts: 12 cells of 3 epochs.
const SPEC = `
name: outage
dataset: { kind: mnist }
split: { kind: random, trainPerClass: 60, valPerClass: 10, testPerClass: 10 }
net: { kind: small, width: 0.25 }
training: { batchSize: 16, maxEpochs: 3, augment: false, scoreTopK: 1 }
layers: [1, 2, 3, 4, 5]
arms: [baseA, baseB, AnB, BnB+]
repeats: 1
concurrency: 2
`;
const CELLS = 12;

let nats: OwnNats;
let rgw: OwnRadosgw;
let services: Services;
let store: S3Store;
const dirs: string[] = [];

beforeAll(async () => {
  const natsDir = await mkdtemp(join(tmpdir(), 'tl-outage-nats-'));
  const rgwDir = await mkdtemp(join(tmpdir(), 'tl-outage-rgw-'));
  dirs.push(natsDir, rgwDir);
  nats = await ownNats(natsDir);
  rgw = await ownRadosgw(rgwDir);
  services = await startServices({
    servers: { env: { TRANSFERLAB_NATS_URL: nats.url, ...rgw.env }, stop: async () => undefined },
    name: 'outage',
  });
  store = new S3Store(s3StoreOptionsFromEnv({ ...process.env, ...services.env }));
}, 240_000);

afterAll(async () => {
  await services?.stop();
  await rgw?.stop();
  await nats?.stop();
  for (const dir of dirs) await rm(dir, { recursive: true, force: true });
}, 60_000);

async function resultsInStore(): Promise<number> {
  return (await store.list('cells/')).filter((key) => key.endsWith('/result.json')).length;
}

async function waitFor(what: string, check: () => Promise<boolean>, ms: number): Promise<void> {
  const until = Date.now() + ms;
  while (!(await check().catch(() => false))) {
    if (Date.now() > until) throw new Error(`timed out after ${ms / 1000} s waiting for ${what}\n${services.logs()}`);
    await sleep(250);
  }
}

describe('the servers a sweep depends on, stopped in the middle of it', () => {
  it('nats-server down for 30 s, then the S3 server down for 30 s: the sweep still succeeds, no cell lost', async () => {
    const specDir = await mkdtemp(join(tmpdir(), 'tl-outage-spec-'));
    dirs.push(specDir);
    await writeFile(join(specDir, 'outage.yaml'), SPEC);
    const started = await run(
      process.execPath,
      [CLI, 'sweep', 'start', '-f', 'outage.yaml', '--server', services.controllerAddress],
      { cwd: specDir, env: { ...process.env, ...services.env } },
    );
    const sweepId = /(?:^|\s)([a-z0-9-]+-[0-9a-f]{8})\s*$/.exec(started.stdout)?.[1];
    expect(sweepId, started.stdout).toBeDefined();

    // NATS goes while trainers run: the first base cell has finished, others are under way.
    await waitFor('the first finished cell', async () => (await resultsInStore()) >= 1, 180_000);
    const beforeNats = await resultsInStore();
    expect(beforeNats, 'the sweep ended before the NATS outage: lengthen SPEC').toBeLessThan(CELLS);
    let at = Date.now();
    await nats.stop();
    await sleep(OUTAGE_MS);
    await nats.start();
    const natsDown = (Date.now() - at) / 1000;

    // Then S3, once the sweep has moved on after NATS came back.
    await waitFor('a cell finished after NATS came back', async () => (await resultsInStore()) > beforeNats, 180_000);
    const beforeS3 = await resultsInStore();
    expect(beforeS3, 'the sweep ended before the S3 outage: lengthen SPEC').toBeLessThan(CELLS);
    at = Date.now();
    await rgw.stopGateway();
    await sleep(OUTAGE_MS);
    await rgw.startGateway();
    const s3Down = (Date.now() - at) / 1000;

    const bus: Bus = await connectNatsBus({ servers: nats.url, name: 'outage-test' });
    try {
      const kv: KeyValueStore = await bus.kv(SWEEPS_BUCKET);
      let sweep: SweepRecord | undefined;
      await waitFor(
        'the sweep to end',
        async () => {
          sweep = (await kv.getJson<SweepRecord>(sweepKey(sweepId!)))?.value;
          return sweep !== undefined && ['succeeded', 'failed', 'cancelled'].includes(sweep.state);
        },
        300_000,
      );
      const records: CellRecord[] = [];
      for (const key of await kv.keys(cellKeyPrefix(sweepId!))) {
        const record = (await kv.getJson<CellRecord>(key))?.value;
        if (record) records.push(record);
      }
      const retried = records.filter((record) => record.attempts > 1);
      let lost = 0;
      for (const record of records) if (!(await store.stat(cellKeys.result(record.cell.id)))) lost++;

      console.log(`outage: nats-server down ${natsDown.toFixed(1)} s with ${beforeNats}/${CELLS} cells done`);
      console.log(`outage: radosgw down ${s3Down.toFixed(1)} s with ${beforeS3}/${CELLS} cells done`);
      console.log(
        `outage: sweep ${sweep!.state}; ${records.length} cells, ${lost} lost, ${retried.length} retried ` +
          `(${retried.map((record) => `${record.cell.name} x${record.attempts}`).join(', ') || 'none'})`,
      );
      expect(sweep!.state, `${sweep!.error ?? ''}\n${services.logs()}`).toBe('succeeded');
      expect(records).toHaveLength(CELLS);
      expect(records.every((record) => record.state === 'succeeded')).toBe(true);
      expect(lost).toBe(0);
    } finally {
      await bus.close();
    }
  }, 900_000);
});
