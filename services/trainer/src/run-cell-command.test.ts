// The trainer's one-shot mode as the cluster runs it: its own process, a real tiny MNIST cell
// in a local-folder store, events on a real nats-server.
import { type ChildProcess, spawn } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  type Bus,
  type BusMessage,
  cellFinishedFilter,
  cellProgressFilter,
  createLogger,
  createInProcessBus,
} from '@transferlab/platform';
import { connectNatsBus } from '@transferlab/platform/nats-bus';
import { cellKeys } from '@transferlab/runner';
import { ProcessExecutor } from '@transferlab/runner/controller/process-executor';
import type { CellFinishedEvent, CellProgressEvent } from './cell-events.ts';
import { UsageError, parseRunCellArgs, runCellCommand } from './run-cell-command.ts';
import { type Nats, TRAINER_MAIN, startNats, tinyStore } from './test-fixtures.ts';

let nats: Nats;
let bus: Bus;

beforeAll(async () => {
  nats = await startNats();
  bus = await connectNatsBus({ servers: nats.url, name: 'trainer-test' });
});

afterAll(async () => {
  await bus?.close();
  await nats?.stop();
});

interface Trainer {
  child: ChildProcess;
  done: Promise<{ code: number | null; stderr: string }>;
}

function startTrainer(args: string[], env: Record<string, string>): Trainer {
  const child = spawn(process.execPath, ['--import', import.meta.resolve('tsx'), TRAINER_MAIN, ...args], {
    // An empty S3 endpoint keeps the trainer on the local store even when the test script exports S3.
    env: { ...process.env, TRANSFERLAB_S3_ENDPOINT: '', TRANSFERLAB_NATS_URL: nats.url, ...env },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  child.stderr!.on('data', (chunk: Buffer) => (stderr += chunk.toString('utf8')));
  const done = new Promise<{ code: number | null; stderr: string }>((resolve) =>
    child.on('close', (code) => resolve({ code, stderr })),
  );
  return { child, done };
}

/** Every message of a sweep's progress and finished subjects, as they arrive. */
async function watchSweep(sweepId: string) {
  const progress: BusMessage[] = [];
  const finished: BusMessage[] = [];
  const subscriptions = [
    await bus.subscribe(cellProgressFilter(sweepId), (m) => void progress.push(m), { deliver: 'all' }),
    await bus.subscribe(cellFinishedFilter(sweepId), (m) => void finished.push(m), { deliver: 'all' }),
  ];
  return {
    progress,
    finished,
    close: () => Promise.all(subscriptions.map((s) => s.unsubscribe())),
  };
}

async function waitFor(check: () => boolean, what: string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

const TRACEPARENT = '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01';

describe('trainer run-cell', () => {
  it('trains a cell, publishes progress and completion in the trace of its traceparent, and exits 0', async () => {
    const { root, store, baseA } = await tinyStore();
    const sweepId = `ok${Date.now()}`;
    const seen = await watchSweep(sweepId);
    const trainer = startTrainer(['run-cell', '--cell-id', baseA.id, '--sweep-id', sweepId, '--attempt', '2'], {
      TRANSFERLAB_STORE: root,
      TRANSFERLAB_TRACEPARENT: TRACEPARENT,
    });
    const { code, stderr } = await trainer.done;
    expect(code, stderr).toBe(0);

    await waitFor(() => seen.finished.length === 1, 'the completion event');
    const finished = seen.finished[0]!;
    // The trace continues: the events' parent is the trainer's run-cell span, a child of TRACEPARENT.
    const runSpan = finished.headers.traceparent!;
    expect(runSpan.split('-')[1]).toBe(TRACEPARENT.split('-')[1]);
    expect(runSpan).not.toBe(TRACEPARENT);
    const event = finished.json<CellFinishedEvent>();
    expect(event).toMatchObject({ cellId: baseA.id, sweepId, attempt: 2, outcome: 'succeeded' });
    expect(event.finalCheckpoint?.key).toBe(`${cellKeys.final(baseA.id)}/manifest.json`);
    expect(event.finalCheckpoint?.sha256).toMatch(/^[0-9a-f]{64}$/);
    expect(event.training?.epochs).toBe(1);

    // Progress went out before completion (the bus was drained before the exit), throttled.
    const progress = seen.progress.map((m) => m.json<CellProgressEvent>());
    expect(progress.length).toBeGreaterThan(1);
    expect(progress.every((p) => p.cellId === baseA.id && p.attempt === 2)).toBe(true);
    expect(seen.progress.every((m) => m.headers.traceparent === runSpan)).toBe(true);
    expect(progress.some((p) => p.phase === 'training' && p.epochDone && p.valTop1 !== undefined)).toBe(true);
    expect(Math.max(...seen.progress.map((m) => m.seq))).toBeLessThan(finished.seq);

    expect(await store.stat(cellKeys.training(baseA.id))).toBeDefined();
    expect(await store.stat(`${cellKeys.final(baseA.id)}/manifest.json`)).toBeDefined();
    await seen.close();
  });

  it('checkpoints and exits 143 on SIGTERM, publishing nothing final; the next run resumes and completes', async () => {
    const { root, store, baseB } = await tinyStore({ maxEpochs: 8 });
    const sweepId = `term${Date.now()}`;
    const seen = await watchSweep(sweepId);
    const first = startTrainer(['run-cell', '--cell-id', baseB.id, '--sweep-id', sweepId], { TRANSFERLAB_STORE: root });
    await waitFor(
      () => seen.progress.some((m) => m.json<CellProgressEvent>().phase === 'training'),
      'the first training progress',
      20_000,
    );
    first.child.kill('SIGTERM');
    const interrupted = await first.done;
    expect(interrupted.code, interrupted.stderr).toBe(143);
    expect(interrupted.stderr).toContain('interrupted, checkpoint kept');
    expect(await store.stat(`${cellKeys.checkpoint(baseB.id)}/manifest.json`)).toBeDefined();
    expect(await store.stat(cellKeys.training(baseB.id))).toBeUndefined();

    const second = startTrainer(['run-cell', '--cell-id', baseB.id, '--sweep-id', sweepId, '--attempt', '2'], {
      TRANSFERLAB_STORE: root,
    });
    const resumed = await second.done;
    expect(resumed.code, resumed.stderr).toBe(0);
    expect(resumed.stderr).toContain('resuming from checkpoint');
    await waitFor(() => seen.finished.length > 0, 'the completion event');
    // Only the second attempt finished: the interrupted one published nothing final.
    expect(seen.finished.map((m) => m.json<CellFinishedEvent>().attempt)).toEqual([2]);
    const outcome = seen.finished[0]!.json<CellFinishedEvent>().training!;
    expect(outcome.epochs).toBe(8);
    expect(outcome.history).toHaveLength(8);
    await seen.close();
  });

  it('exits 2 naming the missing key when the cell was never stored', async () => {
    const { root } = await tinyStore();
    const { code, stderr } = await startTrainer(['run-cell', '--cell-id', 'no-such-cell', '--sweep-id', 's1'], {
      TRANSFERLAB_STORE: root,
    }).done;
    expect(code).toBe(2);
    expect(stderr).toContain(`${root}/cells/no-such-cell/cell.json`);
  });

  it('exits 2 on bad flags', async () => {
    const { code, stderr } = await startTrainer(['run-cell', '--cell-id', 'x'], {}).done;
    expect(code).toBe(2);
    expect(stderr).toContain('--sweep-id is required');
  });

  it('exits 2 with the usage when no command, or another one, is given: run-cell is the only mode', async () => {
    for (const args of [[], ['serve']]) {
      const { code, stderr } = await startTrainer(args, {}).done;
      expect(code, stderr).toBe(2);
      expect(stderr).toContain('expected run-cell');
      expect(stderr).toContain('--cell-id');
    }
  });
});

describe('ProcessExecutor with the real trainer', () => {
  it('runs two cells one at a time through `run-cell`, each publishing its completion', async () => {
    const { root, store, baseA, baseB } = await tinyStore();
    const sweepId = `exec${Date.now()}`;
    const seen = await watchSweep(sweepId);
    const executor = new ProcessExecutor({
      maxProcesses: 1,
      env: { TRANSFERLAB_STORE: root, TRANSFERLAB_S3_ENDPOINT: '', TRANSFERLAB_NATS_URL: nats.url },
      onOutput: () => undefined,
    });
    let most = 0;
    const sampler = setInterval(() => (most = Math.max(most, executor.processes)), 5);
    try {
      const signal = new AbortController().signal;
      const outcomes = await Promise.all(
        [baseA, baseB].map((cell) => executor.run(cell, { sweepId, attempt: 1, signal })),
      );
      expect(outcomes).toEqual(['trained', 'trained']);
    } finally {
      clearInterval(sampler);
      await executor.close();
    }
    expect(most).toBe(1);
    await waitFor(() => seen.finished.length === 2, 'two completion events');
    expect(seen.finished.map((m) => m.json<CellFinishedEvent>().cellId)).toEqual([baseA.id, baseB.id]);
    for (const cell of [baseA, baseB]) expect(await store.stat(cellKeys.training(cell.id))).toBeDefined();
    await seen.close();
  });
});

describe('parseRunCellArgs', () => {
  it('reads the flags and checks them', () => {
    expect(parseRunCellArgs(['--cell-id', 'c1', '--sweep-id', 's1'])).toEqual({
      cellId: 'c1',
      sweepId: 's1',
      attempt: 1,
    });
    expect(parseRunCellArgs(['--cell-id=c1', '--sweep-id=s1', '--attempt=3']).attempt).toBe(3);
    expect(() => parseRunCellArgs(['--cell-id', 'c1', '--sweep-id', 's1', '--attempt', '0'])).toThrow(UsageError);
    expect(() => parseRunCellArgs(['--cell-id', 'a.b', '--sweep-id', 's1'])).toThrow(/cell id/);
    expect(() => parseRunCellArgs(['--cell-id', 'c1', '--sweep-id', 's1', '--bogus'])).toThrow(/bogus/);
  });
});

describe('runCellCommand', () => {
  it('returns 1 and publishes the failure when training fails', async () => {
    const { store, baseA } = await tinyStore();
    // A cell whose split is gone: training cannot load its data.
    await store.delete(`splits/${baseA.splitId}/manifest.json`);
    const events = createInProcessBus();
    const failures: CellFinishedEvent[] = [];
    await events.subscribe(cellFinishedFilter('s1'), (m) => void failures.push(m.json<CellFinishedEvent>()));
    const code = await runCellCommand(
      { cellId: baseA.id, sweepId: 's1', attempt: 1 },
      {
        store,
        bus: events,
        log: createLogger('trainer-test', { level: 'silent' }),
        signal: new AbortController().signal,
      },
    );
    expect(code).toBe(1);
    await waitFor(() => failures.length === 1, 'the failure event');
    expect(failures[0]).toMatchObject({ cellId: baseA.id, outcome: 'failed' });
    expect(failures[0]!.error).toContain(baseA.splitId);
    await events.close();
  });
});
