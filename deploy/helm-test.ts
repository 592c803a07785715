// What `helm test` runs (charts/transferlab/templates/tests/check.yaml, in the controller image):
// every service answers its gRPC health check with SERVING, and one round trip each through NATS
// JetStream (a key written to, read from and deleted in a KV bucket) and the S3 store (an object
// put, read and deleted), with the same settings and credentials the services use.
//
//   TRANSFERLAB_CHECK_GRPC=controller=HOST:PORT,evaluator=HOST:PORT,... node --import tsx deploy/helm-test.ts
//
// TRANSFERLAB_CHECK_DEADLINE_SECONDS (default 120): how long each service may take to be SERVING.
// TLS (TRANSFERLAB_TLS_*), NATS and S3 come from the services' variables (TRANSFERLAB_NATS_URL, TRANSFERLAB_NATS_USER,
// TRANSFERLAB_NATS_PASSWORD, TRANSFERLAB_S3_*). Prints one line per check; exit code 1 when any
// fails. Messages name the check and the address, never a credential.
import { randomUUID } from 'node:crypto';
import { pathToFileURL } from 'node:url';
import { clientSecurityFromEnv, openBus, openStore, waitUntilServing } from '@transferlab/platform';

export interface CheckResult {
  check: string;
  ok: boolean;
  detail: string;
}

/** The KV bucket of the NATS round trip: the services never read it. */
export const CHECK_BUCKET = 'transferlab-helm-test';
/** Where the S3 round trip's object goes (under TRANSFERLAB_S3_PREFIX). */
export const CHECK_PREFIX = 'helm-test/';

/** `name=host:port,...` into pairs; fails naming the entry that is not one. */
export function parseTargets(text: string): [string, string][] {
  return text
    .split(',')
    .map((entry) => entry.trim())
    .filter((entry) => entry !== '')
    .map((entry) => {
      const match = /^([a-z0-9-]+)=(\S+:\d+)$/.exec(entry);
      if (!match) throw new Error(`TRANSFERLAB_CHECK_GRPC: '${entry}' is not name=host:port`);
      return [match[1]!, match[2]!];
    });
}

async function attempt(check: string, run: () => Promise<string>): Promise<CheckResult> {
  try {
    return { check, ok: true, detail: await run() };
  } catch (error) {
    return { check, ok: false, detail: (error as Error).message.split('\n')[0] ?? String(error) };
  }
}

const same = (a: Uint8Array, b: Uint8Array) => Buffer.from(a).equals(Buffer.from(b));

/** Runs every check; none throws, each reports. */
export async function checkInstall(options: {
  grpc: [string, string][];
  env?: NodeJS.ProcessEnv;
  /** How long each service may take to become SERVING. Default 120 s. */
  serviceDeadlineMs?: number;
}): Promise<CheckResult[]> {
  const env = options.env ?? process.env;
  // With TRANSFERLAB_TLS_CA_FILE (the chart's default) the checks speak TLS, presenting the release's certificate.
  const security = clientSecurityFromEnv(env);
  const results = await Promise.all(
    options.grpc.map(([name, address]) =>
      attempt(`${name} gRPC health`, async () => {
        await waitUntilServing(address, options.serviceDeadlineMs ?? 120_000, { security });
        return `${address} SERVING`;
      }),
    ),
  );

  results.push(
    await attempt('NATS JetStream round trip', async () => {
      if (!env.TRANSFERLAB_NATS_URL) throw new Error('TRANSFERLAB_NATS_URL is not set');
      const bus = await openBus('helm-test', env);
      try {
        const kv = await bus.kv(CHECK_BUCKET);
        const key = `check.${randomUUID()}`;
        const value = new TextEncoder().encode(`helm test ${new Date().toISOString()}`);
        await kv.put(key, value);
        const back = await kv.get(key);
        await kv.delete(key);
        if (!back || !same(back.value, value)) throw new Error(`KV ${CHECK_BUCKET}: read back something else`);
        return `KV ${CHECK_BUCKET} put, get, delete at ${env.TRANSFERLAB_NATS_URL}`;
      } finally {
        await bus.close();
      }
    }),
  );

  results.push(
    await attempt('S3 round trip', async () => {
      if (!env.TRANSFERLAB_S3_ENDPOINT) throw new Error('TRANSFERLAB_S3_ENDPOINT is not set');
      const store = openStore(env);
      const key = `${CHECK_PREFIX}${randomUUID()}`;
      const value = new TextEncoder().encode(`helm test ${new Date().toISOString()}`);
      await store.put(key, value);
      const back = await store.get(key);
      await store.delete(key);
      if (!same(back, value)) throw new Error(`${store.describe(key)}: read back something else`);
      if (await store.stat(key)) throw new Error(`${store.describe(key)}: still there after delete`);
      return `put, get, delete ${store.describe(key)}`;
    }),
  );
  return results;
}

async function main(): Promise<number> {
  const deadline = Number(process.env.TRANSFERLAB_CHECK_DEADLINE_SECONDS ?? 120);
  if (!Number.isFinite(deadline) || deadline <= 0)
    throw new Error('TRANSFERLAB_CHECK_DEADLINE_SECONDS must be a positive number');
  const results = await checkInstall({
    grpc: parseTargets(process.env.TRANSFERLAB_CHECK_GRPC ?? ''),
    serviceDeadlineMs: deadline * 1000,
  });
  for (const { check, ok, detail } of results) console.log(`${ok ? 'ok  ' : 'FAIL'} ${check}: ${detail}`);
  const failed = results.filter((result) => !result.ok).length;
  console.log(failed === 0 ? `helm test: all ${results.length} checks passed` : `helm test: ${failed} failed`);
  return failed === 0 ? 0 : 1;
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  process.exitCode = await main();
}
