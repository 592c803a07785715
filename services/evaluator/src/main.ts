#!/usr/bin/env node
// The evaluator: EvaluatorService over gRPC.
// Only wiring here; the work is in server.ts. Environment and ports: README.md.
import {
  createLogger,
  loadConfig,
  onShutdownSignal,
  openBus,
  openStore,
  serverSecurityFromEnv,
  startGrpcServer,
} from '@transferlab/platform';
import { startTelemetry } from '@transferlab/platform/telemetry';
import { EvaluatorServiceService } from '@transferlab/proto';
import { evaluatorConfig } from './config.ts';
import { SERVICE_NAME, createServer } from './server.ts';

const log = createLogger('evaluator');

try {
  // Metrics endpoint and trace export first: everything after is observed.
  const telemetry = await startTelemetry({ service: 'evaluator' });
  const config = loadConfig(evaluatorConfig);
  const store = openStore();
  const bus = await openBus('evaluator');
  if (!process.env.TRANSFERLAB_NATS_URL)
    log.warn('TRANSFERLAB_NATS_URL is not set: evaluations are published in this process only');
  const server = await startGrpcServer({
    services: [
      { name: SERVICE_NAME, definition: EvaluatorServiceService, implementation: createServer({ store, bus, log }) },
    ],
    port: config.port,
    host: config.host,
    log,
    security: serverSecurityFromEnv(),
  });
  onShutdownSignal(async () => {
    await server.shutdown();
    await bus.close();
    await telemetry.shutdown();
  }, log);
} catch (error) {
  log.error({ err: error }, 'the evaluator could not start');
  process.exit(1);
}
