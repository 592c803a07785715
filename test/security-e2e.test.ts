// Issue 9, item 4, end to end: every service as its own process with mutual TLS between all of
// them (certificates made by openssl for this run), the sweep API behind a bearer token, and a
// real nats-server that requires a user and password (read by the services from a file). A call
// without the token starts nothing; a sweep from the CLI (TLS, a client certificate, the token
// from a file) runs to its end; then every line any process wrote (the four services, the
// trainers they ran, the CLI) is searched for the token, the NATS password, the S3 secret key and
// every line of every private key's base64 body, and none may be there.
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { S3Store, SWEEPS_BUCKET, connectNatsBus, openBus, s3StoreOptionsFromEnv } from '@transferlab/platform';
import { type TestCerts, makeTestCerts, pemBodyLines } from './support/certs.ts';
import { type ConfiguredNats, REPO, type RealServers, realServers, startConfiguredNats } from './support/servers.ts';
import { type Services, TINY_SPEC, startServices } from './support/services.ts';

const run = promisify(execFile);
const CLI = join(REPO, 'services/cli/bin/transferlab.js');
const NATS_USER = 'transferlab';
// Two cells (baseA, then AnB at n = 1): the splitter, the transplanter, a trainer per cell and the evaluator all serve.
const SPEC = TINY_SPEC.replace('name: e2e', 'name: secure')
  .replace('layers: [1, 3]', 'layers: [1]')
  .replace('arms: [baseA, baseB, AnB, BnB+]', 'arms: [baseA, AnB]');

interface CliRun {
  code: number;
  stdout: string;
  stderr: string;
}

