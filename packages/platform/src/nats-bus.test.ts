import { execFile } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { connect } from 'nats';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Bus, BusMessage } from './bus.ts';
import { describeBusContract, sleep, waitFor } from './bus.contract.ts';
import { connectNatsBus } from './nats-bus.ts';

/**
 * Runs against a real nats-server: the one TRANSFERLAB_NATS_URL names (the test script starts
 * it), else one this file starts and stops through scripts/nats-start.sh / nats-stop.sh.
 * Never skipped: when no server can run, the suite fails.
 */
const run = promisify(execFile);
const scripts = resolve(import.meta.dirname, '../../../scripts');

interface StartedServer {
  dir: string;
  url: string;
  port: number;
  monitorPort: number;
}

async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((done) => server.listen(0, '127.0.0.1', done));
  const { port } = server.address() as { port: number };
  await new Promise((done) => server.close(done));
  return port;
}

async function startServer(dir?: string, ports?: { port: number; monitorPort: number }): Promise<StartedServer> {
  const folder = dir ?? (await mkdtemp(join(tmpdir(), 'tl-nats-')));
  const port = ports?.port ?? (await freePort());
  const monitorPort = ports?.monitorPort ?? (await freePort());
  try {
    const { stdout } = await run('bash', [join(scripts, 'nats-start.sh'), folder, String(port), String(monitorPort)]);
    const url = /^TRANSFERLAB_NATS_URL=(\S+)$/m.exec(stdout)?.[1];
    if (!url) throw new Error(`nats-start.sh printed no TRANSFERLAB_NATS_URL: ${stdout}`);
    return { dir: folder, url, port, monitorPort };
  } catch (error) {
    const stderr = (error as { stderr?: string }).stderr ?? '';
    throw new Error(`could not start nats-server for the bus tests (${(error as Error).message}) ${stderr}`, {
      cause: error,
    });
  }
}

async function stopServer(server: StartedServer): Promise<void> {
  await run('bash', [join(scripts, 'nats-stop.sh'), server.dir]);
}

let url = process.env.TRANSFERLAB_NATS_URL ?? '';
let ownServer: StartedServer | undefined;

beforeAll(async () => {
  if (url) return;
  ownServer = await startServer();
  url = ownServer.url;
});

afterAll(async () => {
  if (!ownServer) {
    await removeTestLeftovers(url);
    return;
  }
  await stopServer(ownServer);
  await rm(ownServer.dir, { recursive: true, force: true });
});

/** On a shared server, removes the streams and durables these tests created (all named test-...). */
async function removeTestLeftovers(servers: string): Promise<void> {
  const nc = await connect({ servers });
  try {
    const jsm = await nc.jetstreamManager();
    for (const info of await jsm.streams.list().next()) {
      const name = info.config.name;
      if (name.startsWith('KV_test-')) await jsm.streams.delete(name);
    }
    for (const info of await jsm.consumers.list('TRANSFERLAB_EVENTS').next()) {
      if (info.name.startsWith('test-')) await jsm.consumers.delete('TRANSFERLAB_EVENTS', info.name);
    }
  } finally {
    await nc.close();
  }
}

describeBusContract('NATS JetStream', () => connectNatsBus({ servers: url, name: 'bus-contract-test' }));

