import { randomBytes } from 'node:crypto';
import { afterEach, describe, expect, it } from 'vitest';
import { type Bus, type BusMessage, type KvEntry, RevisionMismatchError } from './bus.ts';

/**
 * The behaviour every bus adapter must have. Each adapter's test file calls this with a
 * factory for a connected bus. Buses may share a server with other tests, so every test uses
 * its own subjects, durable names and buckets.
 */
export function describeBusContract(name: string, makeBus: () => Promise<Bus>): void {
  describe(`Bus contract: ${name}`, () => {
    const opened: Bus[] = [];
    const newBus = async (): Promise<Bus> => {
      const bus = await makeBus();
      opened.push(bus);
      return bus;
    };
    afterEach(async () => {
      await Promise.all(opened.splice(0).map((bus) => bus.close()));
    });

    describe('events', () => {
      it('publishes and subscribes JSON and bytes, in order, with increasing sequence numbers', async () => {
        const bus = await newBus();
        const root = testSubject();
        const got: BusMessage[] = [];
        await bus.subscribe(`${root}.>`, (msg) => void got.push(msg));
        await bus.publish(`${root}.json`, { cell: 'AnB+ n=3', top1: 0.5 });
        await bus.publish(`${root}.bytes.raw`, new Uint8Array([0, 1, 255]));
        await waitFor(() => got.length === 2, 'two messages');
        expect(got.map((m) => m.subject)).toEqual([`${root}.json`, `${root}.bytes.raw`]);
        expect(got[0]!.json()).toEqual({ cell: 'AnB+ n=3', top1: 0.5 });
        expect(got[1]!.data).toEqual(new Uint8Array([0, 1, 255]));
        expect(got[1]!.seq).toBeGreaterThan(got[0]!.seq);
        expect(got[0]!.deliveryCount).toBe(1);
        expect(got[0]!.redelivered).toBe(false);
        expect(() => got[1]!.json()).toThrow(new RegExp(`${root}.bytes.raw`));
      });

      it('matches * as one token and > as the rest', async () => {
        const bus = await newBus();
        const root = testSubject();
        const star: string[] = [];
        const rest: string[] = [];
        await bus.subscribe(`${root}.progress.*`, (msg) => void star.push(msg.subject));
        await bus.subscribe(`${root}.progress.>`, (msg) => void rest.push(msg.subject));
        for (const tail of ['progress.s1', 'progress.s1.c1', 'finished.s1']) await bus.publish(`${root}.${tail}`, {});
        await waitFor(() => rest.length === 2 && star.length === 1, 'the matching messages');
        await sleep(50);
        expect(star).toEqual([`${root}.progress.s1`]);
        expect(rest).toEqual([`${root}.progress.s1`, `${root}.progress.s1.c1`]);
      });

      it('round-trips headers such as traceparent', async () => {
        const bus = await newBus();
        const root = testSubject();
        const got: BusMessage[] = [];
        await bus.subscribe(`${root}.>`, (msg) => void got.push(msg));
        const traceparent = '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01';
        await bus.publish(`${root}.a`, { n: 1 }, { headers: { traceparent, 'x-cell-id': 'c1' }, msgId: `${root}-id` });
        await bus.publish(`${root}.b`, { n: 2 });
        await waitFor(() => got.length === 2, 'two messages');
        // Transport headers (the dedupe id) stay out of sight.
        expect(got[0]!.headers).toEqual({ traceparent, 'x-cell-id': 'c1' });
        expect(got[1]!.headers).toEqual({});
      });

      it('refuses reserved or malformed headers', async () => {
        const bus = await newBus();
        const subject = `${testSubject()}.a`;
        await expect(bus.publish(subject, {}, { headers: { 'Nats-Msg-Id': 'x' } })).rejects.toThrow(/reserved/);
        await expect(bus.publish(subject, {}, { headers: { 'bad name': 'x' } })).rejects.toThrow(/header name/);
        await expect(bus.publish(subject, {}, { headers: { a: 'x\r\ny: z' } })).rejects.toThrow(/line breaks/);
      });

      it("delivers what the stream holds with deliver 'all', only later messages with 'new' (the default)", async () => {
        const bus = await newBus();
        const root = testSubject();
        await bus.publish(`${root}.a`, { n: 1 });
        await bus.publish(`${root}.a`, { n: 2 });
        const all: number[] = [];
        const fresh: number[] = [];
        await bus.subscribe(`${root}.>`, (msg) => void all.push(msg.json<{ n: number }>().n), { deliver: 'all' });
        await bus.subscribe(`${root}.>`, (msg) => void fresh.push(msg.json<{ n: number }>().n));
        await bus.publish(`${root}.a`, { n: 3 });
        await waitFor(() => all.length === 3 && fresh.length === 1, 'all three and the new one');
        await sleep(50);
        expect(all).toEqual([1, 2, 3]);
        expect(fresh).toEqual([3]);
      });

      it('stores a message once when it is published twice with the same msgId', async () => {
        const bus = await newBus();
        const root = testSubject();
        const got: number[] = [];
        await bus.subscribe(`${root}.>`, (msg) => void got.push(msg.json<{ n: number }>().n));
        const first = await bus.publish(`${root}.done`, { n: 1 }, { msgId: `${root}-done` });
        const again = await bus.publish(`${root}.done`, { n: 1 }, { msgId: `${root}-done` });
        await bus.publish(`${root}.done`, { n: 2 }, { msgId: `${root}-other` });
        expect(first.duplicate).toBe(false);
        expect(again).toEqual({ seq: first.seq, duplicate: true });
        await waitFor(() => got.length === 2, 'two messages');
        await sleep(50);
        expect(got).toEqual([1, 2]);
      });

      it('resumes a durable subscription after the last acknowledged message', async () => {
        const bus = await newBus();
        const root = testSubject();
        const durable = testName();
        const seen: number[] = [];
        const handler = (msg: BusMessage): void => void seen.push(msg.json<{ n: number }>().n);
        let sub = await bus.subscribe(`${root}.>`, handler, { durable, deliver: 'all' });
        for (const n of [1, 2, 3]) await bus.publish(`${root}.e`, { n });
        await waitFor(() => seen.length === 3, 'the first three');
        await sub.unsubscribe();
        for (const n of [4, 5]) await bus.publish(`${root}.e`, { n });
        await sleep(50);
        expect(seen).toEqual([1, 2, 3]);
        sub = await bus.subscribe(`${root}.>`, handler, { durable, deliver: 'all' });
        await waitFor(() => seen.length === 5, 'the two published while away');
        await sleep(100);
        expect(seen).toEqual([1, 2, 3, 4, 5]);
        await sub.unsubscribe();
        // A durable keeps its filter.
        await expect(bus.subscribe(`${root}.other`, handler, { durable })).rejects.toThrow(new RegExp(durable));
      });

      it('redelivers an event whose handler threw, marked as redelivered', async () => {
        const bus = await newBus();
        const root = testSubject();
        const deliveries: string[] = [];
        await bus.subscribe(
          `${root}.>`,
          (msg) => {
            const { n } = msg.json<{ n: number }>();
            deliveries.push(`${n}#${msg.deliveryCount}${msg.redelivered ? 'r' : ''}`);
            if (n === 2 && msg.deliveryCount === 1) throw new Error('transient');
          },
          { durable: testName(), retryDelayMs: 20 },
        );
        for (const n of [1, 2, 3]) await bus.publish(`${root}.e`, { n });
        await waitFor(() => deliveries.includes('2#2r'), 'the redelivery');
        await waitFor(() => deliveries.includes('3#1'), 'the last message');
        await sleep(100);
        expect([...deliveries].sort()).toEqual(['1#1', '2#1', '2#2r', '3#1']);
      });

      it('refuses subjects no stream captures and malformed subjects, naming them', async () => {
        const bus = await newBus();
        await expect(bus.publish('elsewhere.cell.progress', {})).rejects.toThrow(/elsewhere\.cell\.progress/);
        await expect(bus.publish('transferlab.cell.*', {})).rejects.toThrow(/invalid subject/);
        await expect(bus.publish('transferlab..x', {})).rejects.toThrow(/invalid subject/);
        await expect(bus.subscribe('transferlab.>.x', () => undefined)).rejects.toThrow(/invalid subject filter/);
        await expect(bus.subscribe('elsewhere.>', () => undefined)).rejects.toThrow(/outside stream/);
        await expect(bus.publish(`${testSubject()}.x`, undefined)).rejects.toThrow(/JSON/);
      });
    });

    describe('key-value', () => {
      it('puts, gets and updates with compare-and-set, naming the key and revisions on a conflict', async () => {
        const bus = await newBus();
        const kv = await bus.kv(testName());
        expect(await kv.get('sweep.s1')).toBeUndefined();
        const r1 = await kv.putJson('sweep.s1', { state: 'running' });
        expect(await kv.getJson('sweep.s1')).toEqual({ value: { state: 'running' }, revision: r1 });
        const r2 = await kv.updateJson('sweep.s1', { state: 'done' }, r1);
        expect(r2).toBeGreaterThan(r1);
        const stale = kv.updateJson('sweep.s1', { state: 'failed' }, r1);
        await expect(stale).rejects.toBeInstanceOf(RevisionMismatchError);
        await expect(stale).rejects.toThrow(
          `cannot update key 'sweep.s1': expected revision ${r1}, found revision ${r2}`,
        );
        const error = (await stale.catch((e: unknown) => e)) as RevisionMismatchError;
        expect([error.bucket, error.key, error.expectedRevision, error.actualRevision]).toEqual([
          kv.bucket,
          'sweep.s1',
          r1,
          r2,
        ]);
        expect((await kv.getJson('sweep.s1'))?.value).toEqual({ state: 'done' });
        const bytes = new Uint8Array([9, 8, 7]);
        const r3 = await kv.put('cell.s1.c1', bytes);
        expect(await kv.get('cell.s1.c1')).toEqual({ value: bytes, revision: r3 });
        expect(r3).toBeGreaterThan(r2);
      });

      it('creates a key only when it is absent (or was deleted)', async () => {
        const bus = await newBus();
        const kv = await bus.kv(testName());
        const r1 = await kv.createJson('sweep.s1', { owner: 'a' });
        const second = kv.createJson('sweep.s1', { owner: 'b' });
        await expect(second).rejects.toBeInstanceOf(RevisionMismatchError);
        await expect(second).rejects.toThrow(`cannot create key 'sweep.s1': it already exists (at revision ${r1})`);
        expect((await kv.getJson('sweep.s1'))?.value).toEqual({ owner: 'a' });
        await kv.delete('sweep.s1');
        expect(await kv.get('sweep.s1')).toBeUndefined();
        await kv.createJson('sweep.s1', { owner: 'c' });
        expect((await kv.getJson('sweep.s1'))?.value).toEqual({ owner: 'c' });
        // update with expected revision 0 is create's compare-and-set for a never-written key.
        await kv.updateJson('sweep.s2', { owner: 'd' }, 0);
        await expect(kv.updateJson('sweep.s2', { owner: 'e' }, 0)).rejects.toBeInstanceOf(RevisionMismatchError);
      });

      it('lists the keys holding a value by string prefix, sorted', async () => {
        const bus = await newBus();
        const kv = await bus.kv(testName());
        for (const key of ['sweep.s1', 'cell.s1.b', 'cell.s1.a', 'cell.s10.a', 'cell.s2.a', 'cell.s1.gone']) {
          await kv.putJson(key, {});
        }
        await kv.delete('cell.s1.gone');
        await kv.delete('never.written');
        expect(await kv.keys('cell.s1.')).toEqual(['cell.s1.a', 'cell.s1.b']);
        expect(await kv.keys('cell.s1')).toEqual(['cell.s1.a', 'cell.s1.b', 'cell.s10.a']);
        expect(await kv.keys('sweep.')).toEqual(['sweep.s1']);
        expect(await kv.keys()).toEqual(['cell.s1.a', 'cell.s1.b', 'cell.s10.a', 'cell.s2.a', 'sweep.s1']);
        expect(await kv.keys('nothing.')).toEqual([]);
      });

      it('watches: the latest entries first (resolving after them), then changes, by prefix', async () => {
        const bus = await newBus();
        const kv = await bus.kv(testName());
        await kv.putJson('cell.s1.a', { v: 1 });
        await kv.putJson('cell.s1.b', { v: 1 });
        await kv.putJson('cell.s2.a', { v: 1 });
        await kv.putJson('cell.s1.a', { v: 2 });
        await kv.putJson('cell.s1.gone', { v: 1 });
        await kv.delete('cell.s1.gone');
        const seen: string[] = [];
        const watch = await kv.watch({ prefix: 'cell.s1.' }, (entry) => void seen.push(describeEntry(entry)));
        expect(seen).toEqual(['put cell.s1.b {"v":1}', 'put cell.s1.a {"v":2}', 'delete cell.s1.gone']);
        await kv.putJson('cell.s2.b', { v: 1 });
        await kv.putJson('cell.s1.c', { v: 1 });
        await kv.delete('cell.s1.b');
        await waitFor(() => seen.length === 5, 'the two changes');
        await sleep(50);
        expect(seen.slice(3)).toEqual(['put cell.s1.c {"v":1}', 'delete cell.s1.b']);
        await watch.unsubscribe();
        await kv.putJson('cell.s1.d', { v: 1 });
        await sleep(50);
        expect(seen).toHaveLength(5);
      });

      it('watches with history, or only updates', async () => {
        const bus = await newBus();
        const kv = await bus.kv(testName(), { history: 5 });
        await kv.putJson('sweep.a', 1);
        await kv.putJson('sweep.a', 2);
        await kv.putJson('sweep.b', 1);
        const history: string[] = [];
        const updates: string[] = [];
        await kv.watch({ includeHistory: true }, (entry) => void history.push(describeEntry(entry)));
        await kv.watch({ updatesOnly: true }, (entry) => void updates.push(describeEntry(entry)));
        expect(history).toEqual(['put sweep.a 1', 'put sweep.a 2', 'put sweep.b 1']);
        expect(updates).toEqual([]);
        await kv.putJson('sweep.b', 2);
        await waitFor(() => updates.length === 1 && history.length === 4, 'the update');
        expect(updates).toEqual(['put sweep.b 2']);
      });

      it('keeps the configured history per key, deletes included', async () => {
        const bus = await newBus();
        const kv = await bus.kv(testName(), { history: 2 });
        for (const v of [1, 2, 3]) await kv.putJson('sweep.a', v);
        expect((await kv.history('sweep.a')).map(describeEntry)).toEqual(['put sweep.a 2', 'put sweep.a 3']);
        await kv.delete('sweep.a');
        expect((await kv.history('sweep.a')).map(describeEntry)).toEqual(['put sweep.a 3', 'delete sweep.a']);
        expect(await kv.history('never.written')).toEqual([]);
      });

      it('keeps one bucket per name: a second handle sees the same state', async () => {
        const bus = await newBus();
        const name = testName();
        await (await bus.kv(name)).putJson('sweep.a', { v: 1 });
        expect((await (await bus.kv(name)).getJson('sweep.a'))?.value).toEqual({ v: 1 });
        expect(await (await bus.kv(testName())).get('sweep.a')).toBeUndefined();
      });

      it('refuses invalid keys, prefixes and bucket names', async () => {
        const bus = await newBus();
        const kv = await bus.kv(testName());
        for (const key of ['has space', '.lead', 'trail.', 'a..b', 'star*', '']) {
          await expect(kv.put(key, new Uint8Array([1]))).rejects.toThrow(/invalid key/);
        }
        await expect(kv.keys('a*')).rejects.toThrow(/invalid key prefix/);
        await expect(bus.kv('has.dot')).rejects.toThrow(/invalid bucket name/);
        await expect(bus.kv(testName(), { history: 65 })).rejects.toThrow(/history/);
      });
    });

    it('refuses work after close, and closes twice without error', async () => {
      const bus = await makeBus();
      const kv = await bus.kv(testName());
      await bus.subscribe(`${testSubject()}.>`, () => undefined);
      await bus.close();
      await bus.close();
      await expect(bus.publish(`${testSubject()}.a`, {})).rejects.toThrow(/closed/);
      await expect(kv.get('sweep.a')).rejects.toThrow(/closed/);
    });
  });
}

/** A fresh subject root under the events stream. */
function testSubject(): string {
  return `transferlab.test.${randomBytes(5).toString('hex')}`;
}

/** A fresh name valid for durables and buckets. */
function testName(): string {
  return `test-${randomBytes(5).toString('hex')}`;
}

function describeEntry(entry: KvEntry): string {
  return entry.operation === 'put' ? `put ${entry.key} ${JSON.stringify(entry.json())}` : `delete ${entry.key}`;
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

export async function waitFor(condition: () => boolean, what: string, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(5);
  }
}
