// Issue 9, item 4: TLS, mutual TLS and the sweep API's bearer token, on the real SweepService
// (createServer + startGrpcServer, as the controller's main.ts wires them) over loopback, with
// certificates made by openssl for this run. The cell steps and the executor are FAKES that only
// count calls: what matters is whether anything starts, and a refused call must start nothing.
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  CLIENT_OPTIONS,
  type GrpcServer,
  LocalFolderStore,
  SWEEPS_BUCKET,
  apiTokenFromEnv,
  bearerMetadata,
  callUnary,
  clientSecurityFromEnv,
  createInProcessBus,
  createLogger,
  healthStatus,
  serverSecurityFromEnv,
  startGrpcServer,
} from '@transferlab/platform';
import { SweepServiceClient } from '@transferlab/proto';
import type { CellSteps, Executor } from '@transferlab/runner/controller/ports';
import { SweepController } from '@transferlab/runner/controller/sweep-controller';
import { createServer, sweepServiceRegistration } from '../services/controller/src/server.ts';
import { type TestCerts, makeTestCerts } from './support/certs.ts';
import { TINY_SPEC } from './support/services.ts';

const TOKEN = 'tok-3f9c1e7a5b2d4c6e8f0a1b2c3d4e5f60';

describe('gRPC TLS, mutual TLS and the bearer token', () => {
  let dir = '';
  let certs: TestCerts;
  let store: LocalFolderStore;
  const bus = createInProcessBus();
  /** FAKE steps and executor: they count what would have started, and refuse it. */
  const started: string[] = [];
  const refuse = async (what: string): Promise<never> => {
    started.push(what);
    throw new Error('this test runs no cell work');
  };
  const steps: CellSteps = {
    createSplit: () => refuse('split'),
    transplant: () => refuse('transplant'),
    evaluate: () => refuse('evaluate'),
    measure: () => refuse('measure'),
  };
  const executor: Executor = { run: () => refuse('trainer'), close: async () => undefined };
  let controller: SweepController;
  let server: GrpcServer;
  let address = '';
  const shutdown = new AbortController();

  const serverEnv = () => ({
    TRANSFERLAB_TLS_CERT_FILE: certs.serviceCert,
    TRANSFERLAB_TLS_KEY_FILE: certs.serviceKey,
    TRANSFERLAB_TLS_CLIENT_CA_FILE: certs.caCert,
    TRANSFERLAB_HEALTH_PORT: '0',
  });
  const clientEnv = (extra: Record<string, string> = {}) => ({
    TRANSFERLAB_TLS_CA_FILE: certs.caCert,
    TRANSFERLAB_TLS_CERT_FILE: certs.clientCert,
    TRANSFERLAB_TLS_KEY_FILE: certs.clientKey,
    ...extra,
  });
  const client = (env: NodeJS.ProcessEnv): SweepServiceClient => {
    const security = clientSecurityFromEnv(env);
    return new SweepServiceClient(address, security.credentials, { ...CLIENT_OPTIONS, ...security.options });
  };
  const start = (sweepClient: SweepServiceClient, metadata?: grpc.Metadata) =>
    callUnary(
      sweepClient.startSweep.bind(sweepClient),
      { specSource: { $case: 'specText', value: TINY_SPEC }, specFile: 'tiny.yaml', validateOnly: false },
      { deadlineMs: 10_000, ...(metadata ? { metadata } : {}) },
    );
  const sweepKeys = async () => (await bus.kv(SWEEPS_BUCKET)).keys();

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'tl-grpc-security-'));
    certs = await makeTestCerts(dir);
    store = new LocalFolderStore(join(dir, 'store'));
    const log = createLogger('grpc-security-test', { level: 'silent' });
    controller = new SweepController({ store, bus, steps, executor });
    const service = createServer({ controller, store, log, shutdown: shutdown.signal });
    server = await startGrpcServer({
      services: [sweepServiceRegistration(service)],
      port: 0,
      log,
      security: serverSecurityFromEnv(serverEnv()),
      bearerToken: TOKEN,
    });
    address = `127.0.0.1:${server.port}`;
  }, 60_000);

  afterAll(async () => {
    shutdown.abort();
    await controller?.close();
    await server?.shutdown(1000);
    await bus.close();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('answers UNAUTHENTICATED without the token, or with a wrong one, and starts nothing', async () => {
    const sweeps = client(clientEnv());
    try {
      const cases: Array<[string, grpc.Metadata | undefined]> = [
        ['no token', undefined],
        ['wrong token', bearerMetadata(`${TOKEN}x`)],
        ['a prefix of the token', bearerMetadata(TOKEN.slice(0, 10))],
        ['another scheme', basic()],
      ];
      for (const [what, metadata] of cases) {
        const error = await start(sweeps, metadata).then(
          () => undefined,
          (caught: grpc.ServiceError) => caught,
        );
        expect(error?.code, what).toBe(grpc.status.UNAUTHENTICATED);
        expect(error?.details, what).not.toContain(TOKEN.slice(4));
      }
      // The other RPCs are guarded too, the streaming one included.
      await expect(
        callUnary(sweeps.listSweeps.bind(sweeps), { pageSize: 0, pageToken: '', states: [] }),
      ).rejects.toMatchObject({ code: grpc.status.UNAUTHENTICATED });
      const watch = sweeps.watchSweep({ sweepId: 'e2e-00000000' }, new grpc.Metadata(), {
        deadline: Date.now() + 10_000,
      });
      const watchError = await new Promise<grpc.ServiceError>((resolve) => {
        watch.on('error', resolve);
        watch.on('data', () => undefined);
      });
      expect(watchError.code).toBe(grpc.status.UNAUTHENTICATED);

      // Nothing started: no sweep or cell in KV, no object in the store, no step, no trainer.
      expect(await sweepKeys()).toEqual([]);
      expect(await store.list('')).toEqual([]);
      expect(started).toEqual([]);

      // The right token starts the sweep (so the checks above can fail), and lists it.
      const response = await start(sweeps, bearerMetadata(TOKEN));
      const sweepId = response.sweep?.id ?? '';
      expect(sweepId).toMatch(/^e2e-[0-9a-f]{8}$/);
      const keys = await sweepKeys();
      expect(keys).toContain(`sweep.${sweepId}`);
      expect(keys.some((key) => key.startsWith(`cell.${sweepId}.`))).toBe(true);
      const listed = await callUnary(
        sweeps.listSweeps.bind(sweeps),
        { pageSize: 0, pageToken: '', states: [] },
        { metadata: bearerMetadata(TOKEN) },
      );
      expect(listed.sweeps.map((sweep) => sweep.id)).toEqual([sweepId]);
      await callUnary(
        sweeps.cancelSweep.bind(sweeps),
        { sweepId, reason: 'test over' },
        { metadata: bearerMetadata(TOKEN) },
      );
    } finally {
      sweeps.close();
    }
  });

  it('refuses plaintext, an unknown CA and a client without a certificate; health stays open', async () => {
    const metadata = () => bearerMetadata(TOKEN);
    const list = async (env: NodeJS.ProcessEnv) => {
      const sweeps = client(env);
      try {
        return await callUnary(
          sweeps.listSweeps.bind(sweeps),
          { pageSize: 0, pageToken: '', states: [] },
          { metadata: metadata(), deadlineMs: 5000 },
        );
      } finally {
        sweeps.close();
      }
    };
    await expect(list({})).rejects.toMatchObject({ code: grpc.status.UNAVAILABLE });
    // A client that trusts another CA refuses the server's certificate.
    await expect(list(clientEnv({ TRANSFERLAB_TLS_CA_FILE: certs.otherCaCert }))).rejects.toMatchObject({
      code: grpc.status.UNAVAILABLE,
    });
    // Mutual TLS: no client certificate, or one from another CA, is refused in the handshake.
    await expect(list({ TRANSFERLAB_TLS_CA_FILE: certs.caCert })).rejects.toMatchObject({
      code: grpc.status.UNAVAILABLE,
    });
    await expect(
      list(
        clientEnv({ TRANSFERLAB_TLS_CERT_FILE: certs.otherClientCert, TRANSFERLAB_TLS_KEY_FILE: certs.otherClientKey }),
      ),
    ).rejects.toMatchObject({ code: grpc.status.UNAVAILABLE });
    // The right CA and a client certificate of it: served (the services' own certificate also works as a client's).
    expect((await list(clientEnv())).sweeps.length).toBeGreaterThanOrEqual(0);
    await expect(
      list(clientEnv({ TRANSFERLAB_TLS_CERT_FILE: certs.serviceCert, TRANSFERLAB_TLS_KEY_FILE: certs.serviceKey })),
    ).resolves.toBeDefined();
    // A name override: the certificate says localhost and 127.0.0.1, not this.
    await expect(list(clientEnv({ TRANSFERLAB_TLS_SERVER_NAME: 'elsewhere.example' }))).rejects.toMatchObject({
      code: grpc.status.UNAVAILABLE,
    });
    await expect(list(clientEnv({ TRANSFERLAB_TLS_SERVER_NAME: 'localhost' }))).resolves.toBeDefined();

    // Health: over mutual TLS without a token, and on the plaintext health-only port.
    expect(await healthStatus(address, '', { security: clientSecurityFromEnv(clientEnv()) })).toBe('SERVING');
    expect(server.healthPort).toBeGreaterThan(0);
    expect(await healthStatus(`127.0.0.1:${server.healthPort}`)).toBe('SERVING');
    expect(await healthStatus(address)).toMatch(/^DOWN/);
  });

  it('fails at start naming the variable and the file, never the content', async () => {
    const notPem = join(dir, 'not-a-cert.pem');
    await writeFile(notPem, 'db_password: hunter2\n');
    const problems: Array<[NodeJS.ProcessEnv, RegExp]> = [
      [{ TRANSFERLAB_TLS_CERT_FILE: certs.serviceCert }, /TRANSFERLAB_TLS_CERT_FILE and TRANSFERLAB_TLS_KEY_FILE/],
      [
        { TRANSFERLAB_TLS_CERT_FILE: notPem, TRANSFERLAB_TLS_KEY_FILE: certs.serviceKey },
        /TRANSFERLAB_TLS_CERT_FILE: .*not-a-cert\.pem does not hold a PEM certificate/,
      ],
      [
        { TRANSFERLAB_TLS_CERT_FILE: certs.serviceCert, TRANSFERLAB_TLS_KEY_FILE: notPem },
        /TRANSFERLAB_TLS_KEY_FILE: .*not-a-cert\.pem does not hold a PEM private key/,
      ],
      [
        { ...serverEnv(), TRANSFERLAB_TLS_CLIENT_CA_FILE: join(dir, 'missing.crt') },
        /TRANSFERLAB_TLS_CLIENT_CA_FILE: cannot read .*missing\.crt \(ENOENT\)/,
      ],
      [{ TRANSFERLAB_TLS_CLIENT_CA_FILE: certs.caCert }, /mutual TLS is TLS/],
      [{ ...serverEnv(), TRANSFERLAB_HEALTH_PORT: 'grpc' }, /TRANSFERLAB_HEALTH_PORT: must be a port number/],
    ];
    for (const [env, message] of problems) {
      let error: Error | undefined;
      try {
        serverSecurityFromEnv(env);
      } catch (caught) {
        error = caught as Error;
      }
      expect(error?.message, JSON.stringify(env)).toMatch(message);
      expect(error?.message).not.toContain('hunter2');
    }
    expect(() => clientSecurityFromEnv({ TRANSFERLAB_TLS_CA_FILE: notPem })).toThrow(
      /TRANSFERLAB_TLS_CA_FILE: .*does not hold a PEM certificate/,
    );

    const tokenFile = join(dir, 'token');
    await writeFile(tokenFile, `${TOKEN}\n`);
    expect(apiTokenFromEnv({ TRANSFERLAB_API_TOKEN_FILE: tokenFile })).toBe(TOKEN);
    expect(apiTokenFromEnv({ TRANSFERLAB_API_TOKEN: TOKEN })).toBe(TOKEN);
    expect(apiTokenFromEnv({})).toBeUndefined();
    expect(() => apiTokenFromEnv({ TRANSFERLAB_API_TOKEN: TOKEN, TRANSFERLAB_API_TOKEN_FILE: tokenFile })).toThrow(
      /set one, not both/,
    );
    await writeFile(tokenFile, 'two words\n');
    expect(() => apiTokenFromEnv({ TRANSFERLAB_API_TOKEN_FILE: tokenFile })).toThrow(/must hold one token/);
  });
});

function basic(): grpc.Metadata {
  const metadata = new grpc.Metadata();
  metadata.set('authorization', `Basic ${Buffer.from(`user:${TOKEN}`).toString('base64')}`);
  return metadata;
}
