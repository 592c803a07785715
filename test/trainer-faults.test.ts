// Issue 9, the fault suite, the trainer's part: the real trainer (`trainer run-cell`, the program
// the process executor and a Kubernetes Job run) over a real nats-server and a local store.
// 1. SIGKILLed at random steps, it resumes from its last checkpoint and ends with the same
//    weights, bit for bit, as an uninterrupted run on the same backend.
// 2. A checkpoint with a flipped byte is refused by its sha256, never loaded, and the cell
//    resumes from the checkpoint before it, again ending with the same weights.
// Each figure is printed on a line of its own (`trainer kill:`, `checkpoint flip:`).
import { cp, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Cell, expandGrid, validateSpec } from '@transferlab/experiment';
import { type Bus, LocalFolderStore, cellProgressFilter, connectNatsBus } from '@transferlab/platform';
import { type CellProgress, cellKeys, ensureSplits, putJson } from '@transferlab/runner';
import { type OwnNats, logLines, ownNats, spawnTs, weightsSha256 } from './support/faults.ts';
import { REPO } from './support/servers.ts';

const TRAINER = join(REPO, 'services/trainer/src/main.ts');

// One base cell: 5 classes x 40 images, batches of 16 (13 a epoch), 4 epochs, a checkpoint
// after every epoch: 52 steps, a few seconds of training.
const SPEC = validateSpec({
  name: 'trainer-faults',
  dataset: { kind: 'mnist' },
  split: { kind: 'random', trainPerClass: 40, valPerClass: 5, testPerClass: 5 },
  net: { kind: 'small', width: 0.25 },
  training: { batchSize: 16, maxEpochs: 4, patience: 4, augment: false, scoreTopK: 1, checkpointEveryEpochs: 1 },
  base: { maxEpochs: 4, patience: 4 },
  layers: [1],
  arms: ['baseA'],
  repeats: 1,
});

let work: string;
let nats: OwnNats;
let bus: Bus;
let cell: Cell;
/** A store with the split and the cell's definition, copied for each run. */
let pristine: string;
let uninterrupted: string;

async function freshStore(name: string): Promise<string> {
  const root = join(work, name);
  await cp(pristine, root, { recursive: true });
  return root;
}

interface TrainerRun {
  code: number | null;
  signal: NodeJS.Signals | null;
  output: string;
  /** The last step the trainer reported before it ended (1-based, across epochs). */
  lastStep: number;
}

/** One `trainer run-cell`; with `killAtStep`, SIGKILL as soon as it reports that step. */
async function runTrainer(root: string, sweepId: string, attempt: number, killAtStep?: number): Promise<TrainerRun> {
  let lastStep = 0;
  // Set once spawned; the subscription starts first so that no early step goes unseen.
  const running: { trainer?: ReturnType<typeof spawnTs> } = {};
  const subscription = await bus.subscribe(cellProgressFilter(sweepId), (message) => {
    const progress = message.json<CellProgress>();
    if (progress.phase !== 'training' || progress.epoch === undefined || progress.batch === undefined) return;
    const step = (progress.epoch - 1) * (progress.batchesPerEpoch ?? 0) + progress.batch;
    lastStep = Math.max(lastStep, step);
    if (killAtStep !== undefined && step >= killAtStep && running.trainer?.child.exitCode === null) {
      running.trainer.child.kill('SIGKILL');
    }
  });
  const trainer = spawnTs(
    TRAINER,
    ['run-cell', '--cell-id', cell.id, '--sweep-id', sweepId, '--attempt', String(attempt)],
    {
      TRANSFERLAB_STORE: root,
      TRANSFERLAB_NATS_URL: nats.url,
      TRANSFERLAB_PROGRESS_INTERVAL_MS: '0',
      TRANSFERLAB_METRICS_PORT: 'off',
      TRANSFERLAB_LOG_LEVEL: 'info',
    },
  );
  running.trainer = trainer;
  const { code, signal } = await trainer.exited;
  await subscription.unsubscribe();
  return { code, signal, output: trainer.output(), lastStep };
}

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'tl-trainer-faults-'));
  nats = await ownNats(join(work, 'nats'));
  bus = await connectNatsBus({ servers: nats.url, name: 'trainer-faults-test' });
  pristine = join(work, 'pristine');
  const store = new LocalFolderStore(pristine);
  const plan = expandGrid(SPEC);
  await ensureSplits(store, plan.splits, { specDir: REPO });
  cell = plan.cells.find((c) => c.arm === 'baseA')!;
  await putJson(store, cellKeys.cell(cell.id), cell);

  uninterrupted = await freshStore('uninterrupted');
  const run = await runTrainer(uninterrupted, 'uninterrupted', 1);
  expect(run.code, `the uninterrupted run failed:\n${run.output}`).toBe(0);
}, 180_000);

