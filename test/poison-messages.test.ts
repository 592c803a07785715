// Issue 9, the fault suite: a poisoned NATS message (bytes that are not JSON, or JSON of the
// wrong shape) on a sweep-events subject is set aside at once (JetStream term), logged with its
// subject and sequence and without its payload, and the subscription keeps working. Real
// nats-server (one of its own), and an events subscription with the sweep watch's own
// validator (SweepController.watch, behind WatchSweep and the CLI). Figures on lines of their own (`poison:`).
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Bus, connectNatsBus, createLogger, sweepEventSubject } from '@transferlab/platform';
import { sweepEventOf } from '@transferlab/runner/controller/sweep-watch';
import { type OwnNats, logLines, ownNats, sleep } from './support/faults.ts';

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
  it('on a sweep-events subscription (WatchSweep, the CLI): set aside at once, later events delivered', async () => {
    const subject = sweepEventSubject('poison-events');
    const received: string[] = [];
    const subscription = await bus.subscribe(
      subject,
      (message) => {
        received.push(sweepEventOf(message).state);
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
