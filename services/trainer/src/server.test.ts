// The trainer's gRPC mode, in this process, on a real tiny MNIST cell: RunCell streams progress
// then the result, one cell at a time; cancelling the call stops training at a checkpoint;
// GetRun reads what the trainer did and what the store holds.
import { spawn } from 'node:child_process';
import * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Cell } from '@transferlab/experiment';
import { type BusMessage, cellProgressFilter, createInProcessBus, createLogger } from '@transferlab/platform';
import {
  CellPhase,
  CellState,
  type GetRunResponse,
  type RunCellResponse,
  TrainerServiceClient,
} from '@transferlab/proto';
import { cellToProto } from '@transferlab/proto/mappers';
import { cellKeys } from '@transferlab/runner';
import type { CellProgressEvent } from './cell-events.ts';
import { type TrainerServer, createServer } from './server.ts';
import { TRAINER_MAIN, freePort, tinyStore } from './test-fixtures.ts';

const log = createLogger('trainer-test', { level: 'silent' });
const bus = createInProcessBus();
let fixture: Awaited<ReturnType<typeof tinyStore>>;
let server: TrainerServer;
let client: TrainerServiceClient;

beforeAll(async () => {
  fixture = await tinyStore({ maxEpochs: 1 });
  server = await createServer({ store: fixture.store, bus, log, port: 0, progressIntervalMs: 0 });
  client = new TrainerServiceClient(`127.0.0.1:${server.port}`, grpc.credentials.createInsecure());
});

afterAll(async () => {
  client?.close();
  await server?.shutdown(1000);
  await bus.close();
});

interface Streamed {
  call: grpc.ClientReadableStream<RunCellResponse>;
  messages: RunCellResponse[];
  /** Resolves with the status the stream ended with (OK included). */
  status: Promise<grpc.StatusObject>;
}

function runCell(cell: Cell, extra: { sweepId?: string; attempt?: number } = {}, to = client): Streamed {
  const call = to.runCell(
    { cell: cellToProto(cell), attempt: extra.attempt ?? 1, sweepId: extra.sweepId ?? '' },
    { deadline: Date.now() + 60_000 },
  );
  const messages: RunCellResponse[] = [];
  call.on('data', (message: RunCellResponse) => messages.push(message));
  // An error event carries the final status too; 'status' always comes.
  call.on('error', () => undefined);
  const status = new Promise<grpc.StatusObject>((resolve) => call.on('status', resolve));
  return { call, messages, status };
}

function getRun(cellId: string): Promise<GetRunResponse> {
  return new Promise((resolve, reject) =>
    client.getRun({ cellId }, (error, response) => (error ? reject(error) : resolve(response))),
  );
}

