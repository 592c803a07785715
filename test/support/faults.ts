// What the fault tests share: a nats-server of their own (they stop and restart it, so never
// the one scripts/test.sh shares), child processes with their output kept, and the trained
// weights of a cell read from its checkpoint manifest (the test process loads no TensorFlow.js).
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { open, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { REPO, freePort } from './servers.ts';

const run = promisify(execFile);
export const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));
export const TSX = import.meta.resolve('tsx');

export interface OwnNats {
  url: string;
  /** The monitoring endpoint, e.g. for `/jsz?consumers=true`. */
  monitorUrl: string;
  dir: string;
  /** Stops exactly this server (scripts/nats-stop.sh); its JetStream store stays in `dir`. */
  stop(): Promise<void>;
  /** Starts it again on the same ports and store. */
  start(): Promise<void>;
}

/** A nats-server with JetStream under `dir`, through scripts/nats-start.sh. */
export async function ownNats(dir: string): Promise<OwnNats> {
  const port = await freePort();
  const monitor = await freePort();
  const start = async (): Promise<void> => {
    await run('bash', [join(REPO, 'scripts/nats-start.sh'), dir, String(port), String(monitor)]);
  };
  await start();
  return {
    url: `nats://127.0.0.1:${port}`,
    monitorUrl: `http://127.0.0.1:${monitor}`,
    dir,
    start,
    stop: async () => {
      await run('bash', [join(REPO, 'scripts/nats-stop.sh'), dir]);
    },
  };
}

export interface Child {
  child: ChildProcess;
  output: () => string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/** `node --import tsx SCRIPT ARGS` with its stdout and stderr kept (the last 200 KB). */
export function spawnTs(script: string, args: string[], env: Record<string, string>): Child {
  // Of the TRANSFERLAB_* settings, the child inherits only the backend; the rest come from the test.
  // scripts/test.sh exports the suite's shared servers (TRANSFERLAB_S3_*, TRANSFERLAB_NATS_URL), and
  // an inherited S3 endpoint would win over the test's own TRANSFERLAB_STORE.
  const inherited = Object.fromEntries(
    Object.entries(process.env).filter(([key]) => !key.startsWith('TRANSFERLAB_') || key === 'TRANSFERLAB_BACKEND'),
  );
  const child = spawn(process.execPath, ['--import', TSX, script, ...args], {
    cwd: REPO,
    env: { ...inherited, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  const keep = (chunk: Buffer): void => void (output = (output + chunk.toString()).slice(-200_000));
  child.stdout!.on('data', keep);
  child.stderr!.on('data', keep);
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once('exit', (code, signal) => resolve({ code, signal })),
  );
  return { child, output: () => output, exited };
}

/** The sha256 of a stored net's weights, as its checkpoint manifest records it (bit-exact compare). */
export async function weightsSha256(storeRoot: string, prefix: string): Promise<string> {
  const manifest = JSON.parse(await readFile(join(storeRoot, ...prefix.split('/'), 'manifest.json'), 'utf8')) as {
    objects: Array<{ role: string; sha256: string }>;
  };
  const weights = manifest.objects.find((object) => object.role === 'weights');
  if (!weights) throw new Error(`the checkpoint under ${prefix} names no weights`);
  return weights.sha256;
}

/** JSON log lines (pino) of a process's output whose `msg` matches. */
export function logLines(output: string, msg: RegExp): Array<Record<string, unknown>> {
  return output
    .split('\n')
    .filter((line) => line.startsWith('{'))
    .map((line) => {
      try {
        return JSON.parse(line) as Record<string, unknown>;
      } catch {
        return {};
      }
    })
    .filter((line) => typeof line.msg === 'string' && msg.test(line.msg));
}

export interface OwnRadosgw {
  /** TRANSFERLAB_S3_* for this gateway, as scripts/radosgw-start.sh prints them. */
  env: Record<string, string>;
  /** Stops the gateway (radosgw) alone: the S3 endpoint goes away, the monitor and OSD keep the objects. */
  stopGateway(): Promise<void>;
  /** Starts the gateway again, on the same port and cluster, and waits until it answers. */
  startGateway(): Promise<void>;
  /** Stops the whole cluster (scripts/radosgw-stop.sh). */
  stop(): Promise<void>;
}

/**
 * A Ceph cluster with its radosgw under `dir`, through scripts/radosgw-start.sh: a test's own S3
 * server, to stop and start while the suite's shared one stays up for the other tests.
 */
export async function ownRadosgw(dir: string): Promise<OwnRadosgw> {
  const port = await freePort();
  const { stdout } = await run('bash', [join(REPO, 'scripts/radosgw-start.sh'), dir, String(port)], {
    timeout: 180_000,
  });
  const env: Record<string, string> = {};
  for (const line of stdout.split('\n')) {
    const match = /^(TRANSFERLAB_S3_[A-Z0-9_]+)=(.*)$/.exec(line.trim());
    if (match) env[match[1]!] = match[2]!;
  }
  if (!env.TRANSFERLAB_S3_ENDPOINT) throw new Error(`radosgw under ${dir} printed no TRANSFERLAB_S3_ENDPOINT`);
  const pidFile = join(dir, 'pids', 'rgw.pid');
  // The gateway's own command line, as radosgw-start.sh launched it, to start it again alike.
  const gatewayPid = Number((await readFile(pidFile, 'utf8')).trim());
  const argv = (await readFile(`/proc/${gatewayPid}/cmdline`, 'utf8')).split('\0').filter((arg) => arg !== '');
  const answers = async (): Promise<boolean> =>
    fetch(`http://127.0.0.1:${port}/`)
      .then(() => true)
      .catch(() => false);
  return {
    env,
    stopGateway: async () => {
      const pid = Number((await readFile(pidFile, 'utf8')).trim());
      process.kill(pid, 'SIGTERM');
      const until = Date.now() + 10_000;
      while (Date.now() < until && (await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '')) !== '')
        await sleep(100);
      if (await answers()) throw new Error(`radosgw (PID ${pid}) still answers on port ${port} after SIGTERM`);
    },
    startGateway: async () => {
      const out = await open(join(dir, 'log', 'rgw.out'), 'a');
      const gateway = spawn(argv[0]!, argv.slice(1), { detached: true, stdio: ['ignore', out.fd, out.fd] });
      gateway.unref();
      await out.close();
      await writeFile(pidFile, `${gateway.pid}\n`);
      const until = Date.now() + 60_000;
      while (!(await answers())) {
        if (Date.now() > until) throw new Error(`radosgw under ${dir} did not answer on port ${port} within 60 s`);
        await sleep(200);
      }
    },
    stop: async () => {
      await run('bash', [join(REPO, 'scripts/radosgw-stop.sh'), dir]);
    },
  };
}
