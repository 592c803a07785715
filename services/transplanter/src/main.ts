#!/usr/bin/env node
// The transplanter: TransplanterService over gRPC. Only wiring here; the work is in server.ts.
// Environment and ports: README.md.
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
import { TransplanterServiceService } from '@transferlab/proto';
import { transplanterConfig } from './config.ts';
import { SERVICE_NAME, createServer } from './server.ts';

const log = createLogger('transplanter');

try {
  // Metrics endpoint and trace export first: everything after is observed.
  const telemetry = await startTelemetry({ service: 'transplanter' });
  const config = loadConfig(transplanterConfig);
  const store = openStore();
  const bus = await openBus('transplanter');
  const server = await startGrpcServer({
    services: [
      { name: SERVICE_NAME, definition: TransplanterServiceService, implementation: createServer({ store, bus, log }) },
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
  log.error({ err: error }, 'the transplanter could not start');
  process.exit(1);
}