async function until(check: () => boolean | Promise<boolean>, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error('timed out');
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

describe('TrainerService', () => {
  it('RunCell streams progress, then the result last; GetRun reports it SUCCEEDED; progress goes on the bus', async () => {
    const { baseA } = fixture;
    const published: BusMessage[] = [];
    await bus.subscribe(cellProgressFilter('grpc-sweep'), (m) => void published.push(m));
    const run = runCell(baseA, { sweepId: 'grpc-sweep', attempt: 3 });
    const status = await run.status;
    expect(status.code, status.details).toBe(grpc.status.OK);

    const events = run.messages.map((m) => m.event!);
    expect(events.at(-1)!.$case).toBe('result');
    expect(events.slice(0, -1).every((event) => event.$case === 'progress')).toBe(true);
    const progress = events.flatMap((event) => (event.$case === 'progress' ? [event.value] : []));
    expect(progress[0]!.phase).toBe(CellPhase.CELL_PHASE_PREPARING);
    expect(progress.some((p) => p.epochDone && p.valTop1 !== undefined)).toBe(true);
    const last = events.at(-1)!;
    const result = last.$case === 'result' ? last.value : undefined;
    expect(result).toMatchObject({ cellId: baseA.id, name: baseA.name, epochs: 1 });
    expect(result!.valTop1History).toHaveLength(1);
    // The primary score is the evaluator's test top-1; training alone gives the validation score.
    expect(result!.score).toBeNaN();
    expect(result!.valScore).toBe(result!.valTop1History[0]);
    expect(result!.finalCheckpoint?.key).toBe(`${cellKeys.final(baseA.id)}/manifest.json`);
    expect(result!.testTop1).toBeUndefined(); // the evaluator's, later

    await until(() => published.length > 0);
    expect(published[0]!.json<CellProgressEvent>()).toMatchObject({ cellId: baseA.id, attempt: 3 });

    const { run: stored } = await getRun(baseA.id);
    expect(stored).toMatchObject({ cellId: baseA.id, state: CellState.CELL_STATE_SUCCEEDED, attempt: 3 });
    expect(stored!.result?.epochs).toBe(1);

    // A finished cell: the stored result at once, no training.
    const again = runCell(baseA);
    expect((await again.status).code).toBe(grpc.status.OK);
    expect(again.messages.at(-1)!.event!.$case).toBe('result');
  });

  it('trains one cell at a time, and a cancelled call stops training with its checkpoint kept', async () => {
    // Not stored: the server takes the request's cell (and stores it, as trainCell does).
    const long: Cell = {
      ...fixture.baseB,
      id: 'long-baseB',
      training: { ...fixture.baseB.training, maxEpochs: 8, patience: 8 },
    };
    const baseB = long;
    const first = runCell(baseB);
    await until(() => first.messages.some((m) => m.event?.$case === 'progress' && m.event.value.step > 0));

    const second = runCell(fixture.baseA);
    const busy = await second.status;
    expect(busy.code).toBe(grpc.status.RESOURCE_EXHAUSTED);
    expect(busy.details).toContain(`busy with cell ${baseB.id}`);
    expect((await getRun(baseB.id)).run?.state).toBe(CellState.CELL_STATE_RUNNING);

    first.call.cancel();
    expect((await first.status).code).toBe(grpc.status.CANCELLED);
    await until(async () => (await getRun(baseB.id)).run?.state !== CellState.CELL_STATE_RUNNING);
    const { run } = await getRun(baseB.id);
    expect(run?.state).toBe(CellState.CELL_STATE_CANCELLED);
    expect(run?.checkpoint?.key).toBe(`${cellKeys.checkpoint(baseB.id)}/manifest.json`);
    expect(await fixture.store.stat(cellKeys.training(baseB.id))).toBeUndefined();
  });

  it('GetRun: NOT_FOUND for a cell never seen, INVALID_ARGUMENT for a bad id', async () => {
    await expect(getRun('never-seen')).rejects.toMatchObject({ code: grpc.status.NOT_FOUND });
    await expect(getRun('not.a.token')).rejects.toMatchObject({ code: grpc.status.INVALID_ARGUMENT });
  });

  it('RunCell: INVALID_ARGUMENT for a cell that contradicts the stored one, FAILED_PRECONDITION without a split', async () => {
    const { baseA } = fixture;
    const wrong = await runCell({ ...baseA, seed: 7 }).status;
    expect(wrong.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(wrong.details).toContain('cell.seed is 7');
    const nosplit = await runCell({ ...baseA, id: 'unstored-cell', splitId: 'no-such-split' }).status;
    expect(nosplit.code).toBe(grpc.status.FAILED_PRECONDITION);
    expect(nosplit.details).toContain('split no-such-split');
  });

  it('shutdown stops a run in flight at a checkpoint and tells its caller UNAVAILABLE', async () => {
    const other = await tinyStore({ maxEpochs: 8 });
    const own = await createServer({ store: other.store, bus, log, port: 0 });
    const ownClient = new TrainerServiceClient(`127.0.0.1:${own.port}`, grpc.credentials.createInsecure());
    try {
      const run = runCell(other.baseB, {}, ownClient);
      await until(() => run.messages.some((m) => m.event?.$case === 'progress' && m.event.value.step > 0));
      await own.shutdown(5000);
      const status = await run.status;
      expect(status.code).toBe(grpc.status.UNAVAILABLE);
      expect(status.details).toContain('checkpoint kept');
      expect(await other.store.stat(`${cellKeys.checkpoint(other.baseB.id)}/manifest.json`)).toBeDefined();
    } finally {
      ownClient.close();
    }
  });

  it('main.ts serves TrainerService by default and exits 0 on SIGTERM', async () => {
    const port = await freePort();
    const child = spawn(process.execPath, ['--import', import.meta.resolve('tsx'), TRAINER_MAIN], {
      env: {
        ...process.env,
        TRANSFERLAB_STORE: fixture.root,
        TRANSFERLAB_S3_ENDPOINT: '',
        TRANSFERLAB_PORT: String(port),
        TRANSFERLAB_NATS_URL: '',
      },
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let stderr = '';
    child.stderr!.on('data', (chunk: Buffer) => (stderr += chunk.toString('utf8')));
    const exited = new Promise<number | null>((resolve) => child.on('close', resolve));
    const remote = new TrainerServiceClient(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
    try {
      await until(() => stderr.includes('gRPC server listening'));
      const run = await new Promise<GetRunResponse>((resolve, reject) =>
        remote.getRun({ cellId: fixture.baseA.id }, (error, response) => (error ? reject(error) : resolve(response))),
      );
      expect(run.run?.state).toBe(CellState.CELL_STATE_SUCCEEDED);
    } finally {
      remote.close();
      child.kill('SIGTERM');
    }
    expect(await exited, stderr).toBe(0);
    expect(stderr).toContain('shutting down');
  });
});
