// The real servers a cross-service test needs. scripts/test.sh starts them once and exports
// their addresses; a test run on its own starts its own through the same scripts.
import { execFile, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const run = promisify(execFile);
export const REPO = fileURLToPath(new URL('../..', import.meta.url));

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => resolve(typeof address === 'object' && address ? address.port : 0));
    });
  });
}

function parseEnv(text: string): Record<string, string> {
  const env: Record<string, string> = {};
  for (const line of text.split('\n')) {
    const match = /^(TRANSFERLAB_[A-Z0-9_]+)=(.*)$/.exec(line.trim());
    if (match) env[match[1]!] = match[2]!;
  }
  return env;
}

export interface RealServers {
  env: Record<string, string>;
  stop(): Promise<void>;
}

/** nats-server with JetStream and a Ceph radosgw: reused from the environment, or started here. */
export async function realServers(): Promise<RealServers> {
  const env: Record<string, string> = {};
  const stops: Array<() => Promise<unknown>> = [];
  if (process.env.TRANSFERLAB_NATS_URL) {
    env.TRANSFERLAB_NATS_URL = process.env.TRANSFERLAB_NATS_URL;
  } else {
    const dir = await mkdtemp(join(tmpdir(), 'tl-nats-'));
    const { stdout } = await run('bash', [
      join(REPO, 'scripts/nats-start.sh'),
      dir,
      String(await freePort()),
      String(await freePort()),
    ]);
    Object.assign(env, parseEnv(stdout));
    stops.push(() => run('bash', [join(REPO, 'scripts/nats-stop.sh'), dir]));
  }
  if (process.env.TRANSFERLAB_S3_ENDPOINT) {
    for (const [key, value] of Object.entries(process.env)) {
      if (key.startsWith('TRANSFERLAB_S3_') && value) env[key] = value;
    }
  } else {
    const dir = await mkdtemp(join(tmpdir(), 'tl-rgw-'));
    const { stdout } = await run('bash', [join(REPO, 'scripts/radosgw-start.sh'), dir, String(await freePort())], {
      timeout: 180_000,
    });
    Object.assign(env, parseEnv(stdout));
    stops.push(() => run('bash', [join(REPO, 'scripts/radosgw-stop.sh'), dir]));
  }
  if (!env.TRANSFERLAB_NATS_URL || !env.TRANSFERLAB_S3_ENDPOINT) {
    throw new Error(`real servers did not come up: got ${Object.keys(env).join(', ') || 'nothing'}`);
  }
  return {
    env,
    stop: async () => {
      for (const stop of stops) await stop().catch(() => undefined);
    },
  };
}

export interface ConfiguredNats {
  url: string;
  stop(): Promise<void>;
}

/**
 * A nats-server started from a configuration file's text (e.g. the Helm chart's rendered
 * nats.conf), listening on loopback ports of its own, with `env` in its environment (config
 * variables such as `$TRANSFERLAB_NATS_PASSWORD` resolve from it). `{{DIR}}` in the text is
 * replaced by a fresh folder for its store and PID file. Resolves once JetStream is healthy.
 */
export async function startConfiguredNats(config: string, env: Record<string, string>): Promise<ConfiguredNats> {
  const binary = ['/usr/sbin/nats-server', '/usr/bin/nats-server', '/usr/local/bin/nats-server'].find((path) =>
    existsSync(path),
  );
  if (!binary) throw new Error('nats-server is not installed (scripts/nats-start.sh installs it): cannot start NATS');
  const dir = await mkdtemp(join(tmpdir(), 'tl-nats-config-'));
  const file = join(dir, 'nats.conf');
  await writeFile(file, config.replaceAll('{{DIR}}', dir));
  const port = await freePort();
  const monitor = await freePort();
  const server = spawn(binary, ['-c', file, '-a', '127.0.0.1', '-p', String(port), '-m', String(monitor)], {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let log = '';
  server.stderr.on('data', (chunk: Buffer) => (log = (log + chunk.toString()).slice(-4000)));
  const stop = async () => {
    if (server.exitCode === null) {
      server.kill('SIGTERM');
      await new Promise((resolve) => server.once('exit', resolve));
    }
    await rm(dir, { recursive: true, force: true });
  };
  const until = Date.now() + 20_000;
  for (;;) {
    const healthy = await fetch(`http://127.0.0.1:${monitor}/healthz?js-enabled-only=true`)
      .then((response) => response.ok)
      .catch(() => false);
    if (healthy) return { url: `nats://127.0.0.1:${port}`, stop };
    if (server.exitCode !== null || Date.now() > until) {
      await stop();
      throw new Error(`nats-server from ${file} did not become healthy: ${log}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}
