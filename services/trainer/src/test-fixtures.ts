// Shared by the trainer's tests: tiny real MNIST cells in a temporary store, and a real
// nats-server (TRANSFERLAB_NATS_URL when set, else one started by scripts/nats-start.sh).
import { execFile } from 'node:child_process';
import { mkdtemp } from 'node:fs/promises';
import { createServer as createNetServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { type Cell, expandGrid, validateSpec } from '@transferlab/experiment';
import { LocalFolderStore } from '@transferlab/platform';
import { cellKeys, ensureSplits, putJson } from '@transferlab/runner';

const run = promisify(execFile);
const SCRIPTS = resolve(import.meta.dirname, '../../../scripts');
export const TRAINER_MAIN = resolve(import.meta.dirname, 'main.ts');

/**
 * A store with the split of a tiny MNIST sweep (5 classes a half, 20 training images a class)
 * and the definitions of its base cells, as the controller writes them before a launch.
 * `maxEpochs` (default 1) is both base cells' epoch budget; patience never stops them earlier.
 */
export async function tinyStore(options: { maxEpochs?: number } = {}): Promise<{
  root: string;
  store: LocalFolderStore;
  baseA: Cell;
  baseB: Cell;
}> {
  const root = await mkdtemp(join(tmpdir(), 'tl-trainer-'));
  const store = new LocalFolderStore(root);
  const plan = expandGrid(
    validateSpec({
      name: 'trainer-test',
      dataset: { kind: 'mnist' },
      split: { kind: 'random', trainPerClass: 20, valPerClass: 5, testPerClass: 5 },
      net: { kind: 'small', width: 0.25 },
      training: { batchSize: 10, learningRate: 0.01, maxEpochs: 1, patience: 1, augment: false, scoreTopK: 1 },
      base: { maxEpochs: options.maxEpochs ?? 1, patience: options.maxEpochs ?? 1 },
      layers: [1],
      arms: ['baseA', 'baseB'],
      repeats: 1,
    }),
  );
  await ensureSplits(store, plan.splits, { specDir: process.cwd() });
  for (const cell of plan.cells) await putJson(store, cellKeys.cell(cell.id), cell);
  const baseA = plan.cells.find((cell) => cell.arm === 'baseA')!;
  const baseB = plan.cells.find((cell) => cell.arm === 'baseB')!;
  return { root, store, baseA, baseB };
}

export async function freePort(): Promise<number> {
  const server = createNetServer();
  await new Promise<void>((done) => server.listen(0, '127.0.0.1', done));
  const { port } = server.address() as { port: number };
  await new Promise((done) => server.close(done));
  return port;
}

export interface Nats {
  url: string;
  stop(): Promise<void>;
}

/** The nats-server the tests use; never skipped: when none can run, the suite fails. */
export async function startNats(): Promise<Nats> {
  if (process.env.TRANSFERLAB_NATS_URL) return { url: process.env.TRANSFERLAB_NATS_URL, stop: async () => {} };
  const dir = await mkdtemp(join(tmpdir(), 'tl-trainer-nats-'));
  const [port, monitorPort] = [await freePort(), await freePort()];
  let stdout: string;
  try {
    ({ stdout } = await run('bash', [join(SCRIPTS, 'nats-start.sh'), dir, String(port), String(monitorPort)]));
  } catch (error) {
    const stderr = (error as { stderr?: string }).stderr ?? '';
    throw new Error(`could not start nats-server for the trainer tests: ${(error as Error).message} ${stderr}`, {
      cause: error,
    });
  }
  const url = /^TRANSFERLAB_NATS_URL=(\S+)$/m.exec(stdout)?.[1];
  if (!url) throw new Error(`nats-start.sh printed no TRANSFERLAB_NATS_URL: ${stdout}`);
  return {
    url,
    stop: async () => {
      await run('bash', [join(SCRIPTS, 'nats-stop.sh'), dir]);
    },
  };
}
