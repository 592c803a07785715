export * from './object-store.ts';
export { LocalFolderStore } from './local-folder-store.ts';
export { createLogger, type Logger } from './logger.ts';
export * from './bus.ts';
export * from './subjects.ts';
export { createInProcessBus, type InProcessBusOptions } from './in-process-bus.ts';