describe('an end-to-end sweep with mutual TLS, the API token and NATS authentication', () => {
  let servers: RealServers;
  let nats: ConfiguredNats;
  let services: Services;
  let dir = '';
  let certs: TestCerts;
  const token = randomBytes(24).toString('base64url');
  // NATS reads the password from its config as a value: a letter first keeps it a string.
  const natsPassword = `p${randomBytes(18).toString('hex')}`;
  const cliOutput: string[] = [];

  const cli = async (args: string[], env: NodeJS.ProcessEnv = {}): Promise<CliRun> => {
    const result = await run(process.execPath, [CLI, ...args], {
      cwd: dir,
      env: { ...process.env, ...env },
      timeout: 120_000,
    }).then(
      ({ stdout, stderr }) => ({ code: 0, stdout, stderr }),
      (error: { code?: number; stdout?: string; stderr?: string }) => ({
        code: typeof error.code === 'number' ? error.code : -1,
        stdout: error.stdout ?? '',
        stderr: error.stderr ?? '',
      }),
    );
    cliOutput.push(result.stdout, result.stderr);
    return result;
  };
  const tls = () => ['--tls-ca', certs.caCert, '--tls-cert', certs.clientCert, '--tls-key', certs.clientKey];

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'tl-security-e2e-'));
    certs = await makeTestCerts(dir);
    await writeFile(join(dir, 'token'), `${token}\n`, { mode: 0o600 });
    await writeFile(join(dir, 'wrong-token'), `${token.slice(0, -2)}xx\n`, { mode: 0o600 });
    await writeFile(join(dir, 'nats-password'), `${natsPassword}\n`, { mode: 0o600 });
    await writeFile(join(dir, 'secure.yaml'), SPEC);
    servers = await realServers();
    nats = await startConfiguredNats(
      'jetstream { store_dir: "{{DIR}}/js" }\nauthorization { user: $TL_NATS_USER, password: $TL_NATS_PASSWORD }\n',
      { TL_NATS_USER: NATS_USER, TL_NATS_PASSWORD: natsPassword },
    );
    services = await startServices({
      servers: { env: { ...servers.env, TRANSFERLAB_NATS_URL: nats.url }, stop: async () => undefined },
      name: 'security',
      keepAllOutput: true,
      env: {
        TRANSFERLAB_LOG_LEVEL: 'debug',
        TRANSFERLAB_NATS_USER: NATS_USER,
        TRANSFERLAB_NATS_PASSWORD_FILE: join(dir, 'nats-password'),
        TRANSFERLAB_TLS_CERT_FILE: certs.serviceCert,
        TRANSFERLAB_TLS_KEY_FILE: certs.serviceKey,
        TRANSFERLAB_TLS_CLIENT_CA_FILE: certs.caCert,
        TRANSFERLAB_TLS_CA_FILE: certs.caCert,
        TRANSFERLAB_API_TOKEN_FILE: join(dir, 'token'),
      },
    });
  }, 240_000);

  afterAll(async () => {
    await services?.stop();
    await nats?.stop();
    await servers?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  }, 60_000);

  it('refuses a sweep without the token or with a wrong one, and starts nothing', async () => {
    const server = ['--server', services.controllerAddress];
    const missing = await cli(['sweep', 'start', '-f', 'secure.yaml', ...server, ...tls()]);
    expect(missing.code, missing.stderr).toBe(1);
    expect(missing.stderr).toMatch(/refused the call: .*no bearer token/);
    const wrong = await cli([
      'sweep',
      'start',
      '-f',
      'secure.yaml',
      ...server,
      ...tls(),
      '--token-file',
      'wrong-token',
    ]);
    expect(wrong.code, wrong.stderr).toBe(1);
    expect(wrong.stderr).toMatch(/refused the call: .*not the right one/);
    // No sweep and no cell in KV, no object in S3, no trainer process.
    const bus = await connectNatsBus({
      servers: nats.url,
      name: 'security-check',
      user: NATS_USER,
      pass: natsPassword,
    });
    try {
      expect(await (await bus.kv(SWEEPS_BUCKET)).keys()).toEqual([]);
    } finally {
      await bus.close();
    }
    const store = new S3Store(s3StoreOptionsFromEnv({ ...process.env, ...services.env }));
    expect(await store.list('')).toEqual([]);
    expect(services.allOutput().controller).not.toMatch(/trainer started/);
  }, 120_000);

  it('runs a sweep through every service over mutual TLS, with the token and NATS logins', async () => {
    const started = await cli(
      [
        'sweep',
        'start',
        '-f',
        'secure.yaml',
        '--server',
        services.controllerAddress,
        ...tls(),
        '--token-file',
        'token',
        '--watch',
        '--progress',
        'lines',
      ],
      {},
    );
    expect(started.code, `${started.stdout}\n${started.stderr}\n${services.logs()}`).toBe(0);
    const sweepId = /sweep ([a-z0-9-]+-[0-9a-f]{8})/.exec(started.stdout)?.[1];
    expect(sweepId, started.stdout).toBeDefined();
    // The token from the environment works as well as the file.
    const got = await cli(['sweep', 'get', sweepId!, '--server', services.controllerAddress, ...tls()], {
      TRANSFERLAB_API_TOKEN: token,
    });
    expect(got.code, got.stderr).toBe(0);
    expect(got.stdout).toMatch(/succeeded/);
    const store = new S3Store(s3StoreOptionsFromEnv({ ...process.env, ...services.env }));
    expect((await store.list('cells/')).filter((key) => key.endsWith('/result.json'))).toHaveLength(2);
  }, 180_000);

  it('fails loudly on a wrong NATS password, naming NATS and the server but not the password', async () => {
    const wrong = `w${randomBytes(8).toString('hex')}`;
    await writeFile(join(dir, 'wrong-nats-password'), `${wrong}\n`);
    const attempts: Array<[string, NodeJS.ProcessEnv]> = [
      ['the login in the URL', { TRANSFERLAB_NATS_URL: nats.url.replace('nats://', `nats://${NATS_USER}:${wrong}@`) }],
      [
        'TRANSFERLAB_NATS_PASSWORD',
        { TRANSFERLAB_NATS_URL: nats.url, TRANSFERLAB_NATS_USER: NATS_USER, TRANSFERLAB_NATS_PASSWORD: wrong },
      ],
      [
        'TRANSFERLAB_NATS_PASSWORD_FILE',
        {
          TRANSFERLAB_NATS_URL: nats.url,
          TRANSFERLAB_NATS_USER: NATS_USER,
          TRANSFERLAB_NATS_PASSWORD_FILE: join(dir, 'wrong-nats-password'),
        },
      ],
      ['no login', { TRANSFERLAB_NATS_URL: nats.url }],
    ];
    for (const [what, env] of attempts) {
      const error = await openBus('security-check', env).then(
        () => undefined,
        (caught: Error) => caught,
      );
      expect(error?.message, what).toMatch(/cannot connect to NATS at nats:\/\/127\.0\.0\.1:\d+: .*authori[sz]ation/i);
      expect(error?.message, what).not.toContain(wrong);
      cliOutput.push(error?.message ?? '');
    }
  }, 60_000);

  it('leaves no token, password or private key in any line any process wrote', async () => {
    await services.stop();
    const logs = { ...services.allOutput(), cli: cliOutput.join('\n') };
    const secrets: Array<[string, string]> = [
      ['the API token', token],
      ['the NATS password', natsPassword],
      ['the S3 secret key', services.env.TRANSFERLAB_S3_SECRET_KEY ?? ''],
    ];
    for (const file of certs.keyFiles) {
      for (const [index, line] of (await pemBodyLines(file)).entries()) {
        secrets.push([`line ${index + 1} of ${file.split('/').pop()}`, line]);
      }
    }
    const found: string[] = [];
    let lines = 0;
    for (const [source, text] of Object.entries(logs)) {
      for (const line of text.split('\n')) {
        lines++;
        for (const [what, secret] of secrets) {
          if (secret && line.includes(secret)) found.push(`${what} in the output of ${source}`);
        }
      }
    }
    // The logs hold what they should, so an empty search is not an empty log.
    expect(logs.controller).toMatch(/"tls":true/);
    expect(logs.controller).toMatch(/"mutualTls":true/);
    expect(logs.controller).toMatch(/"bearerToken":true/);
    expect(logs.controller).toMatch(/unauthenticated call refused/);
    expect(logs.cli).toMatch(/succeeded/);
    expect(secrets.length).toBeGreaterThan(10);
    console.log(`log search: ${lines} lines from ${Object.keys(logs).length} sources, ${secrets.length} secrets`);
    // To read what was searched: TRANSFERLAB_SECURITY_E2E_LOGS=FILE.
    if (process.env.TRANSFERLAB_SECURITY_E2E_LOGS) {
      await writeFile(process.env.TRANSFERLAB_SECURITY_E2E_LOGS, JSON.stringify(logs, null, 1));
    }
    expect(found).toEqual([]);
  }, 60_000);
});
