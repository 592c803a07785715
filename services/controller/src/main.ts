#!/usr/bin/env node
// The controller: the SweepService. Only wiring here; the sweep's logic is packages/runner's
// SweepController, the RPCs are server.ts, the cell steps are gRPC calls (steps-client.ts) and
// each cell's trainer is a child process (ProcessExecutor).
import { resolve } from 'node:path';
import { createLogger, loadConfig, onShutdownSignal, openBus, openStore, startGrpcServer } from '@transferlab/platform';
import { ProcessExecutor } from '@transferlab/runner/controller/process-executor';
import { SweepController } from '@transferlab/runner/controller/sweep-controller';
import { controllerConfig } from './config.ts';
import { SERVICE_NAME, createServer, sweepServiceRegistration } from './server.ts';
import { GrpcCellSteps } from './steps-client.ts';

const log = createLogger('controller');

async function main(): Promise<void> {
  const config = loadConfig(controllerConfig);
  const store = openStore();
  const bus = await openBus('controller');
  if (!process.env.TRANSFERLAB_NATS_URL) {
    log.warn('TRANSFERLAB_NATS_URL is not set: trainer processes cannot reach an in-process bus');
  }
  const steps = new GrpcCellSteps({
    splitterAddress: config.splitterAddr,
    transplanterAddress: config.transplanterAddr,
    evaluatorAddress: config.evaluatorAddr,
    store,
  });
  const executor = new ProcessExecutor({
    maxProcesses: config.maxTrainers,
    log: (message, fields) => log.info(fields ?? {}, message),
  });
  const controller = new SweepController({
    store,
    bus,
    steps,
    executor,
    log: (message, fields) => log.warn(fields ?? {}, message),
  });
  const shutdown = new AbortController();
  const service = createServer({
    controller,
    store,
    bus,
    log,
    dataDir: resolve(config.dataRoot ?? '.'),
    maxAttempts: config.maxAttempts,
    maxConcurrency: config.maxTrainers,
    shutdown: shutdown.signal,
  });
  // A restarted controller carries on: every sweep KV holds as unfinished is driven again.
  const resumed = await controller.resume();
  if (resumed.length > 0) log.info({ sweepIds: resumed }, 'resumed unfinished sweeps');
  const server = await startGrpcServer({
    services: [sweepServiceRegistration(service)],
    port: config.port,
    host: config.host,
    log,
  });

  onShutdownSignal(async () => {
    server.health.setStatus(SERVICE_NAME, 'NOT_SERVING');
    server.health.setStatus('', 'NOT_SERVING');
    shutdown.abort(); // open WatchSweep streams end with UNAVAILABLE
    await controller.close(); // trainers checkpoint and stop; KV keeps every sweep for the next start
    await server.shutdown();
    steps.close();
    await bus.close();
  }, log);
}

try {
  await main();
} catch (error) {
  log.error({ err: error }, 'the controller could not start');
  process.exit(1);
}
