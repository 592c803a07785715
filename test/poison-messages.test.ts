// Issue 9, the fault suite: a poisoned NATS message (bytes that are not JSON, or JSON of the
// wrong shape) on each consumer's subject is set aside at once (JetStream term), logged with its
// subject and sequence and without its payload, and the consumer keeps working. Real
// nats-server (one of its own: the evaluations work queue is shared by every evaluator on a
// server), the evaluator's real queue consumer, and an events subscription as WatchSweep and
// the CLI make them. Figures on lines of their own (`poison:`).
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  type Bus,
  LocalFolderStore,
  PoisonMessageError,
  WORK_QUEUES,
  WORK_QUEUE_CONSUMER,
  connectNatsBus,
  createLogger,
  evaluationFinishedFilter,
  sweepEventSubject,
  workQueueStreamName,
} from '@transferlab/platform';
import { consumeEvaluations } from '../services/evaluator/src/server.ts';
import { type OwnNats, consumerCounts, logLines, ownNats, sleep } from './support/faults.ts';

const SECRET = 'db_password: hunter2';
const encoder = new TextEncoder();
/** What a stray or hostile publisher might put on a subject; each carries the secret. */
const POISON: Array<[string, Uint8Array]> = [
  ['not JSON', encoder.encode(`{{{ not json ${SECRET}`)],
  ['binary', new Uint8Array([0xff, 0xfe, 0x00, 0x01, ...encoder.encode(SECRET)])],
  ['JSON null', encoder.encode('null')],
  ['an array', encoder.encode(JSON.stringify([SECRET]))],
  ['a wrong-typed field', encoder.encode(JSON.stringify({ cellId: { note: SECRET }, sweepId: 'poison' }))],
];

let work: string;
let nats: OwnNats;
let bus: Bus;
let logFile: string;

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'tl-poison-'));
  nats = await ownNats(join(work, 'nats'));
  logFile = join(work, 'consumer.log');
  bus = await connectNatsBus({
    servers: nats.url,
    name: 'poison-test',
    logger: createLogger('poison-test', { level: 'warn', destination: logFile }),
  });
}, 60_000);

afterAll(async () => {
  await bus?.close();
  await nats?.stop();
  await rm(work, { recursive: true, force: true });
});

async function waitFor<T>(what: string, probe: () => T | undefined, timeoutMs: number): Promise<T> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const value = probe();
    if (value !== undefined) return value;
    if (Date.now() > until) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(20);
  }
}

describe('poisoned NATS messages', () => {
  it('on the evaluations work queue: set aside at once, logged without payload, the evaluator keeps working', async () => {
    const log = createLogger('evaluator', { level: 'info', destination: logFile });
    const store = new LocalFolderStore(join(work, 'store'));
    // The production retry settings: 5 deliveries, 1 s apart. A poisoned job that went through
    // them would hold the one-at-a-time queue for 4 s each.
    const consumer = await consumeEvaluations({ store, bus, log }, { maxDeliver: 5, retryDelayMs: 1000 });
    const answers: Array<{ cellId: string; code?: string }> = [];
    const watch = await bus.subscribe(evaluationFinishedFilter('poison'), (message) => {
      answers.push(message.json<{ cellId: string; code?: string }>());
    });
    const queue = await bus.workQueue(WORK_QUEUES.evaluations);
    const started = Date.now();
    const seqs: number[] = [];
    for (const [, payload] of POISON) seqs.push((await queue.enqueue(payload)).seq);
    // A well-formed job behind them, for a cell that does not exist: answered NOT_FOUND.
    await queue.enqueue({ cellId: 'no-such-cell', sweepId: 'poison' });
    const answer = await waitFor('the job after the poison', () => answers[0], 20_000);
    const seconds = (Date.now() - started) / 1000;
    expect(answer).toMatchObject({ cellId: 'no-such-cell', code: 'NOT_FOUND' });

    const info = await consumerCounts(nats, workQueueStreamName(WORK_QUEUES.evaluations), WORK_QUEUE_CONSUMER);
    expect(info.num_ack_pending).toBe(0);
    expect(info.num_pending).toBe(0);
    expect(info.num_redelivered, 'a poisoned job was delivered again').toBe(0);

    await consumer.unsubscribe();
    await watch.unsubscribe();
    const text = await readFile(logFile, 'utf8');
    expect(text).not.toContain('hunter2');
    const setAside = logLines(text, /^undecodable or invalid message set aside$/).filter((line) =>
      String(line.subject).startsWith('transferlab-queue.'),
    );
    expect(setAside.map((line) => line.seq)).toEqual(seqs);
    expect(setAside.every((line) => line.subject === 'transferlab-queue.evaluations')).toBe(true);
    console.log(
      `poison: evaluations queue: ${POISON.length} poisoned jobs, ${setAside.length} set aside (term), 0 redeliveries`,
    );
    console.log(`poison: evaluations queue: the next job answered ${seconds.toFixed(2)} s after the first poison`);
    console.log('poison: evaluations queue: 0 log lines with the payload');
  });

  it('on a sweep-events subscription (WatchSweep, the CLI): set aside at once, later events delivered', async () => {
    const subject = sweepEventSubject('poison-events');
    const received: string[] = [];
    const subscription = await bus.subscribe(
      subject,
      (message) => {
        const event = message.json<unknown>();
        if (typeof event !== 'object' || event === null || !('state' in event)) {
          throw new PoisonMessageError(`sweep event ${message.seq} on ${message.subject}: not a sweep event`);
        }
        received.push(String((event as { state: unknown }).state));
      },
      { maxDeliver: 5, retryDelayMs: 1000 },
    );
    const started = Date.now();
    const seqs: number[] = [];
    for (const [, payload] of POISON) seqs.push((await bus.publish(subject, payload)).seq);
    await bus.publish(subject, { sweepId: 'poison-events', state: 'running', counts: {} });
    await waitFor('the event after the poison', () => received[0], 20_000);
    const seconds = (Date.now() - started) / 1000;
    await sleep(1500);
    await subscription.unsubscribe();
    expect(received).toEqual(['running']);
    const text = await readFile(logFile, 'utf8');
    expect(text).not.toContain('hunter2');
    const setAside = logLines(text, /^undecodable or invalid message set aside$/).filter(
      (line) => line.subject === subject,
    );
    expect(setAside.map((line) => line.seq)).toEqual(seqs);
    console.log(`poison: sweep events: ${POISON.length} poisoned events, ${setAside.length} set aside, 0 redeliveries`);
    console.log(`poison: sweep events: the next event delivered ${seconds.toFixed(2)} s after the first poison`);
  });
});
