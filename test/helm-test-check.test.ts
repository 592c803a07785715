// The `helm test` hook's checks (deploy/helm-test.ts) against real servers: two gRPC servers with
// the standard health service, a nats-server with JetStream that requires the login the chart
// configures (the user and password read from the server's environment, as the bundled NATS is
// set up in values.yaml), and the real S3 server (radosgw) the test script starts.
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type GrpcServer, createLogger, openStore, startGrpcServer } from '@transferlab/platform';
import { CHECK_PREFIX, checkInstall, parseTargets } from '../deploy/helm-test.ts';
import {
  type ConfiguredNats,
  REPO,
  type RealServers,
  freePort,
  realServers,
  startConfiguredNats,
} from './support/servers.ts';

const run = promisify(execFile);
const USER = 'transferlab';
const PASSWORD = 'Zq7x0helmtestpassword';

let servers: RealServers;
let grpcServers: GrpcServer[] = [];
let nats: ConfiguredNats | undefined;
let env: NodeJS.ProcessEnv;

beforeAll(async () => {
  servers = await realServers();
  // An authorization block that reads the login from the server's environment, as the chart's does.
  nats = await startConfiguredNats(
    'jetstream { store_dir: "{{DIR}}/js" }\n' +
      'authorization { user: $TRANSFERLAB_NATS_USER, password: $TRANSFERLAB_NATS_PASSWORD }\n',
    { TRANSFERLAB_NATS_USER: USER, TRANSFERLAB_NATS_PASSWORD: PASSWORD },
  );
  const log = createLogger('helm-test-check');
  grpcServers = [
    await startGrpcServer({ services: [], port: 0, log }),
    await startGrpcServer({ services: [], port: 0, log }),
  ];
  env = {
    ...Object.fromEntries(Object.entries(servers.env).filter(([key]) => key.startsWith('TRANSFERLAB_S3_'))),
    TRANSFERLAB_NATS_URL: nats.url,
    TRANSFERLAB_NATS_USER: USER,
    TRANSFERLAB_NATS_PASSWORD: PASSWORD,
  };
}, 240_000);

afterAll(async () => {
  for (const server of grpcServers) await server.shutdown(1000);
  await nats?.stop();
  await servers?.stop();
});

const targets = (): [string, string][] =>
  grpcServers.map((server, index) => [`service-${index}`, `127.0.0.1:${server.port}`]);

describe('the helm test checks', () => {
  it('pass against serving services, a NATS that requires the login, and S3, and leave nothing behind', async () => {
    const results = await checkInstall({ grpc: targets(), env, serviceDeadlineMs: 5000 });
    expect(results.map((r) => r.check)).toEqual([
      'service-0 gRPC health',
      'service-1 gRPC health',
      'NATS JetStream round trip',
      'S3 round trip',
    ]);
    for (const result of results) expect(result.ok, `${result.check}: ${result.detail}`).toBe(true);
    expect(await openStore(env).list(CHECK_PREFIX)).toEqual([]);
  });

  it('fail, naming what and where, without echoing a credential', async () => {
    const closed = await freePort();
    const results = await checkInstall({
      grpc: [['evaluator', `127.0.0.1:${closed}`]],
      env: { ...env, TRANSFERLAB_NATS_PASSWORD: 'wrong-password', TRANSFERLAB_S3_SECRET_KEY: 'wrong-secret' },
      serviceDeadlineMs: 1000,
    });
    const failed = Object.fromEntries(results.map((r) => [r.check, r]));
    expect(failed['evaluator gRPC health']).toMatchObject({ ok: false });
    expect(failed['evaluator gRPC health']!.detail).toContain(`127.0.0.1:${closed} is not SERVING`);
    expect(failed['NATS JetStream round trip']).toMatchObject({ ok: false });
    expect(failed['NATS JetStream round trip']!.detail).toMatch(/authori[sz]ation|AUTHORIZATION/i);
    expect(failed['S3 round trip']).toMatchObject({ ok: false });
    const text = JSON.stringify(results);
    for (const secret of ['wrong-password', 'wrong-secret', PASSWORD]) expect(text).not.toContain(secret);
  }, 60_000);

  it('run as the hook runs them: exit code 0 when all pass, 1 naming the failure otherwise', async () => {
    const script = join(REPO, 'deploy/helm-test.ts');
    const good = await run('node', ['--import', 'tsx', script], {
      cwd: REPO,
      env: {
        ...process.env,
        ...env,
        TRANSFERLAB_CHECK_GRPC: targets()
          .map(([n, a]) => `${n}=${a}`)
          .join(','),
      },
    });
    expect(good.stdout).toContain('helm test: all 4 checks passed');
    const closed = await freePort();
    const bad = await run('node', ['--import', 'tsx', script], {
      cwd: REPO,
      env: {
        ...process.env,
        ...env,
        TRANSFERLAB_CHECK_GRPC: `controller=127.0.0.1:${closed}`,
        TRANSFERLAB_CHECK_DEADLINE_SECONDS: '2',
      },
      timeout: 120_000,
    }).then(
      () => ({ code: 0, stdout: '' }),
      (error: { code?: number; stdout?: string }) => ({ code: error.code, stdout: error.stdout ?? '' }),
    );
    expect(bad.code).toBe(1);
    expect(bad.stdout).toMatch(/FAIL controller gRPC health: 127\.0\.0\.1:\d+ is not SERVING/);
    expect(bad.stdout).toContain('helm test: 1 failed');
  }, 180_000);

  it('read their targets as name=host:port and refuse anything else', () => {
    expect(parseTargets('controller=a:1, evaluator=b.c:2,')).toEqual([
      ['controller', 'a:1'],
      ['evaluator', 'b.c:2'],
    ]);
    expect(() => parseTargets('controller=a')).toThrow(/'controller=a' is not name=host:port/);
  });
});
