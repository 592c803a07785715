#!/usr/bin/env node
// The dataset-splitter: DatasetSplitterService over gRPC. Only wiring here; the work is in
// server.ts. Environment and ports: README.md.
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
import { DatasetSplitterServiceService } from '@transferlab/proto';
import { splitterConfig } from './config.ts';
import { SERVICE_NAME, createServer } from './server.ts';

const log = createLogger('dataset-splitter');

try {
  // Metrics endpoint and trace export first: everything after is observed.
  const telemetry = await startTelemetry({ service: 'dataset-splitter' });
  const config = loadConfig(splitterConfig);
  const store = openStore();
  const bus = await openBus('dataset-splitter');
  const server = await startGrpcServer({
    services: [
      {
        name: SERVICE_NAME,
        definition: DatasetSplitterServiceService,
        implementation: createServer({ store, bus, log, dataRoot: config.dataRoot }),
      },
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
  log.error({ err: error }, 'the dataset-splitter could not start');
  process.exit(1);
}
