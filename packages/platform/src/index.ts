export * from './object-store.ts';
export { LocalFolderStore } from './local-folder-store.ts';
export { createLogger, type Logger } from './logger.ts';
export * from './bus.ts';
export * from './subjects.ts';
export { createInProcessBus, type InProcessBusOptions } from './in-process-bus.ts';
export * from './config.ts';
export * from './grpc/server.ts';
export * from './grpc/client.ts';
export * from './grpc/security.ts';
export * from './adapters.ts';
export { S3Store, ObjectIntegrityError, S3StoreError, s3StoreOptionsFromEnv, type S3StoreOptions } from './s3-store.ts';
export { connectNatsBus, type NatsBusOptions } from './nats-bus.ts';
export * from './telemetry-attributes.ts';
export * from './telemetry-context.ts';
export * from './telemetry-instruments.ts';
export { instrumentService, tracingInterceptor } from './telemetry-grpc.ts';
// The SDK itself (startTelemetry) is the subpath '@transferlab/platform/telemetry': only mains load it.
export * from './grpc/health-client.ts';