afterAll(async () => {
  await bus?.close();
  await nats?.stop();
  await rm(work, { recursive: true, force: true });
});

describe('the trainer under faults', () => {
  it('SIGKILLed at random steps, resumes from its last checkpoint and ends with the same weights', async () => {
    const expected = await weightsSha256(uninterrupted, cellKeys.final(cell.id));
    // Three kills, each at a random step of what is left: the later ones kill a resumed run.
    const root = await freshStore('killed');
    const first = 2 + Math.floor(Math.random() * 9);
    const second = first + 10 + Math.floor(Math.random() * 8);
    const third = second + 10 + Math.floor(Math.random() * 8);
    const killedAt: number[] = [];
    const resumedAt: number[] = [];
    let attempt = 1;
    for (const target of [first, second, third]) {
      const killed = await runTrainer(root, 'killed', attempt++, target);
      expect(killed.signal, `the trainer was to be killed at step ${target}:\n${killed.output}`).toBe('SIGKILL');
      killedAt.push(killed.lastStep);
      resumedAt.push(...logLines(killed.output, /^resuming from checkpoint$/).map((line) => Number(line.epoch)));
    }
    const resumed = await runTrainer(root, 'killed', attempt);
    expect(resumed.code, resumed.output).toBe(0);
    const from = logLines(resumed.output, /^resuming from checkpoint$/);
    expect(from, `the last run resumed from no checkpoint:\n${resumed.output}`).toHaveLength(1);
    resumedAt.push(Number(from[0]!.epoch));
    const actual = await weightsSha256(root, cellKeys.final(cell.id));
    expect(actual, "the resumed run's final weights differ from the uninterrupted run's").toBe(expected);
    console.log(`trainer kill: ${killedAt.length} SIGKILLs, at steps ${killedAt.join(', ')} of 52`);
    console.log(`trainer kill: runs resumed from the checkpoints of epochs ${resumedAt.join(', ')}`);
    console.log('trainer kill: final net bit-identical to the uninterrupted run (sha256 of the weights)');
  });

  it('refuses a checkpoint with a flipped byte and resumes from the previous one, to the same weights', async () => {
    const expected = await weightsSha256(uninterrupted, cellKeys.final(cell.id));
    const root = await freshStore('flipped');
    // Killed in the fourth epoch: checkpoints of epochs 2 and 3 are on disk, 3 the latest.
    const killed = await runTrainer(root, 'flipped', 1, 3 * 13 + 2);
    expect(killed.signal, killed.output).toBe('SIGKILL');
    const dir = join(root, ...cellKeys.checkpoint(cell.id).split('/'));
    const manifest = JSON.parse(await readFile(join(dir, 'manifest.json'), 'utf8')) as {
      objects: Array<{ role: string; key: string }>;
    };
    const previous = JSON.parse(await readFile(join(dir, 'manifest.previous.json'), 'utf8')) as typeof manifest;
    const stateOf = async (m: typeof manifest): Promise<number> =>
      (
        JSON.parse(await readFile(join(dir, m.objects.find((o) => o.role === 'state')!.key), 'utf8')) as {
          epoch: number;
        }
      ).epoch;
    const [latestEpoch, previousEpoch] = [await stateOf(manifest), await stateOf(previous)];
    expect(latestEpoch).toBeGreaterThan(previousEpoch);

    const weights = join(dir, manifest.objects.find((o) => o.role === 'weights')!.key);
    const bytes = await readFile(weights);
    const at = Math.floor(Math.random() * bytes.length);
    bytes[at] = bytes[at]! ^ 0x10;
    await writeFile(weights, bytes);

    const resumed = await runTrainer(root, 'flipped', 2);
    expect(resumed.code, resumed.output).toBe(0);
    const rejected = logLines(resumed.output, /^checkpoint rejected, resuming from the previous one$/);
    expect(rejected, resumed.output).toHaveLength(1);
    expect(String(rejected[0]!.error)).toContain('is corrupt: its sha256 is');
    const from = logLines(resumed.output, /^resuming from checkpoint$/);
    expect(from.map((line) => line.epoch)).toEqual([previousEpoch]);
    expect(await weightsSha256(root, cellKeys.final(cell.id))).toBe(expected);
    console.log(`checkpoint flip: byte ${at} of ${bytes.length} flipped in the epoch ${latestEpoch} checkpoint`);
    console.log(`checkpoint flip: refused by its sha256, 0 loads of it; resumed from epoch ${previousEpoch}`);
    console.log('checkpoint flip: final net bit-identical to the uninterrupted run');
  });
});
