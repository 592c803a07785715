/**
 * For tests (this package's and the CLI's): the SweepService on 127.0.0.1 with embedded
 * ports: a temporary local-folder store, the in-process bus, and worker processes that really
 * train (PoolPorts), wired to the same createServer as main.ts.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type Bus, LocalFolderStore, createInProcessBus, createLogger, startGrpcServer } from '@transferlab/platform';
import { PoolPorts } from '@transferlab/runner/controller/pool-ports';
import { SweepController } from '@transferlab/runner/controller/sweep-controller';
import { createServer, sweepServiceRegistration } from './server.ts';

export interface TestServer {
  address: string;
  storeRoot: string;
  store: LocalFolderStore;
  bus: Bus;
  controller: SweepController;
  close(): Promise<void>;
}

export async function startTestServer(options: { workers?: number } = {}): Promise<TestServer> {
  const storeRoot = await mkdtemp(join(tmpdir(), 'tl-controller-'));
  const store = new LocalFolderStore(storeRoot);
  const bus = createInProcessBus();
  const log = createLogger('controller-test', { level: process.env.TRANSFERLAB_LOG_LEVEL ?? 'silent' });
  const ports = new PoolPorts(store, { storeRoot, bus, workers: options.workers ?? 2 });
  const controller = new SweepController({ store, bus, steps: ports, executor: ports });
  const shutdown = new AbortController();
  const service = createServer({ controller, store, log, shutdown: shutdown.signal });
  const server = await startGrpcServer({ services: [sweepServiceRegistration(service)], port: 0, log });
  return {
    address: `127.0.0.1:${server.port}`,
    storeRoot,
    store,
    bus,
    controller,
    async close() {
      shutdown.abort();
      await controller.close();
      await server.shutdown(2000);
      await bus.close();
      await rm(storeRoot, { recursive: true, force: true });
    },
  };
}