describe('NATS bus', () => {
  const nameOf = (prefix: string) => `${prefix}-${Math.random().toString(36).slice(2, 10)}`;

  it('keeps KV state and durable positions on the server: a restarted controller carries on', async () => {
    const bucket = nameOf('test-sweeps');
    const durable = nameOf('test-controller');
    const root = `transferlab.test.${nameOf('restart').replace('-', '')}`;
    const seen: number[] = [];
    const handler = (msg: BusMessage): void => void seen.push(msg.json<{ n: number }>().n);

    const before = await connectNatsBus({ servers: url, name: 'controller-before' });
    const kv = await before.kv(bucket, { history: 3 });
    const revision = await kv.putJson('sweep.s1', { state: 'running', finished: 1 });
    await before.subscribe(`${root}.>`, handler, { durable, deliver: 'all' });
    await before.publish(`${root}.finished`, { n: 1 });
    await waitFor(() => seen.length === 1, 'the first event');
    await before.close();

    // While no controller runs, trainers go on publishing.
    const trainer = await connectNatsBus({ servers: url, name: 'trainer' });
    await trainer.publish(`${root}.finished`, { n: 2 });
    await trainer.publish(`${root}.finished`, { n: 3 });
    await trainer.close();

    const after = await connectNatsBus({ servers: url, name: 'controller-after' });
    try {
      const state = await after.kv(bucket);
      expect(await state.getJson('sweep.s1')).toEqual({ value: { state: 'running', finished: 1 }, revision });
      await state.updateJson('sweep.s1', { state: 'running', finished: 3 }, revision);
      expect((await state.history('sweep.s1')).length).toBe(2);
      await after.subscribe(`${root}.>`, handler, { durable });
      await waitFor(() => seen.length === 3, 'the events published while away');
      await sleep(100);
      expect(seen).toEqual([1, 2, 3]);
    } finally {
      await after.close();
    }
  });

  it('reconnects after the server restarts, and finds the store intact', async () => {
    // Its own server, so restarting it disturbs no other test.
    const server = await startServer();
    const warnings: string[] = [];
    let bus: Bus | undefined;
    try {
      bus = await connectNatsBus({
        servers: server.url,
        name: 'reconnect-test',
        reconnectTimeWaitMs: 50,
        reconnectJitterMs: 50,
        requestTimeoutMs: 1000,
        logger: { warn: (_fields, message) => void warnings.push(message) },
      });
      const kv = await bus.kv('test-restart');
      await kv.putJson('sweep.s1', { state: 'running' });
      const seen: number[] = [];
      await bus.subscribe('transferlab.test.restart.>', (msg) => void seen.push(msg.json<{ n: number }>().n), {
        durable: 'test-restart',
      });

      await stopServer(server);
      await waitFor(() => warnings.includes('NATS connection: disconnect'), 'the disconnect');
      // Published while the server is down: retried (with one dedupe id) until acknowledged.
      const during = bus.publish('transferlab.test.restart.a', { n: 1 });
      await startServer(server.dir, server);
      await during;
      await waitFor(() => warnings.includes('NATS connection: reconnect'), 'the reconnect', 10_000);
      expect((await kv.getJson('sweep.s1'))?.value).toEqual({ state: 'running' });
      await bus.publish('transferlab.test.restart.a', { n: 2 });
      await waitFor(() => seen.length === 2, 'the events published around the restart', 10_000);
      await sleep(100);
      expect(seen).toEqual([1, 2]);
    } finally {
      await bus?.close();
      await stopServer(server);
      await rm(server.dir, { recursive: true, force: true });
    }
  });

  it('keeps a KV call going through an outage within its bound, and past it names the call and the time tried', async () => {
    const server = await startServer();
    let bus: Bus | undefined;
    try {
      bus = await connectNatsBus({
        servers: server.url,
        name: 'outage-bound-test',
        reconnectTimeWaitMs: 50,
        reconnectJitterMs: 50,
        requestTimeoutMs: 300,
        outageBoundMs: 1500,
      });
      const kv = await bus.kv('test-outage');
      await kv.putJson('sweep.s1', { state: 'running' });

      await stopServer(server);
      // Past the bound: a loud error that says what was tried, for how long.
      const started = Date.now();
      const error = await kv.getJson('sweep.s1').then(
        () => undefined,
        (caught: unknown) => caught as Error,
      );
      expect(error).toBeInstanceOf(Error);
      expect(error!.message).toMatch(/^kv test-outage: get 'sweep\.s1' \(\d+ attempts over \d+\.\d s\): /);
      expect(Date.now() - started).toBeGreaterThanOrEqual(1400);

      // Within the bound: the call started while the server is down returns once it is back.
      const during = kv.getJson('sweep.s1');
      await sleep(300);
      await startServer(server.dir, server);
      expect((await during)?.value).toEqual({ state: 'running' });
    } finally {
      await bus?.close();
      await stopServer(server);
      await rm(server.dir, { recursive: true, force: true });
    }
  });

  it('fails at once, naming the server, when nothing listens', async () => {
    const port = await freePort();
    await expect(connectNatsBus({ servers: `nats://127.0.0.1:${port}`, name: 'nobody' })).rejects.toThrow(
      `cannot connect to NATS at nats://127.0.0.1:${port}`,
    );
  });
});
