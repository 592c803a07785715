// Every service as its own process on loopback, with a real nats-server and a real S3
// (Ceph radosgw): a tiny sweep from the CLI to its report, then a Python gRPC client.
import { execFile } from 'node:child_process';
import { mkdtemp, readdir, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  type BusMessage,
  S3Store,
  cellFinishedFilter,
  cellProgressFilter,
  connectNatsBus,
  s3StoreOptionsFromEnv,
} from '@transferlab/platform';
import { REPO, type RealServers, realServers } from './support/servers.ts';
import { type Services, TINY_SPEC as SPEC, startServices } from './support/services.ts';

const run = promisify(execFile);

describe('services end to end', () => {
  let servers: RealServers;
  let services: Services;
  const env: Record<string, string> = {};
  let controllerAddress = '';
  let work = '';

  beforeAll(async () => {
    servers = await realServers();
    work = await mkdtemp(join(tmpdir(), 'tl-e2e-'));
    services = await startServices({ servers, name: 'e2e' });
    Object.assign(env, services.env);
    controllerAddress = services.controllerAddress;
  }, 240_000);

  afterAll(async () => {
    await services?.stop();
    await servers?.stop();
  }, 60_000);

  it('runs a sweep from the CLI through every service, with results in S3 and progress on NATS', async () => {
    await writeFile(join(work, 'e2e.yaml'), SPEC);
    const cli = join(REPO, 'services/cli/bin/transferlab.js');
    const started = await run(
      process.execPath,
      [cli, 'sweep', 'start', '-f', 'e2e.yaml', '--server', controllerAddress, '--watch', '--progress', 'lines'],
      { cwd: work, env: { ...process.env, ...env }, timeout: 300_000 },
    ).catch((error: { stdout: string; stderr: string; message: string }) => {
      throw new Error(`${error.message}\n${error.stdout}\n${error.stderr}\n${services.logs()}`);
    });
    const sweepId = /sweep ([a-z0-9-]+-[0-9a-f]{8})/.exec(started.stdout)?.[1];
    expect(sweepId, started.stdout).toBeDefined();

    const report = await run(
      process.execPath,
      [cli, 'sweep', 'report', sweepId!, '-o', 'report', '--server', controllerAddress],
      {
        cwd: work,
        env: { ...process.env, ...env },
      },
    );
    expect(report.stderr).toBe('');
    const files = await readdir(join(work, 'report'));
    expect(files).toEqual(expect.arrayContaining(['index.html', 'figure2.svg']));

    // Every cell's trained net and result are in S3.
    const store = new S3Store(s3StoreOptionsFromEnv({ ...process.env, ...env }));
    const keys = await store.list('cells/');
    const results = keys.filter((key) => key.endsWith('/result.json'));
    const finals = keys.filter((key) => /\/final\/manifest\.json$/.test(key));
    expect(results).toHaveLength(6);
    expect(finals).toHaveLength(6);
    expect(keys.some((key) => /\/checkpoint\/manifest\.json$/.test(key))).toBe(true);

    // The trainers' progress and completions went through NATS JetStream.
    const bus = await connectNatsBus({ servers: env.TRANSFERLAB_NATS_URL!, name: 'e2e-observer' });
    try {
      const seen = (filter: string) =>
        new Promise<BusMessage[]>((resolve) => {
          const messages: BusMessage[] = [];
          void bus
            .subscribe(filter, (message) => void messages.push(message), { deliver: 'all' })
            .then(async (subscription) => {
              await new Promise((r) => setTimeout(r, 1500));
              await subscription.unsubscribe();
              resolve(messages);
            });
        });
      const progress = await seen(cellProgressFilter(sweepId!));
      const finished = await seen(cellFinishedFilter(sweepId!));
      expect(progress.length).toBeGreaterThan(6);
      expect(new Set(finished.map((message) => message.subject)).size).toBe(6);
    } finally {
      await bus.close();
    }
  }, 360_000);

  it('serves a client that is not ours: Python grpcio with stubs from the same protos', async () => {
    const stubs = join(work, 'py');
    await run('mkdir', ['-p', stubs]);
    await run('protoc', [
      '-I',
      join(REPO, 'proto'),
      '-I',
      '/usr/include',
      `--python_out=${stubs}`,
      `--grpc_out=${stubs}`,
      '--plugin=protoc-gen-grpc=/usr/bin/grpc_python_plugin',
      ...(await readdir(join(REPO, 'proto/transferlab/v1'))).map((file) => join(REPO, 'proto/transferlab/v1', file)),
    ]);
    // Base cells are reused from the first test (same ids); the n = 2 cells are new and train.
    await writeFile(
      join(work, 'py-e2e.yaml'),
      SPEC.replace('name: e2e', 'name: py-e2e').replace('layers: [1, 3]', 'layers: [2]'),
    );
    await writeFile(join(work, 'bad.yaml'), SPEC.replace('learningRate', 'x').replace('maxEpochs: 1', 'maxEpochs: -1'));
    const { stdout } = await run(
      '/usr/bin/python3',
      [
        join(REPO, 'test/python-client/client.py'),
        stubs,
        controllerAddress,
        join(work, 'py-e2e.yaml'),
        join(work, 'bad.yaml'),
        join(work, 'py-report'),
      ],
      { timeout: 300_000 },
    );
    const seen = JSON.parse(stdout) as {
      bad_spec: { code: string; details: string };
      unknown: { code: string; details: string };
      sweep: { final_state: string; watched: Record<string, number>; report_files: string[]; cells: number };
    };
    expect(seen.bad_spec.code).toBe('INVALID_ARGUMENT');
    expect(seen.bad_spec.details).toMatch(/training\.maxEpochs/);
    expect(seen.unknown.code).toBe('NOT_FOUND');
    expect(seen.sweep.cells).toBe(4);
    expect(seen.sweep.final_state).toBe('SWEEP_STATE_SUCCEEDED');
    expect(seen.sweep.watched.snapshot).toBe(1);
    expect(seen.sweep.watched.progress ?? 0).toBeGreaterThan(0);
    expect((seen.sweep.watched.cell ?? 0) + (seen.sweep.watched.sweep ?? 0)).toBeGreaterThan(4);
    expect(seen.sweep.report_files).toEqual(expect.arrayContaining(['index.html', 'figure2.svg']));
  }, 360_000);
});
