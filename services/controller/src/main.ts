#!/usr/bin/env node
// The controller: the SweepService. Only wiring here; the sweep's logic is packages/runner's
// SweepController, the RPCs are server.ts, the cell steps are gRPC calls (steps-client.ts) and
// each cell's trainer is a child process (ProcessExecutor) or a Kubernetes Job (KubernetesExecutor).
import { resolve } from 'node:path';
import {
  SweepMetrics,
  apiTokenFromEnv,
  clientSecurityFromEnv,
  createLogger,
  loadConfig,
  onShutdownSignal,
  openBus,
  openStore,
  serverSecurityFromEnv,
  startGrpcServer,
} from '@transferlab/platform';
import { startTelemetry } from '@transferlab/platform/telemetry';
import {
  KubernetesExecutor,
  defaultKubeConfig,
  inClusterNamespace,
} from '@transferlab/runner/controller/kubernetes-executor';
import { ProcessExecutor } from '@transferlab/runner/controller/process-executor';
import { SweepController } from '@transferlab/runner/controller/sweep-controller';
import { controllerConfig, trainerJobSettings } from './config.ts';
import { jobOwnerReference } from './job-owner.ts';
import { SERVICE_NAME, createServer, sweepServiceRegistration } from './server.ts';
import { GrpcCellSteps } from './steps-client.ts';

const log = createLogger('controller');

async function main(): Promise<void> {
  // Metrics endpoint and trace export first: everything after is observed.
  const telemetry = await startTelemetry({ service: 'controller' });
  const config = loadConfig(controllerConfig);
  // TLS files and the API token are read now, so a bad one stops the start with its variable named.
  const serverSecurity = serverSecurityFromEnv();
  const apiToken = apiTokenFromEnv();
  const clientSecurity = clientSecurityFromEnv();
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
    credentials: clientSecurity.credentials,
    channelOptions: clientSecurity.options,
  });
  // Running trainers serve their metrics on the ports after the controller's (9464: 9465, 9466, ...).
  const metricsPort = telemetry.metricsPort;
  let jobSettings;
  if (config.executor === 'kubernetes') {
    jobSettings = trainerJobSettings(config, config.k8sNamespace ?? inClusterNamespace() ?? 'default');
    if (config.k8sJobOwner) {
      const owner = await jobOwnerReference(defaultKubeConfig(), jobSettings.namespace, config.k8sJobOwner);
      jobSettings.ownerReferences = [owner];
    }
  }
  const executor =
    jobSettings !== undefined
      ? new KubernetesExecutor({
          settings: jobSettings,
          pendingTimeoutMs: config.k8sPendingTimeoutSeconds * 1000,
          queueTimeoutMs: config.k8sQueueTimeoutSeconds * 1000,
          imagePullAttempts: config.k8sImagePullAttempts,
          onStatus: (cellId, status) => log.info({ cellId, ...status }, 'trainer status'),
          log: (message, fields) => log.info(fields ?? {}, message),
        })
      : new ProcessExecutor({
          maxProcesses: config.maxTrainers,
          metricsPorts: metricsPort ? Array.from({ length: config.maxTrainers }, (_, i) => metricsPort + 1 + i) : [],
          log: (message, fields) => log.info(fields ?? {}, message),
        });
  const controller = new SweepController({
    store,
    bus,
    steps,
    executor,
    log: (message, fields) => log.warn(fields ?? {}, message),
    metrics: new SweepMetrics(telemetry.meter),
    // Trainer Jobs outlive this process: the cap on them is kept in KV. Trainer processes are
    // capped by the ProcessExecutor itself.
    ...(executor instanceof KubernetesExecutor ? { trainerCap: config.maxTrainers } : {}),
  });
  const shutdown = new AbortController();
  const service = createServer({
    controller,
    store,
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
    security: serverSecurity,
    bearerToken: apiToken,
  });

  onShutdownSignal(async () => {
    server.health.setStatus(SERVICE_NAME, 'NOT_SERVING');
    server.health.setStatus('', 'NOT_SERVING');
    shutdown.abort(); // open WatchSweep streams end with UNAVAILABLE
    // Trainer Jobs run on (with their cell leases and trainer slots) for the next controller to
    // adopt; trainer processes checkpoint and stop. KV keeps every sweep for the next start.
    await controller.close({ detach: true });
    await server.shutdown();
    steps.close();
    await bus.close();
    await telemetry.shutdown();
  }, log);
}

try {
  await main();
} catch (error) {
  log.error({ err: error }, 'the controller could not start');
  process.exit(1);
}
