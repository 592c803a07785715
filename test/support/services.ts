// Every service as its own process on loopback, wired to real servers (support/servers.ts):
// what the cross-service tests start. The controller runs trainers as child processes.
import { type ChildProcess, spawn } from 'node:child_process';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { clientSecurityFromEnv, waitUntilServing } from '@transferlab/platform';
import { REPO, type RealServers, freePort } from './servers.ts';

const tsx = import.meta.resolve('tsx');

/** A sweep small enough for a test: MNIST, 6 cells of one epoch on 20 images per class. */
export const TINY_SPEC = `
name: e2e
dataset: { kind: mnist }
split: { kind: random, trainPerClass: 20, valPerClass: 5, testPerClass: 5 }
net: { kind: small, width: 0.25 }
training: { batchSize: 16, maxEpochs: 1, patience: 1, augment: false, scoreTopK: 1 }
layers: [1, 3]
arms: [baseA, baseB, AnB, BnB+]
repeats: 1
concurrency: 2
`;

export const SERVICES = ['dataset-splitter', 'transplanter', 'evaluator', 'controller'] as const;
export type ServiceName = (typeof SERVICES)[number];

export interface ServicesOptions {
  servers: RealServers;
  /** Prefixes the S3 keys of this run (TRANSFERLAB_S3_PREFIX), so runs never share objects. */
  name: string;
  /** Trainer processes the controller runs at once. Default 2. */
  maxTrainers?: number;
  /**
   * Serve Prometheus metrics: each service on a port of its own, and each running trainer on
   * one of the ports right after the controller's. Default off (TRANSFERLAB_METRICS_PORT=off).
   */
  metrics?: boolean;
  /** More environment for every service (and so for the trainers the controller starts). */
  env?: Record<string, string>;
  /** Keep every byte each service writes (allOutput), not only the last 20 KB. Default off. */
  keepAllOutput?: boolean;
  /** The services to start; default all. The addresses in `env` name every one. */
  only?: readonly ServiceName[];
}

export interface Services {
  /** The environment a client (the CLI) needs: the servers and the services' addresses. */
  env: Record<string, string>;
  controllerAddress: string;
  ports: Record<ServiceName, number>;
  /** With metrics: Prometheus targets as SERVICE=HOST:PORT, the trainers' ports included. */
  metricsTargets: string[];
  /** The last output of each service, for an error message. */
  logs(): string;
  /** With keepAllOutput: everything each service (and the trainers it ran) wrote, by service. */
  allOutput(): Record<ServiceName, string>;
  /** SIGTERM to every service, then waits for each to exit. */
  stop(): Promise<void>;
}

/** Waits until the gRPC health service at `address` reports SERVING. */
export const healthy = waitUntilServing;

async function portIsFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = createServer();
    server.once('error', () => resolve(false));
    server.listen(port, '127.0.0.1', () => server.close(() => resolve(true)));
  });
}

/** `count` consecutive free ports on loopback. */
async function freePortRun(count: number): Promise<number> {
  for (let tries = 0; tries < 50; tries++) {
    const first = await freePort();
    if (first + count > 65535) continue;
    let free = true;
    for (let port = first + 1; port < first + count && free; port++) free = await portIsFree(port);
    if (free) return first;
  }
  throw new Error(`no ${count} consecutive free ports found on 127.0.0.1`);
}

export async function startServices(options: ServicesOptions): Promise<Services> {
  const maxTrainers = options.maxTrainers ?? 2;
  const ports = Object.fromEntries(await Promise.all(SERVICES.map(async (name) => [name, await freePort()]))) as Record<
    ServiceName,
    number
  >;
  const env: Record<string, string> = {
    ...options.servers.env,
    TRANSFERLAB_S3_PREFIX: `${options.name}-${process.pid}-${Date.now()}`,
    TRANSFERLAB_SPLITTER_ADDR: `127.0.0.1:${ports['dataset-splitter']}`,
    TRANSFERLAB_TRANSPLANTER_ADDR: `127.0.0.1:${ports.transplanter}`,
    TRANSFERLAB_EVALUATOR_ADDR: `127.0.0.1:${ports.evaluator}`,
    TRANSFERLAB_MAX_TRAINERS: String(maxTrainers),
    TRANSFERLAB_LOG_LEVEL: 'warn',
    ...options.env,
  };
  const metricsPorts: Partial<Record<ServiceName, number>> = {};
  const metricsTargets: string[] = [];
  if (options.metrics) {
    for (const name of SERVICES) {
      // The controller's running trainers take the ports after its own.
      metricsPorts[name] = name === 'controller' ? await freePortRun(1 + maxTrainers) : await freePort();
      metricsTargets.push(`${name}=127.0.0.1:${metricsPorts[name]}`);
    }
    for (let i = 1; i <= maxTrainers; i++) metricsTargets.push(`trainer=127.0.0.1:${metricsPorts.controller! + i}`);
  }

  const processes: ChildProcess[] = [];
  const output = new Map<string, string>();
  const everything = Object.fromEntries(SERVICES.map((name) => [name, ''])) as Record<ServiceName, string>;
  const logs = (): string => [...output].map(([name, text]) => `--- ${name}\n${text}`).join('\n');
  const stop = async (): Promise<void> => {
    for (const child of processes) child.kill('SIGTERM');
    await Promise.all(
      processes.map(
        (child) => new Promise((resolve) => (child.exitCode !== null ? resolve(null) : child.once('exit', resolve))),
      ),
    );
  };
  const started = options.only ?? SERVICES;
  for (const name of started) {
    const child = spawn(process.execPath, ['--import', tsx, join(REPO, 'services', name, 'src', 'main.ts')], {
      env: {
        ...process.env,
        ...env,
        TRANSFERLAB_PORT: String(ports[name]),
        TRANSFERLAB_METRICS_PORT: metricsPorts[name]?.toString() ?? 'off',
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    output.set(name, '');
    const keep = (chunk: Buffer): void => {
      output.set(name, (output.get(name)! + chunk.toString()).slice(-20_000));
      if (options.keepAllOutput) everything[name] += chunk.toString();
    };
    child.stdout!.on('data', keep);
    child.stderr!.on('data', keep);
    processes.push(child);
  }
  try {
    // With TRANSFERLAB_TLS_* in env the services speak TLS, and the check does too.
    const security = clientSecurityFromEnv({ ...process.env, ...env });
    await Promise.all(started.map((name) => healthy(`127.0.0.1:${ports[name]}`, 60_000, { security })));
  } catch (error) {
    await stop();
    throw new Error(`${(error as Error).message}\n${logs()}`);
  }
  return {
    env,
    controllerAddress: `127.0.0.1:${ports.controller}`,
    ports,
    metricsTargets,
    logs,
    allOutput: () => ({ ...everything }),
    stop,
  };
}
